"""Ansible connection to a systemd test host (a local podman container) through nsenter.

Test harness only. `podman exec` costs 0.2-2.5 s per call on the test machines (it takes podman's
locks and reads its database each time) and Ansible makes three or four calls per task, which
made connecting most of a converge run's time. This plugin runs each command with `nsenter` in
the container's mount, PID, network, IPC and UTS namespaces instead (milliseconds) and supports
pipelining (one call per task). Commands see a clean environment, as under `podman exec`, not the
controller's. The container's PID comes from `podman container inspect` once and is kept in a
file, checked against the process's start time so that a recreated container is looked up again.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.connection.local import Connection as LocalConnection

DOCUMENTATION = """
name: podman_nsenter
short_description: Run tasks in a local podman container through nsenter
description:
  - Runs each command in the namespaces of a running local podman container with nsenter, as
    root, with a clean environment. For the project's test hosts; needs root on the controller.
author: llm-serving project
options:
  remote_addr:
    description: Name of the container.
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
extends_documentation_fragment:
  - connection_pipelining
"""

# The environment `podman exec` gives a command in the test-host image.
ENVIRONMENT = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "container=podman")


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]  # field 22, starttime


def container_pid(name: str) -> int:
    """PID (on this machine) of the container's init process."""
    cache = Path(tempfile.gettempdir()) / f"podman-nsenter-{os.getuid()}" / name
    try:
        pid, started = cache.read_text().split()
        if _start_time(int(pid)) == started:
            return int(pid)
    except (OSError, ValueError):
        pass
    inspect = ["podman", "container", "inspect", "--format", "{{.State.Pid}}", name]
    result = subprocess.run(inspect, capture_output=True, text=True, check=False)
    found = int(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip().isdigit() else 0
    if found <= 0:
        raise AnsibleConnectionFailure(f"container {name} is not running: {result.stderr.strip()}")
    cache.parent.mkdir(mode=0o700, exist_ok=True)
    cache.write_text(f"{found} {_start_time(found)}")
    return found


class Connection(LocalConnection):
    transport = "podman_nsenter"
    has_pipelining = True

    def _connect(self) -> Connection:
        super()._connect()
        self._play_context.remote_user = "root"
        if not getattr(self, "_pid", None):
            self._pid = container_pid(self.get_option("remote_addr"))
        return self

    def exec_command(self, cmd: Any, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        self._connect()
        command = cmd if isinstance(cmd, (str, bytes)) else shlex.join(map(to_text, cmd))
        wrapped = [
            "nsenter",
            f"--target={self._pid}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--",
            "env",
            "-i",
            *ENVIRONMENT,
            "/bin/sh",
            "-c",
            to_text(command),
        ]
        # local runs a string with the controller's shell, which only takes the quoting apart.
        return super().exec_command(shlex.join(wrapped), in_data=in_data, sudoable=sudoable)

    def put_file(self, in_path: str, out_path: str) -> None:
        data = Path(in_path).read_bytes()
        rc, _, stderr = self.exec_command(f"cat > {shlex.quote(out_path)}", in_data=data, sudoable=False)
        if rc != 0:
            raise AnsibleError(f"cannot write {out_path} in the container: {to_text(stderr)}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        rc, stdout, stderr = self.exec_command(f"cat {shlex.quote(in_path)}", sudoable=False)
        if rc != 0:
            raise AnsibleError(f"cannot read {in_path} in the container: {to_text(stderr)}")
        Path(out_path).write_bytes(stdout)

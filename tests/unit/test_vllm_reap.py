"""How the vLLM units' ExecStopPost reaper (roles/vllm/files/vllm-reap) finds its unit's processes:
from the cgroup's own cgroup.procs, found under the tracking mounts as a container shows them."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REAPER = Path(__file__).resolve().parents[2] / "roles" / "vllm" / "files" / "vllm-reap"
UNIT = "system.slice/vllm-tiny-qwen.service"
# /proc/self/cgroup of the reaper in a podman container on cgroup v1 hybrid: host paths.
HYBRID = "\n".join(
    [
        f"9:name=systemd:/libpod_parent/libpod-af38/{UNIT}",
        "4:memory:/libpod_parent/libpod-af38",
        f"0::/libpod_parent/libpod-af38/{UNIT}",
    ]
)


@pytest.fixture(scope="module")
def reap() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("vllm_reap", str(REAPER))
    spec = importlib.util.spec_from_loader("vllm_reap", loader)
    assert spec
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def cgroup(root: Path, path: str, pids: list[int]) -> Path:
    directory = root.joinpath(*path.split("/"))
    directory.mkdir(parents=True)
    procs = directory / "cgroup.procs"
    procs.write_text("".join(f"{pid}\n" for pid in pids))
    return procs


def test_the_containers_subtree_is_found_under_the_named_mount(reap: ModuleType, tmp_path: Path) -> None:
    # Inside the container the named hierarchy is mounted at the container's own cgroup.
    procs = cgroup(tmp_path / "systemd", UNIT, [700, 3850, 4126])
    cgroup(tmp_path / "systemd", "system.slice/vllm-tiny-nemotron.service", [800])
    mounts = {"name=systemd": [tmp_path / "systemd"], "0": [tmp_path / "unified"]}
    assert reap.procs_file(HYBRID, 4126, mounts) == procs
    # A worker whose /proc/<pid>/cgroup shows the root (its main thread exited, a thread spins)
    # is still listed by the cgroup itself.
    assert reap.leftovers(procs, 4126) == [700, 3850]


def test_pure_cgroup_v2_path_is_used_as_is(reap: ModuleType, tmp_path: Path) -> None:
    procs = cgroup(tmp_path, UNIT, [11, 12])
    assert reap.procs_file(f"0::/{UNIT}\n", 12, {"0": [tmp_path]}) == procs
    assert reap.leftovers(procs, 12) == [11]


def test_a_cgroup_that_does_not_list_the_reaper_is_not_its_own(reap: ModuleType, tmp_path: Path) -> None:
    cgroup(tmp_path / "systemd", UNIT, [700])
    mounts = {"name=systemd": [tmp_path / "systemd"], "0": []}
    assert reap.procs_file(HYBRID, 4126, mounts) is None


def test_outside_a_service_nothing_is_reaped(reap: ModuleType, tmp_path: Path) -> None:
    cgroup(tmp_path, "libpod_parent/libpod-af38", [1, 4126])
    assert reap.procs_file("0::/libpod_parent/libpod-af38\n", 4126, {"0": [tmp_path]}) is None

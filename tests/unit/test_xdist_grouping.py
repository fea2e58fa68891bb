"""tests/run.sh relies on pytest-xdist's --dist loadgroup to run the two vLLM scenarios one after
the other on one worker (their xdist_group in test_molecule.py). pytest 9.2 broke that grouping
without an error (pytest-dev/pytest-xdist#1386): the scenarios then ran at once and starved each
other of the machine's two cores. This runs the pinned pytest and pytest-xdist on a small suite
marked the same way, so that a version bump that breaks the grouping fails here, by name."""

import re
import subprocess
import sys
from pathlib import Path

SUITE = """
import os
import time

import pytest

NAMES = ["first", "second", "third", "fourth"]
PARAMS = [pytest.param(n, marks=pytest.mark.xdist_group("serving")) if n in {"first", "second"} else n for n in NAMES]


@pytest.mark.parametrize("name", PARAMS)
def test_scenario(name):
    time.sleep(0.5)
    print(name, os.environ["PYTEST_XDIST_WORKER"])
"""


def test_loadgroup_runs_a_group_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_suite.py").write_text(SUITE)
    command = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, "-c", "/dev/null", "--rootdir", str(tmp_path), "test_suite.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passed = re.findall(r"\[(gw\d)\] .*PASSED test_suite\.py::test_scenario\[(\w+)\]", result.stdout)
    worker_of = {name: worker for worker, name in passed}
    assert sorted(worker_of) == ["first", "fourth", "second", "third"], result.stdout[-3000:]
    assert worker_of["first"] == worker_of["second"], f"the group ran on two workers: {worker_of}"

"""Each Molecule scenario as one pytest test: create a real systemd host (podman), converge,
check idempotence, verify with testinfra against the running host, destroy."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
# Scenarios that run real vLLM share one pytest-xdist worker, one after the other: two of them at
# once would starve each other of this machine's cores. The others run beside them.
SERVING = {"stack", "fleet"}
# Secrets a scenario hands to the roles: none may appear in its output (Ansible's included).
SECRETS = {"stack": "sk-stack-test-9f8e7d6c5b4a", "weights_hf": "hf_LocalStandInToken7Qx2Vm9Lp4"}
SCENARIOS = [
    pytest.param(name, marks=pytest.mark.xdist_group("serving")) if name in SERVING else name
    for name in sorted(p.parent.name for p in (TESTS / "molecule").glob("*/molecule.yml"))
]


def failure_report(output: str) -> str:
    """What to read first when a scenario fails: the verifier's own failures when it ran (CI shows
    only a part of a long message, and Molecule's log after them would push them out), else the
    end of the output, where Ansible reports the failed task."""
    failures = re.search(r"^=+ FAILURES =+$.*?^=+ short test summary info =+$.*?^=+ .* =+$", output, re.M | re.S)
    if failures:
        return failures.group(0)[-8000:]
    return output[-12000:]


@pytest.mark.molecule
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario: str, podman_env: dict[str, str]) -> None:
    started = time.monotonic()
    result = subprocess.run(
        ["molecule", "test", "-s", scenario],
        cwd=TESTS,
        env=podman_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=2400,
    )
    output = result.stdout + result.stderr
    print(f"molecule scenario {scenario}: {time.monotonic() - started:.0f}s")
    assert result.returncode == 0, failure_report(output)
    # The verifier must really have run tests (Molecule skips an empty test directory silently).
    verified = re.search(r"=+ (\d+) passed", output)
    assert verified and int(verified.group(1)) > 0, output[-12000:]
    assert "failed" not in verified.group(0)
    if scenario in SECRETS:
        assert SECRETS[scenario] not in output, f"the {scenario} scenario's secret appears in its output"

"""Each Molecule scenario as one pytest test: create a real systemd host (podman), converge,
check idempotence, verify with testinfra against the running host, destroy."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SCENARIOS = sorted(p.parent.name for p in (TESTS / "molecule").glob("*/molecule.yml"))


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
        timeout=1800,
    )
    output = result.stdout + result.stderr
    print(f"molecule scenario {scenario}: {time.monotonic() - started:.0f}s")
    assert result.returncode == 0, output[-12000:]
    # The verifier must really have run tests (Molecule skips an empty test directory silently).
    verified = re.search(r"=+ (\d+) passed", output)
    assert verified and int(verified.group(1)) > 0, output[-12000:]
    assert "failed" not in verified.group(0)

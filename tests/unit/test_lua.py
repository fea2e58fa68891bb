"""The router's pure Lua modules, unit-tested with busted under LuaJIT (tests/lua)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_busted_specs_pass():
    result = subprocess.run([str(ROOT / "tests" / "lua" / "run.sh")], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    print(output[-3000:])
    assert result.returncode == 0, output[-6000:]
    summary = re.search(r"(\d+) successes? / (\d+) failures? / (\d+) errors? / (\d+) pending", output)
    assert summary, output[-3000:]
    successes, failures, errors, pending = map(int, summary.groups())
    assert successes > 0
    assert (failures, errors, pending) == (0, 0, 0)

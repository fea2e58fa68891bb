"""Role documentation and inputs cannot drift from meta/argument_specs.yml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())


def test_every_role_has_an_argument_spec_and_a_readme():
    for role in ROLES:
        assert (role / "meta" / "argument_specs.yml").is_file(), role.name
        assert (role / "README.md").is_file(), role.name


def test_readme_tables_match_the_argument_specs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "role_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_and_defaults_name_the_same_variables_with_the_same_values(role: Path):
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    assert set(spec) == set(defaults)
    for name, option in spec.items():
        assert name.startswith(f"{role.name}_"), f"{name} lacks the role prefix"
        if "default" in option:
            assert option["default"] == defaults[name], name

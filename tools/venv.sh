#!/usr/bin/env bash
# Creates .venv with the pinned controller and test tools from pyproject.toml; reinstalls only
# when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
# One build at a time: a second caller waits, then finds the stamp.
exec 9>.venv.lock
flock 9
if [ ! -f "$stamp" ]; then
  rm -rf .venv
  python3 -m venv .venv
  # This machine's pip configuration names find-links folders that may not exist; pip warns
  # once per package about them, which is noise.
  .venv/bin/pip install -q --upgrade 'pip>=25.1' 2> >(grep -v 'is ignored: it is neither' >&2)
  .venv/bin/pip install -q --group test 2> >(grep -v 'is ignored: it is neither' >&2)
  touch "$stamp"
fi

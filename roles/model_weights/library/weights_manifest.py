#!/usr/bin/python
"""Check or write the manifest that marks a model directory complete."""

from __future__ import annotations

import json
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: weights_manifest
short_description: Check or write the completeness manifest of a model directory
description:
  - C(state=check) compares the manifest in I(path) with I(identity) and the recorded file sizes
    with the files on disk, by stat alone (tens of GB are never re-hashed). Changes nothing.
  - C(state=present) records every file below I(path) with its size, after a fetch completed.
options:
  path: {description: Model directory., type: path, required: true}
  identity: {description: What the directory must hold (source, repo, revision, url...)., type: dict, required: true}
  state: {description: check or present., type: str, choices: [check, present], default: check}
"""

MANIFEST = ".llm-serving-manifest.json"


def files_below(path: Path) -> dict[str, int]:
    return {
        str(file.relative_to(path)): file.stat().st_size
        for file in sorted(path.rglob("*"))
        if file.is_file() and file.name != MANIFEST and not file.name.endswith(".incomplete")
    }


def check(path: Path, identity: dict) -> tuple[bool, str, list[str]]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return False, "no manifest: never completed", []
    except (OSError, ValueError) as err:
        return False, f"unreadable manifest: {err}", []
    if manifest.get("identity") != identity:
        return False, "the manifest records another source or revision", []
    missing = [
        rel
        for rel, size in sorted(manifest.get("files", {}).items())
        if not (path / rel).is_file() or (path / rel).stat().st_size != size
    ]
    if missing:
        return False, f"{len(missing)} file(s) missing or of the wrong size", missing
    return True, "complete", []


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "identity": {"type": "dict", "required": True},
            "state": {"type": "str", "choices": ["check", "present"], "default": "check"},
        },
        supports_check_mode=True,
    )
    path, identity = Path(module.params["path"]), module.params["identity"]
    if module.params["state"] == "check":
        complete, reason, missing = check(path, identity)
        module.exit_json(changed=False, complete=complete, reason=reason, missing=missing)

    files = files_below(path)
    if not files:
        module.fail_json(msg=f"{path} holds no files; refusing to mark it complete")
    wanted = json.dumps({"identity": identity, "files": files}, indent=2, sort_keys=True) + "\n"
    manifest_path = path / MANIFEST
    try:
        current = manifest_path.read_text()
    except OSError:
        current = None
    changed = current != wanted
    if changed and not module.check_mode:
        temporary = path / (MANIFEST + ".incomplete")
        temporary.write_text(wanted)
        temporary.chmod(0o644)
        temporary.replace(manifest_path)
    module.exit_json(changed=changed, files=len(files), bytes=sum(files.values()))


if __name__ == "__main__":
    main()

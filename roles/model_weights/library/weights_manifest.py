#!/usr/bin/python
"""Check or write the manifest that marks a model directory complete."""

from __future__ import annotations

import json
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: weights_manifest
short_description: Check or write the completeness manifests of model directories
description:
  - Each model lives in I(dir)/<repo>. Its identity is what the directory must hold - the source and
    repo, plus the revision (hf) or the archive's url and sha256 (url).
  - C(state=check) compares each manifest with the model's identity and the recorded file sizes with
    the files on disk, by stat alone (tens of GB are never re-hashed), for all models in one call.
    Returns C(incomplete) (model keys) and C(reasons). Changes nothing.
  - C(state=present) records every file of each model's directory with its size, after a fetch completed.
options:
  dir: {description: Directory the models live under., type: path, required: true}
  models: {description: Resolved catalog models (key, repo, source, revision, url, sha256)., type: list, required: true}
  state: {description: check or present., type: str, choices: [check, present], default: check}
"""

MANIFEST = ".llm-serving-manifest.json"
# huggingface_hub's local-dir bookkeeping (per-file metadata, partial downloads): not the model.
HF_STATE = Path(".cache") / "huggingface"
IDENTITY_KEYS = {"hf": ("revision",), "local": (), "url": ("url", "sha256")}


def identity(model: dict) -> dict:
    source = model["source"]
    found = {"source": source, "repo": model["repo"]}
    found.update({key: model.get(key, "") for key in IDENTITY_KEYS[source]})
    return found


def files_below(path: Path) -> dict[str, int]:
    return {
        str(file.relative_to(path)): file.stat().st_size
        for file in sorted(path.rglob("*"))
        if file.is_file()
        and file.name != MANIFEST
        and not file.name.endswith(".incomplete")
        and not file.relative_to(path).is_relative_to(HF_STATE)
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


def write(path: Path, wanted_identity: dict, check_mode: bool) -> bool:
    files = files_below(path)
    if not files:
        raise ValueError(f"{path} holds no files; refusing to mark it complete")
    wanted = json.dumps({"identity": wanted_identity, "files": files}, indent=2, sort_keys=True) + "\n"
    manifest_path = path / MANIFEST
    try:
        current = manifest_path.read_text()
    except OSError:
        current = None
    if current == wanted:
        return False
    if not check_mode:
        temporary = path / (MANIFEST + ".incomplete")
        temporary.write_text(wanted)
        temporary.chmod(0o644)
        temporary.replace(manifest_path)
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "models": {"type": "list", "elements": "dict", "required": True},
            "state": {"type": "str", "choices": ["check", "present"], "default": "check"},
        },
        supports_check_mode=True,
    )
    root, models = Path(module.params["dir"]), module.params["models"]
    if module.params["state"] == "check":
        incomplete, reasons = [], {}
        for model in models:
            complete, reason, missing = check(root / model["repo"], identity(model))
            reasons[model["key"]] = reason if not missing else f"{reason}: {', '.join(missing[:5])}"
            if not complete:
                incomplete.append(model["key"])
        module.exit_json(changed=False, incomplete=incomplete, reasons=reasons)

    changed = False
    for model in models:
        try:
            changed = write(root / model["repo"], identity(model), module.check_mode) or changed
        except (OSError, ValueError) as err:
            module.fail_json(msg=f"model {model['key']}: {err}")
    module.exit_json(changed=changed)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write each role's variable table into its README from meta/argument_specs.yml.

tools/role_docs.py          rewrite the tables
tools/role_docs.py --check  exit 1, naming the READMEs, when a table differs from its spec
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- BEGIN ARGUMENT SPECS (tools/role_docs.py) -->"
END = "<!-- END ARGUMENT SPECS -->"


def _cell(value: Any) -> str:
    # A scalar dumps as a document of its own, "true\n...\n": the end marker is not the value.
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...")
    # Ansible's doc markup C(x) is code in Markdown.
    text = text.replace("\n", " ").replace("|", "\\|")
    while "C(" in text:
        start = text.index("C(")
        end = text.index(")", start)
        text = text[:start] + "`" + text[start + 2 : end] + "`" + text[end + 1 :]
    return text


def table(spec_file: Path) -> str:
    specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
    rows = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for entry_point, spec in specs.items():
        for name, option in (spec.get("options") or {}).items():
            kind = option.get("type", "str")
            if kind == "list" and "elements" in option:
                kind = f"list of {option['elements']}"
            if "default" not in option:
                default = "see `defaults/main.yml`"
            elif option["default"] == "":
                default = '`""`'
            else:
                default = f"`{_cell(option['default'])}`"
            description = option.get("description", "")
            if isinstance(description, list):
                description = " ".join(description)
            name_cell = f"`{name}`" if entry_point == "main" else f"`{name}` ({entry_point})"
            rows.append(f"| {name_cell} | {kind} | {default} | {_cell(description)} |")
    return "\n".join(rows)


def render(readme: Path, spec_file: Path) -> str:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: add the markers {BEGIN} and {END} where the table goes")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(spec_file)}\n{END}{tail}"


def roles() -> list[Path]:
    return sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report drift instead of rewriting")
    args = parser.parse_args()
    stale = []
    for role in roles():
        readme = role / "README.md"
        wanted = render(readme, role / "meta" / "argument_specs.yml")
        if readme.read_text() != wanted:
            stale.append(readme)
            if not args.check:
                readme.write_text(wanted)
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"Variable tables out of date in {names}; run tools/role_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

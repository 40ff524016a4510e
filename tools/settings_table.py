"""Render the README's configuration table from `core.settings.Settings` and write it between the README's markers.

Each row is a field of `Settings`: its variable (`IMAGEGEN_<NAME>`), its default and its `description`. A new setting
therefore reaches the README by running this script, and `tests/unit/test_docs.py` fails until it has.

    python tools/settings_table.py            # rewrite README.md between the markers
    python tools/settings_table.py --check    # exit 1 when README.md's table is not what this renders
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: `core` is importable from the repository root
    sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402

README = ROOT / "README.md"
START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
ENV_PREFIX = str(Settings.model_config.get("env_prefix", ""))


def render_default(value: Any) -> str:
    """A default as the table shows it: `none` for None, JSON spelling for booleans and lists, `~` for the home."""
    if value is None:
        return "none"
    if isinstance(value, bool | list | dict):
        return f"`{json.dumps(value)}`"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        # The home folder differs per machine; the README must not.
        return f"`~{text[len(home) :]}`" if text.startswith(home + "/") else f"`{text}`"
    return f"`{value}`"


def render_table() -> str:
    """The configuration table, one row per field of `Settings` in declaration order."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"Settings.{name} has no description: give it Field(description=...)")
        default = field.get_default(call_default_factory=True, validated_data={})
        meaning = field.description.replace("|", "\\|")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {render_default(default)} | {meaning} |")
    return "\n".join(rows)


def replace_between_markers(text: str, table: str) -> str:
    """`text` with everything between the settings markers replaced by `table`; ValueError without both markers."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README needs {START} and then {END} around the configuration table")
    return text[: start + len(START)] + "\n" + table + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or, with --check, compare) the README's table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="exit 1 when the README's table is out of date")
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    wanted = replace_between_markers(current, render_table())
    if args.check:
        if current != wanted:
            print(f"{args.readme}: the settings table is out of date; run python tools/settings_table.py")
            return 1
        return 0
    if current != wanted:
        args.readme.write_text(wanted, encoding="utf-8")
        print(f"{args.readme}: settings table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())

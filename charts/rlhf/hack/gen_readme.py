"""Generates the values table of charts/rlhf/README.md from values.yaml: run after
changing values.yaml.

    .venv/bin/python charts/rlhf/hack/gen_readme.py           # rewrite the README section
    .venv/bin/python charts/rlhf/hack/gen_readme.py --check   # exit 1 if it is stale

The comment lines directly above a key (no blank line between) document it, as in
helm-docs: when the block holds a line starting with `# --`, the description runs from
the last such line to the key; otherwise the whole block is the description. Nested
keys are dotted paths (`grpc.tls.enabled`); the type and default come from the value.

Rows: every value that is a scalar, a list or an empty map; a non-empty map documented
with `# --` is one row (its whole value the default, its keys not listed); any other
non-empty map is expanded, with a row of type `object` when a comment documents it.
The table replaces what lies between `<!-- values-table:start -->` and
`<!-- values-table:end -->` in the README; the rest of the README is left as it is.
tests/charts/test_chart_readme.py checks that the committed README is this script's
output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1]
START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"

_KEY = re.compile(r"""^(?P<indent> *)(?P<key>"[^"]*"|'[^']*'|[^\s#'"{}\[\],:-][^:#]*?):(?:\s|$)""")


@dataclass(frozen=True)
class Doc:
    text: str
    tagged: bool  # written with `# --` (helm-docs): a documented map becomes one row


def _description(block: list[str]) -> Doc | None:
    """The description a comment block gives the key below it."""
    lines = [re.sub(r"^#\s?", "", line.strip()) for line in block]
    tagged = [i for i, line in enumerate(lines) if line == "--" or line.startswith("-- ")]
    if tagged:
        lines = [lines[tagged[-1]][2:], *lines[tagged[-1] + 1 :]]
    text = " ".join(line.strip() for line in lines if line.strip())
    return Doc(text, bool(tagged)) if text else None


def parse_comments(text: str) -> dict[tuple[str, ...], Doc]:
    """Key path -> the comment block directly above it, for every commented key.

    A line scanner over block-style YAML: it follows the keys by indentation and skips
    list items and block scalars (their lines hold no keys of the values tree). The
    values themselves come from yaml.safe_load; `values_table` checks that every path
    found here exists there, so a misread line fails instead of writing a wrong table.
    """
    docs: dict[tuple[str, ...], Doc] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    skip_deeper_than: int | None = None  # inside a block scalar or a list
    skip_items_at: int | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if not stripped:
            pending = []
            continue
        if skip_deeper_than is not None:
            if indent > skip_deeper_than or (indent == skip_items_at and stripped.startswith("-")):
                continue
            skip_deeper_than = skip_items_at = None
        if stripped.startswith("#"):
            pending.append(stripped)
            continue
        if stripped.startswith("- ") or stripped == "-":
            skip_deeper_than, skip_items_at = indent, indent
            pending = []
            continue
        match = _KEY.match(line)
        if not match:  # e.g. a flow collection continued on the next line
            pending = []
            continue
        key = match["key"].strip()
        if key[0] in "\"'":
            key = key[1:-1]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(k for _, k in stack), key)
        stack.append((indent, key))
        doc = _description(pending)
        if doc is not None:
            docs[path] = doc
        pending = []
        rest = line[match.end() :].split(" #", 1)[0].strip()
        if rest[:1] in ("|", ">"):
            skip_deeper_than, skip_items_at = indent, None
    return docs


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(f'"{k}"' if "." in k else k for k in path)


def _cell(text: str) -> str:
    """Table-cell Markdown: pipes escaped; outside code spans also <, > and *, so
    `<fullname>` shows as written instead of being taken for an HTML tag."""
    parts = text.split("`")
    prose = range(0, len(parts), 2) if len(parts) % 2 else range(len(parts))  # unpaired: all
    for i in prose:
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*")
    return "`".join(parts).replace("|", r"\|")


def _default(value: Any) -> str:
    return _cell(f"`{json.dumps(value, ensure_ascii=False)}`")


def values_table(values_text: str) -> str:
    """The Markdown table for a values.yaml text."""
    values = yaml.safe_load(values_text) or {}
    docs = parse_comments(values_text)

    def lookup(path: tuple[str, ...]) -> bool:
        node: Any = values
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    missing = [_dotted(p) for p in docs if not lookup(p)]
    if missing:
        raise ValueError(f"comments found for keys that values.yaml does not have: {missing}")

    rows = ["| key | type | default | description |", "|---|---|---|---|"]

    def walk(node: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = (*prefix, str(key))
            doc = docs.get(path)
            description = _cell(doc.text) if doc else ""
            if isinstance(value, dict) and value and not (doc and doc.tagged):
                if doc:
                    rows.append(f"| `{_dotted(path)}` | object |  | {description} |")
                walk(value, path)
            else:
                row = f"| `{_dotted(path)}` | {_type(value)} | {_default(value)} | {description} |"
                rows.append(row)

    walk(values, ())
    return "\n".join(rows)


def section(values_text: str) -> str:
    return "\n".join(
        [
            START,
            "## Values",
            "",
            "Generated from the comments in `values.yaml` by `hack/gen_readme.py`; edit those"
            " and run it again.",
            "",
            values_table(values_text),
            END,
        ]
    )


def render(readme: str, values_text: str) -> str:
    """The README with its marked section replaced by the table of `values_text`."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {START} ... {END} section")
    return readme[:start] + section(values_text) + readme[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=Path, default=CHART / "values.yaml")
    parser.add_argument("--readme", type=Path, default=CHART / "README.md")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the README is not up to date"
    )
    args = parser.parse_args(argv)
    readme = args.readme.read_text(encoding="utf-8")
    try:
        updated = render(readme, args.values.read_text(encoding="utf-8"))
    except ValueError as exc:
        print(f"{args.readme}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if updated != readme:
            print(
                f"{args.readme} is stale: run python charts/rlhf/hack/gen_readme.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if updated != readme:
        args.readme.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The values table in charts/rlhf/README.md is generated from values.yaml's comments
(charts/rlhf/hack/gen_readme.py). Fast: no helm."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "charts" / "rlhf" / "hack" / "gen_readme.py"

_spec = importlib.util.spec_from_file_location("gen_readme", GENERATOR)
gen_readme = importlib.util.module_from_spec(_spec)
sys.modules["gen_readme"] = gen_readme  # dataclasses look their module up there
_spec.loader.exec_module(gen_readme)

VALUES = """\
# File header: not a key's comment (a blank line follows).

# Plain note on a map: the map gets a row of type object.
grpc:
  # -- Port of every service.
  port: 50051
  tls:
    # -- Turn TLS on.
    # Needs a Secret.
    enabled: true
    undocumented: ""
# The part above the tag is not the description.
# -- Image of the Job pods, as one row.
image:
  repository: ""
  tag: ""
list:
  - name: a
    value: x
  - name: b
after_list: [1, 2]
script: |
  key: not a key
  other: no
empty: {}
"""


def table(values: str) -> dict[str, list[str]]:
    rows = gen_readme.values_table(values).splitlines()[2:]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    return {c[0].strip("`"): c[1:] for c in cells}


def test_committed_readme_is_the_generators_output() -> None:
    out = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, f"{out.stderr}regenerate: python {GENERATOR}"


def test_rows_paths_types_defaults_and_descriptions() -> None:
    rows = table(VALUES)
    assert rows["grpc"] == ["object", "", "Plain note on a map: the map gets a row of type object."]
    assert rows["grpc.port"] == ["int", "`50051`", "Port of every service."]
    assert rows["grpc.tls.enabled"] == ["bool", "`true`", "Turn TLS on. Needs a Secret."]
    assert rows["grpc.tls.undocumented"] == ["string", '`""`', ""]
    assert rows["image"] == [
        "object",
        '`{"repository": "", "tag": ""}`',
        "Image of the Job pods, as one row.",
    ]
    assert "image.tag" not in rows  # a map documented with `# --` is one row
    assert rows["list"][:2] == ["list", '`[{"name": "a", "value": "x"}, {"name": "b"}]`']
    assert rows["after_list"][:2] == ["list", "`[1, 2]`"]
    assert rows["script"][0] == "string"
    assert rows["empty"][:2] == ["object", "`{}`"]
    assert list(rows) == [
        "grpc",
        "grpc.port",
        "grpc.tls.enabled",
        "grpc.tls.undocumented",
        "image",
        "list",
        "after_list",
        "script",
        "empty",
    ]


def test_markdown_is_escaped_outside_code_spans() -> None:
    rows = table('# -- Name <fullname>-x, `Bearer <token>`, a|b, RLHF_*.\nkey: "a|b"\n')
    assert rows["key"][1] == r'`"a\|b"`'
    assert rows["key"][2] == r"Name &lt;fullname&gt;-x, `Bearer <token>`, a\|b, RLHF_\*."


def test_check_fails_on_a_stale_readme_and_writing_fixes_it(tmp_path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(VALUES)
    readme = tmp_path / "README.md"
    prose = "# chart\n\nProse stays.\n\n"
    readme.write_text(f"{prose}{gen_readme.START}\nold\n{gen_readme.END}\n\nMore prose.\n")
    args = ["--values", str(values), "--readme", str(readme)]
    assert gen_readme.main([*args, "--check"]) == 1
    assert gen_readme.main(args) == 0
    assert gen_readme.main([*args, "--check"]) == 0
    text = readme.read_text()
    assert text.startswith(prose) and text.endswith(f"{gen_readme.END}\n\nMore prose.\n")
    assert "| `grpc.port` | int | `50051` | Port of every service. |" in text
    values.write_text(VALUES.replace("50051", "50052"))
    assert gen_readme.main([*args, "--check"]) == 1


def test_readme_without_markers_is_an_error(tmp_path) -> None:
    (tmp_path / "values.yaml").write_text("a: 1\n")
    (tmp_path / "README.md").write_text("# chart\n")
    args = ["--values", str(tmp_path / "values.yaml"), "--readme", str(tmp_path / "README.md")]
    assert gen_readme.main(args) == 2
    assert gen_readme.main([*args, "--check"]) == 2

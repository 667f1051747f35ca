"""Quality benchmarks: `python bench/quality.py <name> --json [options]`.

Each benchmark lives in bench/quality_<name>.py and exposes
`add_arguments(parser)` and `run(args) -> dict`; this script prints the dict as one
JSON object (with --json) or as a readable table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = {
    "classifier": "quality_classifier",
    "ppo": "quality_rl",
    "rloo": "quality_rl",
    "grpo": "quality_rl",
    "dpo": "quality_dpo",
}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, module_name in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        sub_parser = sub.add_parser(name, help=(module.__doc__ or "").splitlines()[0])
        sub_parser.add_argument("--json", action="store_true", help="print one JSON object")
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    result = args.run(args)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

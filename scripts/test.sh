#!/usr/bin/env bash
# The test command: set up .venv (see scripts/setup.sh) and run the test suite,
# one pytest worker per core (pytest-xdist, work stealing: a worker that runs out
# takes queued tests from the other; pass -n 0 to run in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -n auto --dist worksteal "$@"

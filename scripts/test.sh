#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install with the test and dev extras, lint, type-check,
# test on both storages, then the crash tests on S3 with a PostgreSQL index.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# the whole suite on a local directory store, then again on the memory storage (tests that need
# a store on disk are marked `local` and run in the first pass only)
.venv/bin/python -m pytest --storage local "$@"
.venv/bin/python -m pytest --storage memory -q "$@"
# the crash tests (a writer killed at every write, then recovery) on S3 (moto's server on
# loopback) with the index on PostgreSQL (a server the session starts); the whole suite runs
# there with `pytest --storage s3 --index postgres` (hours: see README)
.venv/bin/python -m pytest --storage s3 --index postgres -q -m shared tests/test_crash.py \
  tests/test_update.py::test_killed_update_is_all_or_nothing "$@"

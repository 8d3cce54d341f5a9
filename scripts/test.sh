#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install with the test and dev extras, lint, type-check,
# test on a directory store with SQLite, in memory with SQLite, and on S3 with PostgreSQL.
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
# the whole suite once more on S3 (moto's S3 server on loopback) with the index on PostgreSQL
# (a server the session starts), the crash tests (a writer killed at every write) included
.venv/bin/python -m pytest --storage s3 --index postgres -q "$@"

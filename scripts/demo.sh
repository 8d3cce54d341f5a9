#!/usr/bin/env bash
# The main job, from a fresh clone: install, ingest sample data into a store, show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
rm -rf demo-data demo-store
.venv/bin/python scripts/sample_data.py demo-data
.venv/bin/mkdicomweb -o demo-store demo-data
COLUMNS=160 .venv/bin/dicomweb-archive studies -o demo-store
echo
echo "Proof that the store still holds every file (rebuilt and hashed: 'bytes' is byte for byte;"
echo "'pixels+attributes' is a JPEG 2000 original whose frames were recompressed to JPEG-LS):"
COLUMNS=160 .venv/bin/dicomweb-archive verify -o demo-store
echo
echo "One instance with frames, as files (the static DICOMweb layout):"
# (sed, not head: head exits early and, with pipefail, the writer's SIGPIPE would end the demo)
frame=$(find demo-store/studies -name 1.mht | sort | sed -n 1p)
instance=$(dirname "$(dirname "$frame")")
series=$(dirname "$(dirname "$instance")")
(cd "$series" && find . -maxdepth 1 -type f && find "instances/$(basename "$instance")" | sort) | sed 's/^/  /'
head -c 160 "$frame" | sed -n '1,2s/^/  frame 1 begins: /p'
echo
echo
echo "Serve it to a DICOMweb viewer: .venv/bin/dicomweb-archive serve -o demo-store --port 8080"

"""S3 requests per operation: what each command asks of the object storage.

Usage: python bench/s3_requests.py [--count 10]

Starts moto's S3 server on loopback (``tests/s3server.py``) with its request log, makes a
store ``s3://dicomweb-tests/bench`` of one generated CT series of ``--count`` instances, then
runs each command once in its own process, as a user would, and counts the requests the
server logged while it ran, by HTTP method. The index is the default one of an S3 store (an
SQLite file in this machine's cache). Request counts do not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factory import write_series  # noqa: E402
from tests.s3server import BUCKET, s3_server  # noqa: E402

_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/[\d.]+" (\d+)')


def _requests(log: Path, start: int, *, show: bool = False) -> tuple[collections.Counter[str], int]:
    """Requests to the bucket logged after byte ``start``, by method; and the log's end.
    ``show``: print each request."""
    data = log.read_bytes()
    counts: collections.Counter[str] = collections.Counter()
    for match in _REQUEST.finditer(data[start:].decode(errors="replace")):
        method, path, status = match.groups()
        if path.startswith(f"/{BUCKET}"):
            listing = method == "GET" and "list-type" in path
            counts[method + ("?list" if listing else "")] += 1
            if show:
                print(f"  {method} {path[len(BUCKET) + 2 :]} {status}")
    return counts, len(data)


def _run(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dicomweb_archive.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ.copy(),
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed: {result.stderr.strip()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10, help="instances of the series")
    parser.add_argument("--show", action="store_true", help="print every request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        files = write_series(work / "in", count=args.count + 1, rows=32, columns=32)
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        log = work / "moto.log"
        store = f"s3://{BUCKET}/bench"
        steps = [
            (
                f"create the store with {args.count} instances (mkdicomweb)",
                ["create", "-o", store, *map(str, files[:-1])],
            ),
            (
                "ingest of one more instance (mkdicomweb, all stages)",
                ["create", "-o", store, str(files[-1])],
            ),
            ("study stage of the study (mkdicomwebstudy)", ["study", "-o", store, study]),
            (
                "edit commit (edit --study StudyDescription=...)",
                ["edit", "-o", store, "--study", study, "StudyDescription=EDITED"],
            ),
            ("reindex", ["reindex", "-o", store]),
            (
                "export of the study (mkdicomwebpart10)",
                ["export", "-o", store, "--out", str(work / "out"), study],
            ),
            ("verify", ["verify", "-o", store]),
            ("list studies (studies)", ["studies", "-o", store]),
        ]
        rows = []
        with s3_server(work / "cache", log=log):
            _, position = _requests(log, 0)
            for title, command in steps:
                if args.show:
                    print(title)
                _run(*command)
                counts, position = _requests(log, position, show=args.show)
                rows.append((title, counts))
    methods = ["GET", "GET?list", "HEAD", "PUT", "POST", "DELETE"]
    print(f"S3 requests per command, a series of {args.count} instances (+1)")
    print()
    print("| command | " + " | ".join(methods) + " | total |")
    print("| --- | " + " | ".join("---:" for _ in methods) + " | ---: |")
    for title, counts in rows:
        cells = [str(counts.get(m, 0)) for m in methods]
        print(f"| {title} | " + " | ".join(cells) + f" | {sum(counts.values())} |")


if __name__ == "__main__":
    main()

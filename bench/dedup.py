"""Group files against per-instance files: bytes on disk for one series of N instances.

Usage: python bench/dedup.py [--count 200]

Ingests a generated CT series (small pixel data: only metadata matters here) and compares the
study's group file with the per-instance records and extracts it was made from, and the time
the group stage takes against reading those files (the baseline of the same run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factory import write_series  # noqa: E402

from dicomweb_archive import PipelineOptions, group_studies, write_instances  # noqa: E402
from dicomweb_archive.store.files import read_json_gz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        files = write_series(Path(work) / "in", count=args.count, rows=16, columns=16)
        store = Path(work) / "store"
        write_instances(files, store, options=PipelineOptions())
        per_instance = list((store / "instances").rglob("*.gz"))
        per_instance_bytes = sum(p.stat().st_size for p in per_instance)
        start = time.perf_counter()
        for path in per_instance:
            read_json_gz(path)
        read_seconds = time.perf_counter() - start
        start = time.perf_counter()
        group_studies(store)
        group_seconds = time.perf_counter() - start
        groups = [p for p in (store / "deduplicated").rglob("*.gz") if p.name != "index.json.gz"]
        group_bytes = sum(p.stat().st_size for p in groups)
    print("| instances | per-instance files | bytes | group files | bytes | group / per-instance |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {args.count} | {len(per_instance)} | {per_instance_bytes} | {len(groups)} | "
        f"{group_bytes} | {group_bytes / per_instance_bytes * 100:.1f} % |"
    )
    print(
        f"group stage {group_seconds:.2f} s; reading the per-instance files alone "
        f"{read_seconds:.2f} s (ratio {group_seconds / read_seconds:.1f}x)"
    )


if __name__ == "__main__":
    main()

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

from dicomweb_archive import Archive, PipelineOptions, group_studies, write_instances  # noqa: E402
from dicomweb_archive.store.storage import from_json_gz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        files = write_series(Path(work) / "in", count=args.count, rows=16, columns=16)
        with Archive.open_or_create(Path(work) / "store") as archive:
            storage = archive.storage
            write_instances(archive, files, options=PipelineOptions(deduplicate=True))
            per_instance = [
                info
                for info in storage.list_prefix(f"{archive.keys.path_instances}/")
                if info.key.endswith(".gz")
            ]
            per_instance_bytes = sum(info.size for info in per_instance)
            start = time.perf_counter()
            for info in per_instance:
                from_json_gz(storage.get(info.key))
            read_seconds = time.perf_counter() - start
            start = time.perf_counter()
            group_studies(archive)
            group_seconds = time.perf_counter() - start
            groups = [
                info
                for info in storage.list_prefix(f"{archive.keys.path_deduplicated}/")
                if info.key.endswith(".gz") and not info.key.endswith("/index.json.gz")
            ]
            group_bytes = sum(info.size for info in groups)
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

"""Distributed ingest benchmark (issue 16): a CT series into a directory store with its SQLite
index, one process (the baseline), and into S3 with a PostgreSQL index, one process and on 1
and 2 Dask workers (``ops/distributed.py``), in the same run.

Usage: python bench/ingest_dask.py [--count 1000] [--size 512] [--workers 1,2]
       [--workdir DIR]

The series is bench/ingest.py's (COUNT slices of SIZE x SIZE 16-bit CT-like phantoms, cached in
the work directory). The S3 endpoint is moto's server on loopback (``tests/s3server.py``), the
PostgreSQL server Debian's binaries in a temporary cluster (``tests/pgserver.py``), both started
by this script. Each ingest runs in a fresh process with the store's default recompression
(JPEG-LS lossless); the Dask rows start a ``LocalCluster`` of N worker processes (one thread
each) on 127.0.0.1 in that process, whose start is timed apart (``cluster s``) and left out of
the ingest's seconds. Prints a Markdown table: seconds, instances/s and the ratio of each row's
instances/s to the baseline's. docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pgserver import postgres_server  # noqa: E402
from tests.s3server import BUCKET, s3_server  # noqa: E402

from bench.ingest import fresh, generate, table  # noqa: E402

#: One ingest in a fresh process: ``SOURCE LOCATION WORKERS INDEX`` (WORKERS 0: no Dask;
#: INDEX ``-``: the store's default). Prints the cluster's start and the ingest's seconds.
CHILD = """
import sys, time
from dicomweb_archive import Archive, ingest
source, location, workers, index = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
settings = {"index": index} if index != "-" else {}
start = time.perf_counter()
pool = None
if workers:
    from dicomweb_archive.ops.distributed import open_workers
    pool = open_workers(workers=workers)
    pool.client.wait_for_workers(workers)
ready = time.perf_counter()
with Archive.open_or_create(location, **settings) as archive:
    report = ingest(archive, [source], keep_results=False, workers=pool)
done = time.perf_counter()
if pool is not None:
    pool.close()
assert report.ok, [r.error for r in report.failures][:3]
print(ready - start, done - ready, report.instances)
"""


def run_ingest(source: Path, location: str, workers: int, index: str) -> tuple[float, float, int]:
    """(cluster start seconds, ingest seconds, instances) of one ingest in a fresh process."""
    subprocess.run(["sync"], check=True)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(source), location, str(workers), index],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--workers", default="1,2", help="Dask worker counts of the S3 + PostgreSQL rows"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dwa-bench")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    ct, _, _ = generate(args.workdir, args.count, 1, args.size)
    rows: list[tuple[str, float, float, int]] = []
    store = fresh(args.workdir, "dask-baseline")
    cluster, seconds, instances = run_ingest(ct, str(store), 0, "-")
    rows.append(("directory + SQLite, 1 process (baseline)", cluster, seconds, instances))
    with s3_server(args.workdir / "cache"), postgres_server() as url:
        for workers in [0, *counts]:
            location = f"s3://{BUCKET}/bench-{uuid.uuid4().hex[:12]}"
            index = f"{url}?schema=bench_{uuid.uuid4().hex[:12]}"
            cluster, seconds, instances = run_ingest(ct, location, workers, index)
            name = f"{workers} Dask worker{'s' if workers > 1 else ''}" if workers else "1 process"
            rows.append((f"S3 (moto) + PostgreSQL, {name}", cluster, seconds, instances))
    base = rows[0][3] / rows[0][2]
    print(f"{args.count} CT slices of {args.size} x {args.size}, JPEG-LS recompression\n")
    table(
        ["ingest", "cluster s", "seconds", "instances/s", "vs baseline"],
        [
            [
                name,
                f"{cluster:.1f}" if cluster > 0.01 else "-",
                f"{seconds:.1f}",
                f"{instances / seconds:.1f}",
                f"{instances / seconds / base:.2f}",
            ]
            for name, cluster, seconds, instances in rows
        ],
    )


if __name__ == "__main__":
    main()

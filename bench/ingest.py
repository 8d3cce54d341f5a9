"""Ingest benchmark: instances/s, MB/s and store size, against `cp -r` of the same files, in
the same run, with and without recompression.

Usage: python bench/ingest.py [--count 1000] [--frames 200] [--size 512] [--workdir DIR]
       [--results bench/results/ingest.json]

Generates (once, cached in the work directory) a CT series of COUNT slices of SIZE x SIZE
16-bit pixels (a CT-like phantom with noise: tests/factory.py's ``phantom``) and one
multi-frame instance of FRAMES such frames, then measures, each in a fresh process so that
peak memory (max RSS) is the ingest's own:
- `cp -r` of the input (the baseline),
- ingest of the CT series into an empty store with the default recompression (JPEG-LS
  lossless), with HTJ2K lossless, and with --no-recompress; and of half the series (peak
  memory must not grow with the number of files),
- ingest of the multi-frame instance.
Prints a Markdown table and the ratios (also written as JSON to --results);
docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factory import uid, write_ct, write_series  # noqa: E402 - repository root on path

from dicomweb_archive import Archive  # noqa: E402
from dicomweb_archive.store.storage import PRIVATE  # noqa: E402

#: Runs one ingest in a fresh process; VmHWM is that process's own peak resident memory
#: (ru_maxrss would include the parent's peak, inherited across fork and exec on Linux).
CHILD = """
import re, sys, time
from dicomweb_archive import Archive, ingest
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.ops.ingest_types import PipelineOptions
policy = Recompression.from_options(grey=sys.argv[3], colour=sys.argv[3])
start = time.perf_counter()
with Archive.open_or_create(sys.argv[2]) as archive:
    report = ingest(archive, [sys.argv[1]], options=PipelineOptions(recompression=policy))
seconds = time.perf_counter() - start
assert report.ok, [r.error for r in report.failures][:3]
status = open("/proc/self/status").read()
print(seconds, report.instances, re.search(r"VmHWM:\\s+(\\d+)", status).group(1))
"""
REPEATS = 3
#: How long ext4 avoids reusing a freed inode (see :func:`fresh`).
RECENTLY_DELETED_SECONDS = 30


def tree_size(path: Path) -> int:
    """Bytes of every file under ``path`` (the input)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def store_size(location: str | Path) -> int:
    """Bytes of every object of the store but the private ones (configuration, index)."""
    with Archive.open(location) as archive:
        return sum(
            info.size
            for info in archive.storage.list_prefix("")
            if not info.key.startswith(PRIVATE)
        )


def generate(workdir: Path, count: int, frames: int, size: int) -> tuple[Path, Path, Path]:
    ct = workdir / f"ct-phantom-{count}x{size}"
    half = workdir / f"ct-phantom-{count // 2}x{size}"
    multi = workdir / f"multiframe-phantom-{frames}x{size}"
    if not ct.exists():
        write_series(ct, count=count, rows=size, columns=size, patient_id="BENCH", realistic=True)
    if not half.exists():
        shutil.copytree(ct, half)
        for path in sorted(half.iterdir())[count // 2 :]:
            path.unlink()
    if not multi.exists():
        write_ct(
            multi / "multiframe.dcm",
            study=uid("77.1"),
            series=uid("77.2"),
            sop=uid("77.3"),
            frames=frames,
            rows=size,
            columns=size,
            realistic=True,
        )
    return ct, half, multi


def fresh(workdir: Path, name: str) -> Path:
    """A directory name not used before in this run. Nothing is deleted between runs: ext4
    skips inodes freed in the last 30 s when it allocates new ones, and scanning past the
    thousands a deleted store leaves made file creation several times slower (measured with
    perf: ``recently_deleted`` in ``ext4_create``). :func:`main` deletes everything at the end."""
    for number in range(1, 1000):
        path = workdir / "runs" / f"{name}-{number}"
        if not path.exists():
            return path
    raise RuntimeError("too many runs in the work directory")


def time_cp(source: Path, workdir: Path) -> float:
    """Median of REPEATS runs of `cp -r`, each after a sync (no writeback left over)."""
    times = []
    for _ in range(REPEATS):
        target = fresh(workdir, "cp")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        subprocess.run(["cp", "-r", str(source), str(target)], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_ingest(source: Path, workdir: Path, target: str) -> dict[str, float]:
    """Median of REPEATS ingests into an empty store, each in a fresh process after a sync;
    ``target`` is the -t/-T value (``none``: no recompression)."""
    runs = []
    for _ in range(REPEATS):
        store = fresh(workdir, "store")
        subprocess.run(["sync"], check=True)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(source), str(store), target],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        runs.append((float(out[0]), int(out[1]), int(out[2])))
    seconds = statistics.median(run[0] for run in runs)
    instances = runs[0][1]
    max_rss_kb = max(run[2] for run in runs)
    result = {
        "seconds": seconds,
        "instances": instances,
        "input_bytes": tree_size(source),
        "store_bytes": store_size(store),
        "peak_rss_mb": max_rss_kb / 1024,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dwa-bench")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ct, half, multi = generate(args.workdir, args.count, args.frames, args.size)
    rows: list[dict[str, Any]] = []
    if (args.workdir / "runs").exists():  # left by an interrupted run: let ext4 forget it
        shutil.rmtree(args.workdir / "runs")
        time.sleep(RECENTLY_DELETED_SECONDS)
    cp_times: dict[Path, float] = {}
    for label, source, target in (
        (f"CT {args.count} x {args.size}^2, JPEG-LS (default)", ct, "jls"),
        (f"CT {args.count} x {args.size}^2, HTJ2K", ct, "htj2k"),
        (f"CT {args.count} x {args.size}^2, --no-recompress", ct, "none"),
        (f"CT {args.count // 2} x {args.size}^2, JPEG-LS", half, "jls"),
        (f"multi-frame {args.frames} x {args.size}^2, JPEG-LS", multi, "jls"),
    ):
        if source not in cp_times:
            cp_times[source] = time_cp(source, args.workdir)
        cp_seconds = cp_times[source]
        result = time_ingest(source, args.workdir, target)
        megabytes = result["input_bytes"] / 1e6
        rows.append(
            {
                "case": label,
                "instances_per_s": result["instances"] / result["seconds"],
                "mb_per_s": megabytes / result["seconds"],
                "seconds": result["seconds"],
                "cp_seconds": cp_seconds,
                "ratio_to_cp": result["seconds"] / cp_seconds,
                "store_to_input": result["store_bytes"] / result["input_bytes"],
                "peak_rss_mb": result["peak_rss_mb"],
            }
        )
    print(
        "| case | instances/s | MB/s | ingest s | cp -r s | ingest / cp | store / input "
        "| peak RSS MB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['case']} | {r['instances_per_s']:.0f} | {r['mb_per_s']:.0f} | "
            f"{r['seconds']:.2f} | {r['cp_seconds']:.2f} | {r['ratio_to_cp']:.1f}x | "
            f"{r['store_to_input'] * 100:.1f} % | {r['peak_rss_mb']:.0f} |"
        )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(rows, indent=1))
    shutil.rmtree(args.workdir / "runs")


if __name__ == "__main__":
    main()

"""Export and verify benchmark: against `cat` of the original files, in the same run.

Usage: python bench/export.py [--count 500] [--size 512] [--workdir DIR] [--results FILE]

Ingests the generated CT set twice (cached like bench/ingest.py's): frames as received
(--no-recompress) and recompressed to JPEG-LS (the default). Then measures, each the median of
three runs after a `sync`:
- `cat` of all original files into one output file (reads and writes the same bytes);
- `export` of the whole study to a directory (rebuild from the store, decoding recompressed
  frames back to the original bytes, hash, atomic writes), for each store;
- `verify` of the whole store (rebuild and hash every instance, check every derived file).
Then, against the goals of issue 12, in the same run:
- the decode limit: every JPEG-LS frame of the recompressed store (read from its frame files
  beforehand, not timed: the frames the export and verify read) decoded by imagecodecs alone,
  on one thread and on os.cpu_count() threads; export and verify of that store as a share of
  it (goal: at least 85 %);
- `cp -r` of the original files: export and verify of the store kept as received
  (--no-recompress) as a ratio to it (goal: within 2x).
Prints a Markdown table per group; with --results, also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import RECENTLY_DELETED_SECONDS, fresh, generate  # noqa: E402
from dicomweb_archive import Archive, PipelineOptions, Recompression, ingest  # noqa: E402
from dicomweb_archive.errors import NotAStoreError  # noqa: E402
from dicomweb_archive.model.syntax import JPEG_LS_LOSSLESS  # noqa: E402
from dicomweb_archive.ops.export import Selection, export  # noqa: E402
from dicomweb_archive.ops.verify import verify  # noqa: E402
from dicomweb_archive.store.keys import STUDIES, STUDIES_INDEX  # noqa: E402
from dicomweb_archive.store.multipart import parse_part  # noqa: E402

REPEATS = 3


#: CPU seconds (user and system) this process spent in each action :func:`timed` ran last,
#: the median of its runs: the share of an operation's CPU that the codec takes does not
#: depend on what else the machine runs, its wall time does
CPU: dict[str, float] = {}


def timed(action: Callable[[], None], name: str = "") -> float:
    times, cpu = [], []
    for _ in range(REPEATS):
        subprocess.run(["sync"], check=True)
        start, used = time.perf_counter(), _cpu()
        action()
        times.append(time.perf_counter() - start)
        cpu.append(_cpu() - used)
    if name:
        CPU[name] = statistics.median(cpu)
    return statistics.median(times)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stored_frames(store: Path) -> list[bytes]:
    """The JPEG-LS codestreams of every frame file of a local store (what export and verify
    read and decode), in memory."""
    frames = []
    for path in sorted((store / STUDIES).rglob("*.mht")):
        content_type, payload = parse_part(path.read_bytes(), source=str(path))
        if f"transfer-syntax={JPEG_LS_LOSSLESS}" in content_type:
            frames.append(bytes(payload))
    return frames


def decode_seconds(frames: list[bytes], workers: int) -> float:
    """Median of REPEATS decodings of every frame by imagecodecs (each after a sync): in
    this thread if ``workers`` is 1, else in a pool of that many threads (imagecodecs
    releases the GIL)."""
    import imagecodecs

    def decode(data: bytes) -> int:
        return int(imagecodecs.jpegls_decode(data).size)

    def run() -> None:
        if workers == 1:
            total = sum(map(decode, frames))
        else:
            with ThreadPoolExecutor(workers) as threads:
                total = sum(threads.map(decode, frames))
        assert total > 0 or not frames

    return timed(run, "decode, 1 thread" if workers == 1 else f"decode, {workers} threads")


def is_built(store: Path) -> bool:
    """Whether ``store`` is a store whose ingest completed (kept from an earlier run)."""
    try:
        with Archive.open(store) as archive:
            return archive.storage.head(STUDIES_INDEX) is not None
    except NotAStoreError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dwa-bench")
    parser.add_argument("--results", type=Path, default=None, help="JSON results (default: none)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ct, _half, _multi = generate(args.workdir, args.count, 2, args.size)
    files = sorted(ct.iterdir())
    size = sum(p.stat().st_size for p in files)
    stores = {}
    for name, policy in (("as received", None), ("JPEG-LS", Recompression())):
        store = args.workdir / f"export-store-{'jls' if policy else 'none'}-{args.count}"
        if not is_built(store):
            shutil.rmtree(store, ignore_errors=True)
            with Archive.open_or_create(store) as archive:
                ingest(archive, [ct], options=PipelineOptions(recompression=policy))
        stores[name] = store
    if (args.workdir / "runs").exists():  # left by an interrupted run: let ext4 forget it
        shutil.rmtree(args.workdir / "runs")
        time.sleep(RECENTLY_DELETED_SECONDS)

    def cat() -> None:
        target = fresh(args.workdir, "cat")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as sink:
            subprocess.run(["cat", *map(str, files)], stdout=sink, check=True)

    # each timed run opens the store, as the export and verify commands do
    def run_export(store: Path) -> None:
        with Archive.open(store) as archive:
            (study,) = (row["study_instance_uid"] for row in archive.index.studies())
            report = export(archive, Selection(study=study), out=fresh(args.workdir, "export"))
        assert report.ok

    def run_verify(store: Path) -> None:
        with Archive.open(store) as archive:
            assert verify(archive).ok

    def cp() -> None:
        target = fresh(args.workdir, "cp")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-r", str(ct), str(target)], check=True)

    cat_s = timed(cat)
    rows = [("cat", cat_s)]
    for name, store in stores.items():
        for operation, run in (("export", run_export), ("verify", run_verify)):
            label = f"{operation}, frames {name}"
            rows.append((label, timed(functools.partial(run, store), label)))
    mb = size / 1e6
    print("| operation | seconds | MB/s | instances/s | vs cat |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.2f} | {mb / seconds:.0f} | {len(files) / seconds:.0f} | "
            f"{seconds / cat_s:.1f}x |"
        )
    print(flush=True)
    goals = limits(stores["JPEG-LS"], dict(rows), cp, len(files))
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(
            json.dumps(
                {
                    "instances": len(files),
                    "input_bytes": size,
                    "seconds": dict(rows),
                    "goals": goals,
                },
                indent=1,
            )
        )
    shutil.rmtree(args.workdir / "runs")


def limits(
    store: Path, seconds: dict[str, float], cp: Callable[[], None], instances: int
) -> list[dict[str, Any]]:
    """The decode limit and `cp -r`, measured now; the table of the goals against them (the
    CT series has one frame per instance: frames/s are instances/s)."""
    workers = os.cpu_count() or 1
    frames = stored_frames(store)
    count = len(frames)
    one_s = decode_seconds(frames, 1)
    limit_s = decode_seconds(frames, workers)
    del frames
    cp_s = timed(cp)
    print(
        f"| baseline | frames | seconds | frames/s |\n| --- | ---: | ---: | ---: |\n"
        f"| JPEG-LS decode, 1 thread | {count} | {one_s:.2f} | {count / one_s:.0f} |\n"
        f"| JPEG-LS decode, {workers} threads (the decode limit) | {count} | {limit_s:.2f} | "
        f"{count / limit_s:.0f} |\n"
        f"| cp -r of the originals | {instances} | {cp_s:.2f} | {instances / cp_s:.0f} |\n",
        flush=True,
    )
    goals: list[dict[str, Any]] = []
    for name, (baseline, baseline_s) in (
        ("export, frames JPEG-LS", ("decode limit", limit_s)),
        ("verify, frames JPEG-LS", ("decode limit", limit_s)),
        ("export, frames as received", ("cp -r", cp_s)),
        ("verify, frames as received", ("cp -r", cp_s)),
    ):
        of_limit = baseline == "decode limit"
        ratio = baseline_s / seconds[name] if of_limit else seconds[name] / baseline_s
        goals.append(
            {
                "operation": name,
                "seconds": seconds[name],
                "frames_per_s": instances / seconds[name],
                "baseline": baseline,
                "baseline_seconds": baseline_s,
                "ratio": ratio,
                "target": ">= 85 % of the limit" if of_limit else "<= 2x",
                "met": ratio >= 0.85 if of_limit else ratio <= 2,
            }
        )
    print(
        "| goal (issue 12) | seconds | frames/s | baseline, same run | baseline s | ratio "
        "| target | met |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | --- | --- |")
    for g in goals:
        shown = f"{g['ratio'] * 100:.0f} %" if "%" in g["target"] else f"{g['ratio']:.1f}x"
        print(
            f"| {g['operation']} | {g['seconds']:.2f} | {g['frames_per_s']:.0f} | "
            f"{g['baseline']} | {g['baseline_seconds']:.2f} | {shown} | {g['target']} | "
            f"{'yes' if g['met'] else 'no'} |"
        )
    print()
    codec_cpu = CPU["decode, 1 thread"]
    print(
        "| CPU (user + system) | CPU s | CPU ms / frame | decoding's share (1-thread decode "
        "CPU / this) |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name in ("decode, 1 thread", "export, frames JPEG-LS", "verify, frames JPEG-LS"):
        share = f"{codec_cpu / CPU[name] * 100:.0f} %" if CPU[name] else "-"
        print(f"| {name} | {CPU[name]:.2f} | {CPU[name] / max(count, 1) * 1000:.2f} | {share} |")
    return goals


if __name__ == "__main__":
    main()

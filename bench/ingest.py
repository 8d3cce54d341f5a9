"""Ingest benchmark: instances/s, MB/s and store size, against `cp -r` of the same files, in
the same run, with and without recompression; the codec limit; memory and files per instance.

Usage: python bench/ingest.py [--count 1000] [--frames 200] [--size 512] [--small A,B]
       [--small-size 64] [--workdir DIR] [--results bench/results/ingest.json]

Generates (once, cached in the work directory) a CT series of COUNT slices of SIZE x SIZE
16-bit pixels (a CT-like phantom with noise: tests/factory.py's ``phantom``) and one
multi-frame instance of FRAMES such frames, then measures, each in a fresh process so that
peak memory (max RSS) is the ingest's own:
- `cp -r` of the input (the baseline),
- ingest of the CT series into an empty store with the default recompression (JPEG-LS
  lossless), with HTJ2K lossless, and with --no-recompress; and of half the series (peak
  memory must not grow with the number of files),
- ingest of the multi-frame instance.
Then, in the same run:
- the codec limit: the lossless recompression of every frame of the CT series (encode, decode
  and compare, as the ingest's check does) by imagecodecs alone, frames already in memory (read
  with pydicom beforehand, not timed), on one thread, on os.cpu_count() threads and in as many
  processes; the fastest (threads or processes but on tiny inputs) is the limit the
  recompressing ingest is compared with;
- many small instances (SMALL_SIZE x SMALL_SIZE, ten per study) at two sizes (--small,
  default 2 and 20 times COUNT: 2,000 and 20,000), plus a one-instance ingest (the floor:
  imports, an empty store): peak RSS of each ingest (fresh processes) and their ratio;
- the files and bytes per instance of the larger small-instance store, by kind.
Prints one Markdown table per group and a table of the goals (issue 12) with the ratios. The
rows of the first table are written as JSON to --results (the codec limit added to the
JPEG-LS and HTJ2K rows); the other groups to the same name with ``-goals`` appended to its stem.
docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factory import make_ct, phantom, uid, write_ct, write_series  # noqa: E402

from dicomweb_archive import Archive  # noqa: E402
from dicomweb_archive.store.storage import PRIVATE  # noqa: E402

#: Runs one ingest in a fresh process, as the commands do (``keep_results=False``: the report
#: counts the files that went well); VmHWM is that process's own peak resident memory
#: (ru_maxrss would include the parent's peak, inherited across fork and exec on Linux).
CHILD = """
import re, sys, time
from dicomweb_archive import Archive, ingest
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.ops.ingest_types import PipelineOptions
policy = Recompression.from_options(grey=sys.argv[3], colour=sys.argv[3])
start = time.perf_counter()
with Archive.open_or_create(sys.argv[2]) as archive:
    options = PipelineOptions(recompression=policy)
    report = ingest(archive, [sys.argv[1]], options=options, keep_results=False)
seconds = time.perf_counter() - start
assert report.ok, [r.error for r in report.failures][:3]
status = open("/proc/self/status").read()
print(seconds, report.instances, re.search(r"VmHWM:\\s+(\\d+)", status).group(1))
"""
REPEATS = 3
#: How long ext4 avoids reusing a freed inode (see :func:`fresh`).
RECENTLY_DELETED_SECONDS = 30
#: Small instances per study in the memory measurement (the last study takes the rest).
SMALL_PER_STUDY = 10
#: Distinct pixel frames the small instances cycle through.
SMALL_FRAMES = 64
#: First number in the small instances' UIDs: all of them have seven digits, so every UID of
#: a set has the same length (see :func:`generate_small`); the template uses PLACEHOLDER.
SMALL_FIRST = 1_000_000
PLACEHOLDER = 9_999_999
#: UID component per kind of the small instances' UIDs.
SMALL_UIDS = {"study": 88, "series": 89, "sop": 90}
#: The frames the codec limit codes. Module level, so that worker processes forked by
#: :func:`codec_seconds` have them without pickling them.
FRAMES: list[np.ndarray] = []
#: Files of a store by kind (:func:`store_files`), in the order printed.
KINDS = (
    "frames (frames/N.mht)",
    "info.json.gz",
    "instance metadata.gz (-i)",
    "bulk data",
    "series/study derived files",
    "deduplicated group files",
    "per-instance deduplicated records (-d)",
    "notifications",
    "private files (.dicomweb-archive/, not local/)",
    "other",
)


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


def small_uid(kind: str, count: int, number: int) -> str:
    return uid(f"{SMALL_UIDS[kind]}.{count}.{number}")


def generate_small(workdir: Path, count: int, size: int) -> Path:
    """``count`` small CT instances (phantom slices of ``size`` x ``size``), SMALL_PER_STUDY
    per study (one series and one patient each), in a folder per study; cached like
    :func:`generate` (made under another name and renamed when complete).

    pydicom writes one template dataset with placeholder UIDs, Patient ID and Instance Number;
    each file is that template with its own values in their place (of the same lengths, so no
    element length changes) and one of SMALL_FRAMES pixel frames appended (Pixel Data is the
    last element): 20,000 files take seconds, where saving each dataset took 3 ms.
    """
    target = workdir / f"small-{count}x{size}"
    if target.exists():
        return target
    partial = workdir / f"small-{count}x{size}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    marks = {kind: small_uid(kind, count, PLACEHOLDER) for kind in SMALL_UIDS}
    template = make_ct(
        study=marks["study"],
        series=marks["series"],
        sop=marks["sop"],
        patient_id=f"SMALL{PLACEHOLDER}",
        instance_number=99,
        rows=size,
        columns=size,
        realistic=True,
    )
    pixels = [phantom(size, size, seed).tobytes() for seed in range(SMALL_FRAMES)]
    template.PixelData = pixels[0]
    template.save_as(partial / "template.dcm", enforce_file_format=True)
    data = (partial / "template.dcm").read_bytes()
    (partial / "template.dcm").unlink()
    if not data.endswith(pixels[0]):
        raise RuntimeError("Pixel Data is not the last element of the template")
    head = data[: -len(pixels[0])]
    number = b"\x20\x00\x13\x00IS\x02\x0099"  # (0020,0013) Instance Number, explicit VR LE
    if head.count(number) != 1:
        raise RuntimeError("the template's Instance Number is not where it is expected")
    number_at = head.index(number) + len(number) - 2
    studies = max(1, count // SMALL_PER_STUDY)
    for index in range(count):
        study = min(index // SMALL_PER_STUDY, studies - 1)
        values = {
            marks["study"]: small_uid("study", count, SMALL_FIRST + study),
            marks["series"]: small_uid("series", count, SMALL_FIRST + study),
            marks["sop"]: small_uid("sop", count, SMALL_FIRST + index),
            f"SMALL{PLACEHOLDER}": f"SMALL{SMALL_FIRST + study}",
        }
        out = head
        for mark, value in values.items():
            out = out.replace(mark.encode(), value.encode())
        in_study = f"{index - study * SMALL_PER_STUDY + 1:<2d}".encode()
        out = out[:number_at] + in_study + out[number_at + 2 :]
        folder = partial / f"S{SMALL_FIRST + study}"
        folder.mkdir(exist_ok=True)
        (folder / f"IM{SMALL_FIRST + index}.dcm").write_bytes(out + pixels[index % SMALL_FRAMES])
    last = pydicom.dcmread(folder / f"IM{SMALL_FIRST + count - 1}.dcm")
    if (
        last.SOPInstanceUID != small_uid("sop", count, SMALL_FIRST + count - 1)
        or last.file_meta.MediaStorageSOPInstanceUID != last.SOPInstanceUID
        or last.pixel_array.shape != (size, size)
    ):
        raise RuntimeError("a generated small instance is not what was meant")
    partial.rename(target)
    return target


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


def time_ingest(source: Path, workdir: Path, target: str) -> dict[str, Any]:
    """Median of REPEATS ingests into an empty store, each in a fresh process after a sync;
    ``target`` is the -t/-T value (``none``: no recompression). ``store`` is the last store."""
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
        "store": store,
    }
    return result


def read_frames(source: Path) -> list[np.ndarray]:
    """Every frame of the P10 files under ``source`` as the ingest recompresses it: in its
    container type, C-contiguous (read with pydicom)."""
    frames: list[np.ndarray] = []
    for path in sorted(source.rglob("*.dcm")):
        pixels = pydicom.dcmread(path).pixel_array
        frames.extend(np.ascontiguousarray(f) for f in pixels.reshape(-1, *pixels.shape[-2:]))
    return frames


def check_frame(codec: str, index: int) -> int:
    """The ingest's lossless recompression of FRAMES[index] by the codec alone, with the calls
    and parameters of ``dicom/codecs.py`` (``encode`` and ``decode_frame``): encode, decode,
    compare with the original; the size of the encoded frame. (imagecodecs is imported here,
    not by the scripts that import this module.)"""
    import imagecodecs

    frame = FRAMES[index]
    if codec == "HTJ2K":
        data = imagecodecs.htj2k_encode(frame, reversible=True)
        decoded = imagecodecs.htj2k_decode(data)
    else:
        data = imagecodecs.jpegls_encode(frame)
        decoded = imagecodecs.jpegls_decode(data)
    if not np.array_equal(decoded, frame):
        raise RuntimeError(f"a frame does not survive {codec} losslessly")
    return len(data)


def check_frames(codec: str, indexes: range) -> int:
    return sum(check_frame(codec, index) for index in indexes)


def ready(_: int) -> int:
    """Which worker process ran this (each takes a while, so that all of them get some)."""
    time.sleep(0.02)
    return os.getpid()


def codec_seconds(codec: str, workers: int) -> dict[str, float]:
    """Median seconds of REPEATS lossless checks of every frame of FRAMES (each after a sync):
    in this thread (``1 thread``), in a pool of ``workers`` threads (imagecodecs releases the
    GIL), and in ``workers`` processes forked beforehand (so that they have FRAMES) and given
    frame numbers in chunks."""
    count = len(FRAMES)
    chunk = max(1, min(16, count // (4 * workers)))
    chunks = [range(start, min(start + chunk, count)) for start in range(0, count, chunk)]
    check = functools.partial(check_frame, codec)
    batch = functools.partial(check_frames, codec)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as processes:
        # the workers are forked at the first submit (not timed): until they all answer
        while len(set(processes.map(ready, range(4 * workers)))) < workers:
            pass
        runs: dict[str, list[float]] = {"1 thread": [], "threads": [], "processes": []}
        for _ in range(REPEATS):
            for mode, times in runs.items():
                subprocess.run(["sync"], check=True)
                start = time.perf_counter()
                if mode == "1 thread":
                    total = sum(map(check, range(count)))
                elif mode == "threads":
                    with ThreadPoolExecutor(workers) as threads:
                        total = sum(threads.map(check, range(count)))
                else:
                    total = sum(processes.map(batch, chunks))
                times.append(time.perf_counter() - start)
                assert total > 0
    return {mode: statistics.median(times) for mode, times in runs.items()}


def store_files(store: Path) -> tuple[dict[str, list[int]], int]:
    """Files and bytes per kind (:data:`KINDS`) of a local store, all but its index
    (``.dicomweb-archive/local/``); and the number of its directories (the same)."""
    kinds: dict[str, list[int]] = {kind: [0, 0] for kind in KINDS}
    directories = 0
    for folder, subfolders, names in os.walk(store):
        key = os.path.relpath(folder, store).replace(os.sep, "/") + "/"
        key = "" if key == "./" else key
        if key == PRIVATE:
            subfolders[:] = [name for name in subfolders if name != "local"]
        directories += len(subfolders)
        for name in names:
            kind = file_kind(key, name)
            kinds[kind][0] += 1
            kinds[kind][1] += Path(folder, name).stat().st_size
    return kinds, directories


def file_kind(folder: str, name: str) -> str:
    """Which of :data:`KINDS` the file ``name`` in the store folder ``folder`` (a key prefix,
    ``studies/<study>/series/<series>/instances/<sop>/frames/``) is."""
    parts = folder.split("/")
    if folder.startswith(PRIVATE):
        return KINDS[8]
    if parts[0] != "studies":
        top = {"deduplicated": KINDS[5], "instances": KINDS[6], "notifications": KINDS[7]}
        return top.get(parts[0], KINDS[9])
    if len(parts) >= 7 and parts[2] == "series" and parts[4] == "instances":  # an instance's
        if len(parts) == 7:
            return {"info.json.gz": KINDS[1], "metadata.gz": KINDS[2]}.get(name, KINDS[9])
        return KINDS[0] if parts[6] == "frames" else KINDS[9]
    return KINDS[3] if len(parts) > 2 and parts[2] == "bulkdata" else KINDS[4]


def parse_sizes(text: str) -> tuple[int, int]:
    """``A,B``: the two sizes of the small-instance ingests."""
    sizes = tuple(int(part) for part in text.split(","))
    if len(sizes) != 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError("two numbers of instances, A,B")
    return sizes[0], sizes[1]


def table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table: first column left-aligned, the others right-aligned."""
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(flush=True)


def measure_ingest(
    args: argparse.Namespace, ct: Path, half: Path, multi: Path
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The first table: the ingest cases against `cp -r`; its rows, and those of the whole
    CT series by recompression target."""
    rows: list[dict[str, Any]] = []
    by_target: dict[str, dict[str, Any]] = {}
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
        if source == ct:
            by_target[target] = rows[-1]
    table(
        [
            "case",
            "instances/s",
            "MB/s",
            "ingest s",
            "cp -r s",
            "ingest / cp",
            "store / input",
            "peak RSS MB",
        ],
        [
            [
                r["case"],
                f"{r['instances_per_s']:.0f}",
                f"{r['mb_per_s']:.0f}",
                f"{r['seconds']:.2f}",
                f"{r['cp_seconds']:.2f}",
                f"{r['ratio_to_cp']:.1f}x",
                f"{r['store_to_input'] * 100:.1f} %",
                f"{r['peak_rss_mb']:.0f}",
            ]
            for r in rows
        ],
    )
    return rows, by_target


def measure_codecs(ct: Path, by_target: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The codec limit of the recompressing ingest rows, on the frames of the same series;
    the codec limit is also added to those rows."""
    workers = os.cpu_count() or 1
    FRAMES[:] = read_frames(ct)
    results = []
    try:
        for codec, target in (("JPEG-LS", "jls"), ("HTJ2K", "htj2k")):
            if target not in by_target:
                continue
            seconds = codec_seconds(codec, workers)
            rates = {mode: len(FRAMES) / value for mode, value in seconds.items()}
            best = max(rates, key=lambda mode: rates[mode])  # (one thread: tiny inputs only)
            row = by_target[target]
            row["codec_limit_frames_per_s"] = rates[best]
            row["codec_limit_by"] = best if best == "1 thread" else f"{workers} {best}"
            row["ratio_to_codec_limit"] = row["instances_per_s"] / rates[best]
            results.append(
                {
                    "codec": codec,
                    "case": row["case"],
                    "frames": len(FRAMES),
                    "workers": workers,
                    "frames_per_s": rates,
                    "limit_frames_per_s": rates[best],
                    "limit_by": best,
                    "ingest_instances_per_s": row["instances_per_s"],
                    "ratio": row["ratio_to_codec_limit"],
                }
            )
    finally:
        FRAMES.clear()
    table(
        [
            "codec (encode, decode, compare)",
            "frames",
            "1 thread frames/s",
            f"{workers} threads frames/s",
            f"{workers} processes frames/s",
            "codec limit frames/s",
            "ingest instances/s (same series)",
            "ingest / limit",
        ],
        [
            [
                r["codec"],
                str(r["frames"]),
                f"{r['frames_per_s']['1 thread']:.0f}",
                f"{r['frames_per_s']['threads']:.0f}",
                f"{r['frames_per_s']['processes']:.0f}",
                f"{r['limit_frames_per_s']:.0f} ({r['limit_by']})",
                f"{r['ingest_instances_per_s']:.0f}",
                f"{r['ratio'] * 100:.0f} %",
            ]
            for r in results
        ],
    )
    return results


def measure_small(
    args: argparse.Namespace, smalls: dict[int, Path]
) -> tuple[list[dict[str, Any]], Path]:
    """Peak RSS of ingests of small instances (default recompression), the smallest (one
    instance) being the floor; and the last store of the largest."""
    results = []
    store = Path()
    for count, source in smalls.items():
        cp_seconds = time_cp(source, args.workdir)
        result = time_ingest(source, args.workdir, "jls")
        store = result["store"]
        results.append(
            {
                "instances": result["instances"],
                "studies": max(1, count // SMALL_PER_STUDY),
                "input_bytes": result["input_bytes"],
                "seconds": result["seconds"],
                "instances_per_s": result["instances"] / result["seconds"],
                "cp_seconds": cp_seconds,
                "ratio_to_cp": result["seconds"] / cp_seconds,
                "peak_rss_mb": result["peak_rss_mb"],
            }
        )
    baseline = results[1]["peak_rss_mb"]
    for r in results[1:]:
        r["rss_to_first_size"] = r["peak_rss_mb"] / baseline
    table(
        [
            f"small instances ({args.small_size}^2, JPEG-LS)",
            "studies",
            "input MB",
            "ingest s",
            "instances/s",
            "cp -r s",
            "ingest / cp",
            "peak RSS MB",
            "RSS / first size",
        ],
        [
            [
                f"{r['instances']}" + (" (floor: imports, empty store)" if i == 0 else ""),
                str(r["studies"]),
                f"{r['input_bytes'] / 1e6:.1f}",
                f"{r['seconds']:.2f}",
                f"{r['instances_per_s']:.0f}",
                f"{r['cp_seconds']:.2f}",
                f"{r['ratio_to_cp']:.1f}x",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['rss_to_first_size']:.2f}x" if i else "",
            ]
            for i, r in enumerate(results)
        ],
    )
    return results, store


def measure_files(store: Path, source: Path, instances: int) -> dict[str, Any]:
    """Files and bytes of a store per instance, by kind, against its input."""
    kinds, directories = store_files(store)
    files = sum(count for count, _ in kinds.values())
    size = sum(size for _, size in kinds.values())
    input_files = sum(1 for path in source.rglob("*") if path.is_file())
    input_bytes = tree_size(source)
    input_directories = sum(1 for path in source.rglob("*") if path.is_dir())
    lines = [(kind, count, size) for kind, (count, size) in kinds.items() if count]
    lines += [
        ("store (all of the above)", files, size),
        ("input (P10 files)", input_files, input_bytes),
    ]
    table(
        [
            f"files of the store of {instances} small instances",
            "files",
            "files / instance",
            "bytes",
            "bytes / instance",
        ],
        [
            [kind, str(count), f"{count / instances:.2f}", str(size), f"{size / instances:.0f}"]
            for kind, count, size in lines
        ]
        + [
            [
                "directories: store / input",
                f"{directories} / {input_directories}",
                f"{directories / instances:.2f} / {input_directories / instances:.2f}",
                "",
                "",
            ]
        ],
    )
    print(
        f"store / input: {files / input_files:.2f}x the files, {size / input_bytes * 100:.1f} % "
        f"of the bytes (not counting .dicomweb-archive/local/, the index)\n",
        flush=True,
    )
    return {
        "instances": instances,
        "kinds": {kind: {"files": count, "bytes": size} for kind, (count, size) in kinds.items()},
        "store_files": files,
        "store_bytes": size,
        "store_directories": directories,
        "input_files": input_files,
        "input_bytes": input_bytes,
        "input_directories": input_directories,
    }


def goals(
    by_target: dict[str, dict[str, Any]], small: list[dict[str, Any]], files: dict[str, Any]
) -> list[dict[str, Any]]:
    """The table of issue 12's goals, each figure with its baseline of this run."""
    out: list[dict[str, Any]] = []
    for target, codec in (("jls", "JPEG-LS"), ("htj2k", "HTJ2K")):
        row = by_target.get(target, {})
        if "ratio_to_codec_limit" in row:
            out.append(
                {
                    "goal": f"ingest {codec} / codec limit",
                    "measured": f"{row['instances_per_s']:.0f} instances/s",
                    "baseline": f"{row['codec_limit_frames_per_s']:.0f} frames/s "
                    f"({row['codec_limit_by']})",
                    "ratio": f"{row['ratio_to_codec_limit'] * 100:.0f} %",
                    "target": ">= 85 %",
                    "met": row["ratio_to_codec_limit"] >= 0.85,
                }
            )
    if "none" in by_target:
        row = by_target["none"]
        out.append(
            {
                "goal": "ingest --no-recompress / cp -r",
                "measured": f"{row['seconds']:.2f} s",
                "baseline": f"{row['cp_seconds']:.2f} s",
                "ratio": f"{row['ratio_to_cp']:.1f}x",
                "target": "<= 3x",
                "met": row["ratio_to_cp"] <= 3,
            }
        )
    first, last = small[1], small[-1]
    out.append(
        {
            "goal": f"peak RSS, {last['instances']} / {first['instances']} small instances",
            "measured": f"{last['peak_rss_mb']:.0f} MB",
            "baseline": f"{first['peak_rss_mb']:.0f} MB",
            "ratio": f"{last['rss_to_first_size']:.2f}x",
            "target": "equal within noise (<= 1.10x), < 150 MB",
            "met": last["rss_to_first_size"] <= 1.10
            and max(first["peak_rss_mb"], last["peak_rss_mb"]) < 150,
        }
    )
    out.append(
        {
            "goal": f"store files per instance ({files['instances']} small instances)",
            "measured": f"{files['store_files'] / files['instances']:.2f}",
            "baseline": f"{files['input_files'] / files['instances']:.2f} (input)",
            "ratio": f"{files['store_files'] / files['input_files']:.2f}x",
            "target": "(reported)",
            "met": None,
        }
    )
    table(
        ["goal (issue 12)", "measured", "baseline, same run", "ratio", "target", "met"],
        [
            [
                g["goal"],
                g["measured"],
                g["baseline"],
                g["ratio"],
                g["target"],
                "" if g["met"] is None else ("yes" if g["met"] else "no"),
            ]
            for g in out
        ],
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--small",
        type=parse_sizes,
        default=None,
        help="A,B: instances of the two small-instance ingests (default: 2 and 20 x --count)",
    )
    parser.add_argument("--small-size", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dwa-bench")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()
    small_sizes = args.small or (2 * args.count, 20 * args.count)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ct, half, multi = generate(args.workdir, args.count, args.frames, args.size)
    smalls = {n: generate_small(args.workdir, n, args.small_size) for n in (1, *small_sizes)}
    if (args.workdir / "runs").exists():  # left by an interrupted run: let ext4 forget it
        shutil.rmtree(args.workdir / "runs")
        time.sleep(RECENTLY_DELETED_SECONDS)
    rows, by_target = measure_ingest(args, ct, half, multi)
    codecs = measure_codecs(ct, by_target)
    small, small_store = measure_small(args, smalls)
    files = measure_files(small_store, smalls[small_sizes[-1]], small[-1]["instances"])
    summary = goals(by_target, small, files)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(rows, indent=1))
    args.results.with_stem(args.results.stem + "-goals").write_text(
        json.dumps({"codec": codecs, "small": small, "files": files, "goals": summary}, indent=1)
    )
    shutil.rmtree(args.workdir / "runs")


if __name__ == "__main__":
    main()

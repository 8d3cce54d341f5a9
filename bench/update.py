"""Edit benchmark: `mkdicomwebupdate` (the real command, start-up included) against DCMTK's
`dcmodify` on the P10 files, in the same run; peak memory and objects written per edit.

Usage: python bench/update.py [--count 1000] [--size 512] [--studies 10] [--frames 100]
       [--multiframe-instances 10] [--runs 3] [--skip-multiframe] [--workdir DIR]

Generates (once, cached in the work directory like bench/ingest.py's data, whose CT series it
shares) a CT series of COUNT single-frame SIZE x SIZE 16-bit phantom slices, half of it, the
same COUNT files spread over STUDIES studies (one series each: Study and Series Instance UIDs
changed with dcmodify), and a series of MULTIFRAME-INSTANCES instances of FRAMES such frames
(about 50 MB each by default). Each set is ingested with `mkdicomweb -o STORE INPUT` (default
options) and copied with `cp -r`. Then for each case, RUNS times, alternating the new value so
that every run changes it, each after a `sync`:
- ours: `mkdicomwebupdate -o STORE -patient BENCH PatientName=...` (or `-study UID
  StudyDescription=...`), a fresh process timed from spawn to exit;
- the baseline: one `find COPY -name '*.dcm' -exec dcmodify -nb -m "(0010,0010)=..." {} +` over
  the copy (read once before the first run, so that the page cache is warm), which rewrites
  every file, pixels included; then `sync`, timed apart: our command makes its writes durable
  before it exits (fsync of the objects it staged, then of its journal), dcmodify leaves them in
  the page cache, so "dcmodify + sync" is the like-for-like baseline.
Prints the medians and dcmodify / ours, and (dcmodify + sync) / ours (goals of issue 12: at
least 3x for the 1000-slice rename, 20x for the multi-frame one); the peak RSS of our process
(its own ru_maxrss, see LAUNCHER); and the objects the edit wrote: files of the store created or
changed (inode, mtime or size), the private index directory excepted. That count must grow with
the studies and series an edit touches, never with its instances. Also the median CPU time
(user + system) of each command and their ratio: on a machine busy with other work the wall
times come out at random, the CPU times hardly move (dcmodify's work is mostly CPU too: the
files are in the page cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pydicom  # noqa: E402
from tests.factory import uid, write_ct  # noqa: E402

from bench.ingest import RECENTLY_DELETED_SECONDS, fresh, generate  # noqa: E402

#: Spawns argv[2:] with its output in the file argv[1], waits, and prints the seconds from spawn
#: to exit, the child's ru_maxrss in KiB, its exit code and its CPU seconds (user + system, its
#: own children's included). The launcher is small on purpose: a
#: child's ru_maxrss includes the peak of the process it was spawned from (Linux keeps it across
#: exec), and this benchmark's own process holds numpy and pydicom.
LAUNCHER = """
import os, sys, time
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
actions = [(os.POSIX_SPAWN_OPEN, 1, sys.argv[1], flags, 0o644), (os.POSIX_SPAWN_DUP2, 1, 2)]
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
cpu = usage.ru_utime + usage.ru_stime
print(seconds, usage.ru_maxrss, os.waitstatus_to_exitcode(status), cpu)
"""
#: The store's private index directory (SQLite): not objects of the store.
PRIVATE_LOCAL = ".dicomweb-archive/local/"
PATIENT_ID = "BENCH"

Snapshot = dict[str, tuple[int, int, int]]


@dataclass
class Case:
    label: str
    source: Path  #: the P10 files
    goal: float | None = None  #: the dcmodify / ours ratio to reach
    level: str = "patient"  #: or "study"
    target: str = PATIENT_ID  #: the PatientID or StudyInstanceUID
    keyword: str = "PatientName"  #: the attribute edited
    tag: str = "(0010,0010)"  #: the same, as dcmodify names it
    value: str = "RENAMED^"  #: the new value, less the A or B that alternates between runs


@dataclass
class Result:
    ours: float
    theirs: float
    theirs_durable: float  #: dcmodify, then sync
    ours_cpu: float  #: CPU seconds (user + system)
    theirs_cpu: float
    peak_rss_mb: float
    objects: int


def launch(command: list[str], log: Path) -> tuple[float, int, float]:
    """Seconds from spawn to exit of ``command`` (a fresh process), its peak RSS in KiB and its
    CPU seconds."""
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(log), *command],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()[-2000:]}")
    return float(out[0]), int(out[1]), float(out[3])


def snapshot(store: Path) -> Snapshot:
    """Every file of the store but the private index: path -> (inode, mtime_ns, size)."""
    files = {}
    for folder, _dirs, names in os.walk(store):
        for name in names:
            path = Path(folder, name)
            key = path.relative_to(store).as_posix()
            if not key.startswith(PRIVATE_LOCAL):
                info = path.stat()
                files[key] = (info.st_ino, info.st_mtime_ns, info.st_size)
    return files


def written(before: Snapshot, after: Snapshot) -> int:
    """How many files were created or changed between two snapshots."""
    return sum(1 for key, value in after.items() if before.get(key) != value)


def generate_spread(workdir: Path, ct: Path, studies: int) -> Path:
    """The files of ``ct`` spread over ``studies`` studies of one series each (the same
    instances and pixels, other Study and Series Instance UIDs)."""
    spread = workdir / f"{ct.name}-{studies}-studies"
    if spread.exists():
        return spread
    partial = workdir / f"{spread.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(ct, partial)
    files = sorted(partial.iterdir())
    for number in range(studies):
        group = files[number * len(files) // studies : (number + 1) * len(files) // studies]
        subprocess.run(
            [
                "dcmodify",
                "-nb",
                "-m",
                f"StudyInstanceUID={uid(f'78.{number}')}",
                "-m",
                f"SeriesInstanceUID={uid(f'78.{number}.1')}",
                *map(str, group),
            ],
            check=True,
            capture_output=True,
        )
    partial.rename(spread)
    return spread


def generate_multiframe(workdir: Path, instances: int, frames: int, size: int) -> Path:
    """A series of ``instances`` multi-frame phantom CT instances of ``frames`` frames."""
    series = workdir / f"multiframe-series-phantom-{instances}x{frames}x{size}"
    if series.exists():
        return series
    partial = workdir / f"{series.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for number in range(1, instances + 1):
        write_ct(
            partial / f"MF{number:05d}.dcm",
            study=uid("79.1"),
            series=uid("79.2"),
            sop=uid(f"79.3.{number}"),
            patient_id=PATIENT_ID,
            instance_number=number,
            frames=frames,
            rows=size,
            columns=size,
            seed=number * frames,
            realistic=True,
        )
    partial.rename(series)
    return series


def ingested(source: Path, scratch: Path) -> Path:
    """A new store made from ``source`` by `mkdicomweb` (default options)."""
    store = fresh(scratch, "store")
    store.parent.mkdir(parents=True, exist_ok=True)
    command = Path(sys.executable).with_name("mkdicomweb")
    subprocess.run([str(command), "-o", str(store), str(source)], check=True, capture_output=True)
    return store


def warm(copy: Path) -> None:
    """Read every file of ``copy`` once: the baseline starts from the page cache."""
    for path in copy.iterdir():
        path.read_bytes()


def measure(case: Case, store: Path, copy: Path, runs: int, log: Path) -> Result:
    """Median over ``runs`` of our edit and of dcmodify's, alternately, each after a sync;
    the peak RSS and the objects written are the largest over the runs."""
    update = Path(sys.executable).with_name("mkdicomwebupdate")
    dcmodify = shutil.which("dcmodify")
    ours, theirs, durable, peaks, objects = [], [], [], [], []
    ours_cpu, theirs_cpu = [], []
    for run in range(runs):
        value = f"{case.value}{'AB'[run % 2]}"
        before = snapshot(store)
        subprocess.run(["sync"], check=True)
        seconds, peak, cpu = launch(
            [
                str(update),
                "-o",
                str(store),
                f"-{case.level}",
                case.target,
                f"{case.keyword}={value}",
            ],
            log,
        )
        ours.append(seconds)
        ours_cpu.append(cpu)
        peaks.append(peak)
        objects.append(written(before, snapshot(store)))
        subprocess.run(["sync"], check=True)
        seconds, _peak, cpu = launch(
            [
                "/bin/sh",
                "-c",
                f"find '{copy}' -name '*.dcm' "
                f"-exec '{dcmodify}' -nb -m '{case.tag}={value}' {{}} +",
            ],
            log,
        )
        theirs.append(seconds)
        theirs_cpu.append(cpu)
        start = time.perf_counter()
        subprocess.run(["sync"], check=True)
        durable.append(seconds + time.perf_counter() - start)
    return Result(
        ours=statistics.median(ours),
        theirs=statistics.median(theirs),
        theirs_durable=statistics.median(durable),
        ours_cpu=statistics.median(ours_cpu),
        theirs_cpu=statistics.median(theirs_cpu),
        peak_rss_mb=max(peaks) / 1024,
        objects=max(objects),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--multiframe-instances", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-multiframe", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dwa-bench")
    args = parser.parse_args()
    if shutil.which("dcmodify") is None:
        raise SystemExit("dcmodify (DCMTK) is needed for the baseline: apt-get install dcmtk")
    args.workdir.mkdir(parents=True, exist_ok=True)
    # (bench/ingest.py's one-instance multi-frame set is not used here: one frame, the smallest)
    ct, half, _multi = generate(args.workdir, args.count, 1, args.size)
    studies = min(args.studies, args.count)
    spread = generate_spread(args.workdir, ct, studies)
    first = min(ct.iterdir())
    study = str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
    pixels = f"{args.size}^2"
    cases = [
        Case(f"patient rename, CT {args.count} x {pixels}", ct, goal=3),
        Case(f"patient rename, CT {args.count // 2} x {pixels}", half),
        Case(f"patient rename, CT {args.count} x {pixels} in {studies} studies", spread),
        Case(
            f"study edit, CT {args.count} x {pixels}",
            ct,
            level="study",
            target=study,
            keyword="StudyDescription",
            tag="(0008,1030)",
            value="EDITED ",
        ),
    ]
    if not args.skip_multiframe:
        multi = generate_multiframe(args.workdir, args.multiframe_instances, args.frames, args.size)
        label = (
            f"patient rename, multi-frame {args.multiframe_instances} x {args.frames} x {pixels}"
        )
        cases.append(Case(label, multi, goal=20))
    # stores and copies go to their own runs folder: bench/ingest.py, which may run at the same
    # time on the same work directory, deletes its runs folder at its start and end
    scratch = args.workdir / "update"
    if (scratch / "runs").exists():  # left by an interrupted run: let ext4 forget it
        shutil.rmtree(scratch / "runs")
        time.sleep(RECENTLY_DELETED_SECONDS)
    stores: dict[Path, Path] = {}
    copies: dict[Path, Path] = {}
    results = []
    for case in cases:
        if case.source not in stores:
            stores[case.source] = ingested(case.source, scratch)
            copies[case.source] = fresh(scratch, "copy")
            subprocess.run(["cp", "-r", str(case.source), str(copies[case.source])], check=True)
            warm(copies[case.source])
        log = fresh(scratch, "log")
        results.append(measure(case, stores[case.source], copies[case.source], args.runs, log))
    print(
        "| case | instances | ours s | dcmodify s | dcmodify / ours | dcmodify + sync s "
        "| (dcmodify + sync) / ours | goal | peak RSS MB | objects written "
        "| ours CPU s | dcmodify CPU s | CPU: dcmodify / ours |"
    )
    print(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    for case, r in zip(cases, results, strict=True):
        ratio = r.theirs / r.ours
        goal = (
            ""
            if case.goal is None
            else f">= {case.goal:g}x: {_met(ratio >= case.goal)}, durable: "
            f"{_met(r.theirs_durable / r.ours >= case.goal)}"
        )
        instances = sum(1 for _ in case.source.iterdir())
        print(
            f"| {case.label} | {instances} | {r.ours:.2f} | {r.theirs:.2f} | {ratio:.1f}x | "
            f"{r.theirs_durable:.2f} | {r.theirs_durable / r.ours:.1f}x | "
            f"{goal} | {r.peak_rss_mb:.0f} | {r.objects} | {r.ours_cpu:.2f} | "
            f"{r.theirs_cpu:.2f} | {r.theirs_cpu / r.ours_cpu:.1f}x |"
        )
    shutil.rmtree(scratch)


def _met(yes: bool) -> str:
    return "met" if yes else "NOT met"


if __name__ == "__main__":
    main()

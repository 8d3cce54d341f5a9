"""De-identification benchmark: `dicomweb-archive anonymize` of a whole store (into a new store,
and in place) against a pydicom rewriting of the same P10 files, in the same run.

Usage: python bench/deidentify.py [--instances 100] [--size 512] [--runs 1] [--workdir DIR]

Generates (once, cached in the work directory like bench/ingest.py's data, whose CT series it
shares) a CT series of INSTANCES single-frame SIZE x SIZE 16-bit phantom slices, ingests it with
`mkdicomweb -o STORE INPUT` (default options), and then, RUNS times, each after a `sync`:
- ours, into a new store: `dicomweb-archive anonymize -o STORE --all --out NEW --key-file KEY`;
- ours, in place: the same on a copy of the store (`cp -a`, not timed) with `--in-place`
  (one revertible change: the originals are set aside, not deleted);
- the baseline: a fresh Python process that, for each file, `pydicom.dcmread`s it, applies the
  same PS3.15 Table E.1-1 Basic Profile actions (``model.deid.Profile.action``: remove, empty,
  dummy value, keyed UID; private attributes removed, in sequences too), adds Patient Identity
  Removed and De-identification Method, and `save_as`es it into a new folder (pixels read and
  written whole, as such scripts do). It keeps no history, writes no index and no report.
Each is a fresh process timed from spawn to exit (start-up included). Prints the medians, the
instances per second and pydicom / ours (seconds), and the peak RSS of our process.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import RECENTLY_DELETED_SECONDS, fresh, generate  # noqa: E402
from bench.update import ingested, launch  # noqa: E402

#: The baseline, run as ``python -c BASELINE SOURCE TARGET KEY_FILE``.
BASELINE = """
import sys
from pathlib import Path
import pydicom
from dicomweb_archive.model.deid import DEIDENTIFICATION_METHOD, DUMMY, Profile

source, target = Path(sys.argv[1]), Path(sys.argv[2])
profile = Profile(key=Path(sys.argv[3]).read_bytes())

def clean(dataset):
    for element in list(dataset):
        tag, vr = int(element.tag), element.VR
        action = profile.action(tag, vr)
        if action == "X" or (action in ("D", "C") and vr not in DUMMY and vr != "SQ"):
            del dataset[element.tag]
        elif vr == "SQ" and action in ("Z", "D", "C"):
            element.value = []
        elif vr == "SQ":
            for item in element.value:
                clean(item)
        elif action == "Z":
            element.value = ""
        elif action in ("D", "C"):
            element.value = DUMMY[vr]
        elif action == "U" and vr == "UI":
            element.value = profile.uid(str(element.value))

target.mkdir(parents=True)
for path in sorted(source.iterdir()):
    ds = pydicom.dcmread(path)
    clean(ds)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(target / path.name, enforce_file_format=True)
"""


def measure(source: Path, store: Path, key: Path, scratch: Path, runs: int) -> dict[str, float]:
    """Medians over ``runs`` of the three cases (seconds), and our largest peak RSS (MB)."""
    command = str(Path(sys.executable).with_name("dicomweb-archive"))
    anonymize = [command, "anonymize", "--all", "--key-file", str(key)]
    times: dict[str, list[float]] = {"new": [], "in place": [], "pydicom": []}
    peaks = []
    for _run in range(runs):
        log = fresh(scratch, "log")
        subprocess.run(["sync"], check=True)
        seconds, peak, _cpu = launch(
            [*anonymize, "-o", str(store), "--out", str(fresh(scratch, "out"))], log
        )
        times["new"].append(seconds)
        peaks.append(peak)
        copy = fresh(scratch, "copy")
        subprocess.run(["cp", "-a", str(store), str(copy)], check=True)
        subprocess.run(["sync"], check=True)
        seconds, peak, _cpu = launch([*anonymize, "-o", str(copy), "--in-place"], log)
        times["in place"].append(seconds)
        peaks.append(peak)
        subprocess.run(["sync"], check=True)
        target = fresh(scratch, "pydicom")
        baseline = [sys.executable, "-c", BASELINE, str(source), str(target), str(key)]
        seconds, _peak, _cpu = launch(baseline, log)
        times["pydicom"].append(seconds)
    out = {name: statistics.median(values) for name, values in times.items()}
    out["peak_rss_mb"] = max(peaks) / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dwa-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ct, _half, _multi = generate(args.workdir, args.instances, 1, args.size)
    # stores go to their own runs folder: bench/ingest.py, which may run at the same time on
    # the same work directory, deletes its runs folder at its start and end
    scratch = args.workdir / "deidentify"
    if (scratch / "runs").exists():  # left by an interrupted run: let ext4 forget it
        shutil.rmtree(scratch / "runs")
        time.sleep(RECENTLY_DELETED_SECONDS)
    key = scratch / "key"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(secrets.token_bytes(32))
    store = ingested(ct, scratch)
    r = measure(ct, store, key, scratch, args.runs)
    instances = sum(1 for _ in ct.iterdir())
    print(f"CT {instances} x {args.size}^2, median of {args.runs} run(s), start-up included")
    print("| case | seconds | instances/s | pydicom / ours |")
    print("| --- | ---: | ---: | ---: |")
    for name, label in (
        ("new", "anonymize --out (new store)"),
        ("in place", "anonymize --in-place"),
        ("pydicom", "pydicom dcmread + save_as"),
    ):
        ratio = r["pydicom"] / r[name]
        print(f"| {label} | {r[name]:.2f} | {instances / r[name]:.0f} | {ratio:.2f}x |")
    print(f"peak RSS of anonymize: {r['peak_rss_mb']:.0f} MB")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()

"""Start-up benchmark: wall time of each console command's `--version`, `--help` and first real
work, against the interpreter's own floor (`python -c pass`) and DCMTK's `dcmdump`, in the same
run.

Usage: python bench/startup.py [--runs 7] [--workdir DIR]

Compiles `src` once (`python -m compileall -q src`: byte-code is warm), makes a one-instance
store with `mkdicomweb`, then runs each command RUNS times in a fresh process (after one run
that is not counted), with PYTHONDONTWRITEBYTECODE=1, and reports the median wall time from
spawn to exit:
- the baselines: `python -c pass` with this interpreter, `dcmdump --version` and `dcmdump` of
  the store's one input file;
- `--version` and `--help` of every console script (goal of issue 12: under 150 ms);
- the start of real work on the tiny store: `dicomweb-archive studies`, a `mkdicomwebupdate`
  patient rename with --dry-run and `dicomweb-archive verify` (goal: under 300 ms).
Prints a Markdown table with pass or fail per row, the ratio to `python -c pass`, and each
command's median CPU time (user + system), which other work on the machine hardly moves.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factory import write_series  # noqa: E402

SCRIPTS = (
    "dicomweb-archive",
    "mkdicomweb",
    "mkdicomwebinstances",
    "mkdicomwebdeduplicated",
    "mkdicomwebdeduplicatedgroup",
    "mkdicomwebstudy",
    "mkdicomwebpart10",
    "mkdicomwebupdate",
)
OPTION_GOAL_MS = 150
WORK_GOAL_MS = 300
PATIENT_ID = "BENCH"


def script(name: str) -> str:
    """The console script ``name`` installed beside this interpreter."""
    return str(Path(sys.executable).with_name(name))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_ms(command: list[str], runs: int, env: dict[str, str]) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of ``command`` in ms over ``runs``
    fresh processes, after one more run that is not counted (and must succeed). On a machine
    busy with other work the CPU time still says what the command costs; its wall time does
    not."""
    times, cpu = [], []
    for run in range(runs + 1):
        start, used = time.perf_counter(), _children_cpu()
        subprocess.run(
            command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if run:
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((_children_cpu() - used) * 1000)
    return statistics.median(times), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dwa-bench")
    args = parser.parse_args()
    dcmdump = shutil.which("dcmdump")
    if dcmdump is None:
        raise SystemExit("dcmdump (DCMTK) is needed for the baseline: apt-get install dcmtk")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True)
    work = args.workdir / "startup"
    shutil.rmtree(work, ignore_errors=True)
    (instance,) = write_series(
        work / "input", count=1, rows=16, columns=16, patient_id=PATIENT_ID, realistic=True
    )
    store = str(work / "store")
    subprocess.run(
        [script("mkdicomweb"), "-o", store, str(work / "input")], check=True, capture_output=True
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    # (label, command, goal in ms: None for a baseline)
    rows: list[tuple[str, list[str], int | None]] = [
        ("python -c pass", [sys.executable, "-c", "pass"], None),
        ("dcmdump --version", [dcmdump, "--version"], None),
        ("dcmdump FILE (one 16x16 instance)", [dcmdump, str(instance)], None),
    ]
    rows += [
        (f"{name} {option}", [script(name), option], OPTION_GOAL_MS)
        for name in SCRIPTS
        for option in ("--version", "--help")
    ]
    rows += [
        (
            "dicomweb-archive studies -o STORE",
            [script("dicomweb-archive"), "studies", "-o", store],
            WORK_GOAL_MS,
        ),
        (
            f"mkdicomwebupdate -o STORE -patient {PATIENT_ID} PatientName=Y --dry-run",
            [
                script("mkdicomwebupdate"),
                "-o",
                store,
                "-patient",
                PATIENT_ID,
                "PatientName=Y",
                "--dry-run",
            ],
            WORK_GOAL_MS,
        ),
        (
            "dicomweb-archive verify -o STORE (1 instance)",
            [script("dicomweb-archive"), "verify", "-o", store],
            WORK_GOAL_MS,
        ),
    ]
    measured = [(label, *median_ms(command, args.runs, env), goal) for label, command, goal in rows]
    floor = measured[0][1]  # python -c pass
    print("| command | median ms | goal ms | result | vs python -c pass | median CPU ms |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for label, ms, cpu_ms, goal in measured:
        if goal is None:
            verdict, limit = "baseline", ""
        else:
            verdict, limit = ("pass" if ms < goal else "FAIL"), f"< {goal}"
        print(f"| {label} | {ms:.0f} | {limit} | {verdict} | {ms / floor:.1f}x | {cpu_ms:.0f} |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

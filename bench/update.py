"""Patient rename across N studies: mkdicomwebupdate against `dcmodify` on the P10 files.

Usage: python bench/update.py [--studies 1,10] [--instances 100] [--sizes 64,512]

For each number of studies and pixel size, generates N studies of one patient (each of
INSTANCES slices), ingests them, then times, in the same run:
- `update(archive, "patient", ...)`: the metadata-only rename (journal, history, stages);
- `dcmodify -nb -m (0010,0010)=...` over a copy of the original P10 files (the baseline:
  DCMTK rewrites every file, pixels included).
The update time must not grow with the pixel size; dcmodify's does.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factory import uid, write_series  # noqa: E402

from dicomweb_archive import Archive, ingest  # noqa: E402
from dicomweb_archive.ops.update import update  # noqa: E402


def run(work: Path, studies: int, instances: int, size: int) -> tuple[float, float]:
    inputs = work / f"in-{studies}-{size}"
    for number in range(studies):
        write_series(
            inputs / f"s{number}",
            count=instances,
            study=uid(f"9.{size}.{number}"),
            series=uid(f"9.{size}.{number}.1"),
            rows=size,
            columns=size,
            patient_id="BENCH",
        )
    store = work / f"store-{studies}-{size}"
    with Archive.open_or_create(store) as archive:
        assert ingest(archive, [inputs]).ok
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    with Archive.open(store) as archive:  # opened in the timed run, as the command does
        update(archive, "patient", "BENCH", ["PatientName=RENAMED^PATIENT"])
    ours = time.perf_counter() - start
    copy = work / f"copy-{studies}-{size}"
    shutil.copytree(inputs, copy)
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    subprocess.run(
        f"find {copy} -name '*.dcm' -exec dcmodify -nb -m '(0010,0010)=RENAMED^PATIENT' {{}} +",
        shell=True,
        check=True,
        capture_output=True,
    )
    theirs = time.perf_counter() - start
    for path in (inputs, store, copy):
        shutil.rmtree(path)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default="1,10")
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--sizes", default="64,512")
    args = parser.parse_args()
    if shutil.which("dcmodify") is None:
        raise SystemExit("dcmodify (DCMTK) is needed: apt-get install dcmtk")
    print(
        "| studies | instances | pixels | update s | instances/s | dcmodify s | dcmodify / update |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as work:
        for studies in (int(n) for n in args.studies.split(",")):
            for size in (int(n) for n in args.sizes.split(",")):
                ours, theirs = run(Path(work), studies, args.instances, size)
                count = studies * args.instances
                print(
                    f"| {studies} | {count} | {size}x{size} | {ours:.2f} | {count / ours:.0f} | "
                    f"{theirs:.2f} | {theirs / ours:.1f}x |"
                )


if __name__ == "__main__":
    main()

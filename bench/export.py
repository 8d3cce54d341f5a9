"""Export and verify benchmark: against `cat` of the original files, in the same run.

Usage: python bench/export.py [--count 500] [--size 512] [--workdir DIR]

Ingests the generated CT set twice (cached like bench/ingest.py's): frames as received
(--no-recompress) and recompressed to JPEG-LS (the default). Then measures, each the median of
three runs after a `sync`:
- `cat` of all original files into one output file (reads and writes the same bytes);
- `export` of the whole study to a directory (rebuild from the store, decoding recompressed
  frames back to the original bytes, hash, atomic writes), for each store;
- `verify` of the whole store (rebuild and hash every instance, check every derived file).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import RECENTLY_DELETED_SECONDS, fresh, generate  # noqa: E402
from dicomweb_archive import Archive, PipelineOptions, Recompression, ingest  # noqa: E402
from dicomweb_archive.errors import NotAStoreError  # noqa: E402
from dicomweb_archive.ops.export import Selection, export  # noqa: E402
from dicomweb_archive.ops.verify import verify  # noqa: E402
from dicomweb_archive.store.keys import STUDIES_INDEX  # noqa: E402

REPEATS = 3


def timed(action: Callable[[], None]) -> float:
    times = []
    for _ in range(REPEATS):
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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

    cat_s = timed(cat)
    rows = [("cat", cat_s)]
    for name, store in stores.items():
        rows.append((f"export, frames {name}", timed(functools.partial(run_export, store))))
        rows.append((f"verify, frames {name}", timed(functools.partial(run_verify, store))))
    mb = size / 1e6
    print("| operation | seconds | MB/s | instances/s | vs cat |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.2f} | {mb / seconds:.0f} | {len(files) / seconds:.0f} | "
            f"{seconds / cat_s:.1f}x |"
        )
    shutil.rmtree(args.workdir / "runs")


if __name__ == "__main__":
    main()

"""QIDO-RS latency at scale: an index of 1,000,000 synthetic instances (100,000 studies of 2
series of 5 instances), searched on SQLite and on PostgreSQL.

Usage: python bench/qido.py [--studies 100000] [--queries 200] [--skip-postgres]

Fills each index through the index protocol (``replace_studies``, 1,000 studies per
transaction) with rows as ingest makes them (query objects included), then runs QUERIES
searches of each kind with random values and reports p50/p95 in milliseconds: study search by
PatientName wildcard (``SMITH*``), StudyDate range (one month), ModalitiesInStudy, exact
AccessionNumber, and the series and instances of one study; the first page of 100, as viewers
ask. PostgreSQL is a server this script starts from Debian's binaries (``tests/pgserver.py``).
Target: p95 under 50 ms for every kind.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pgserver import binaries, postgres_server  # noqa: E402

from dicomweb_archive.index.conditions import All, Match  # noqa: E402
from dicomweb_archive.index.protocol import StudyUpdate  # noqa: E402
from dicomweb_archive.index.sql import SqlIndex  # noqa: E402
from dicomweb_archive.index.sqlite import SQLiteIndex  # noqa: E402

SURNAMES = ["SMITH", "JONES", "GARCIA", "MUELLER", "ROSSI", "DUBOIS", "TANAKA", "SILVA", "NOVAK"]
MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "PT", "NM", "XA", "OT"]
ROOT_UID = "1.2.826.0.1.3680043.8.498."
PAGE = 100
SERIES = 2
INSTANCES = 5


def _value(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}


def study_update(n: int, rng: random.Random) -> StudyUpdate:
    """Study ``n``: :data:`SERIES` series of :data:`INSTANCES` instances, rows as
    ``index/rows.py`` makes them."""
    study = f"{ROOT_UID}1.{n}"
    patient = f"P{n // 3}"
    name = f"{rng.choice(SURNAMES)}^{rng.choice(SURNAMES)}{n % 97}"
    date = f"{rng.randint(2005, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    modalities = sorted(set(rng.sample(MODALITIES, rng.randint(1, 2))))
    query = {
        "0020000D": _value("UI", study),
        "00100020": _value("LO", patient),
        "00100010": _value("PN", {"Alphabetic": name}),
        "00080020": _value("DA", date),
        "00080050": _value("SH", f"A{n:08d}"),
        "00080061": {"vr": "CS", "Value": modalities},
    }
    study_row = {
        "study_instance_uid": study,
        "patient_id": patient,
        "patient_name": name,
        "patient_birth_date": "19700101",
        "patient_sex": "O",
        "study_date": date,
        "study_time": "120000",
        "accession_number": f"A{n:08d}",
        "study_id": "1",
        "study_description": "Synthetic",
        "referring_physician_name": None,
        "modalities_in_study": "\\".join(modalities),
        "number_of_series": SERIES,
        "number_of_instances": SERIES * INSTANCES,
        "path": f"studies/{study}",
        "query_json": query,
    }
    series_rows, instance_rows = [], []
    for s in range(SERIES):
        series = f"{ROOT_UID}2.{n}.{s}"
        series_query = {"0020000E": _value("UI", series), "00080060": _value("CS", modalities[0])}
        series_rows.append(
            {
                "series_instance_uid": series,
                "study_instance_uid": study,
                "modality": modalities[0],
                "series_number": s + 1,
                "series_description": None,
                "series_date": date,
                "number_of_instances": INSTANCES,
                "path": f"studies/{study}/series/{series}",
                "query_json": series_query,
            }
        )
        for i in range(INSTANCES):
            sop = f"{ROOT_UID}3.{n}.{s}.{i}"
            instance_rows.append(
                {
                    "sop_instance_uid": sop,
                    "series_instance_uid": series,
                    "study_instance_uid": study,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                    "instance_number": i + 1,
                    "rows": 512,
                    "columns": 512,
                    "number_of_frames": 1,
                    "original_transfer_syntax_uid": "1.2.840.10008.1.2.1",
                    "stored_transfer_syntax_uid": "1.2.840.10008.1.2.4.80",
                    "original_sha256": f"{n:032x}{s:016x}{i:016x}",
                    "original_size": 525000,
                    "path": f"studies/{study}/series/{series}/instances/{sop}",
                    "query_json": {"00080018": _value("UI", sop)},
                    "nonconformant_uid": 0,
                    "incomplete": 0,
                }
            )
    return study, study_row, series_rows, instance_rows


def fill(index: SqlIndex, studies: int) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    for first in range(0, studies, 1000):
        index.replace_studies(
            study_update(n, rng) for n in range(first, min(first + 1000, studies))
        )
    return time.perf_counter() - started


def queries(studies: int, count: int) -> Iterator[tuple[str, str, All]]:
    rng = random.Random(11)
    for _ in range(count):
        yield (
            "PatientName=SMITH*",
            "study",
            All((Match("study", "patient_name", "person", "SMITH*"),)),
        )
        year, month = rng.randint(2005, 2025), rng.randint(1, 12)
        span = f"{year}{month:02d}01-{year}{month:02d}31"
        yield "StudyDate range", "study", All((Match("study", "study_date", "date", span),))
        modality = rng.choice(MODALITIES)
        yield (
            "ModalitiesInStudy",
            "study",
            All((Match("study", "modalities_in_study", "list", modality),)),
        )
        accession = f"A{rng.randrange(studies):08d}"
        yield (
            "AccessionNumber",
            "study",
            All((Match("study", "accession_number", "text", accession),)),
        )
        study = f"{ROOT_UID}1.{rng.randrange(studies)}"
        one = All((Match("study", "study_instance_uid", "exact", study),))
        yield "series of a study", "series", one
        yield "instances of a study", "instance", one


def measure(index: SqlIndex, studies: int, count: int) -> dict[str, tuple[float, float]]:
    times: dict[str, list[float]] = {}
    for name, level, condition in queries(studies, count):
        started = time.perf_counter()
        index.search(level, condition, limit=PAGE)
        times.setdefault(name, []).append((time.perf_counter() - started) * 1000)
    return {
        name: (statistics.median(values), statistics.quantiles(values, n=20)[18])
        for name, values in times.items()
    }


def report(label: str, seconds: float, results: dict[str, tuple[float, float]]) -> None:
    print(f"\n{label}: filled in {seconds:.0f} s")
    print("| search | p50 ms | p95 ms | p95 < 50 ms |")
    print("| --- | ---: | ---: | --- |")
    for name, (p50, p95) in results.items():
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {'yes' if p95 < 50 else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    instances = args.studies * SERIES * INSTANCES
    with tempfile.TemporaryDirectory() as work:
        index = SQLiteIndex(Path(work) / "index.sqlite")
        seconds = fill(index, args.studies)
        report(
            f"SQLite, {instances:,} instances", seconds, measure(index, args.studies, args.queries)
        )
        index.close()
    if args.skip_postgres or binaries() is None:
        print("\nPostgreSQL: skipped")
        return
    from dicomweb_archive.index.postgres import PostgresIndex

    with postgres_server() as url:
        pg = PostgresIndex(f"{url}?schema=bench")
        seconds = fill(pg, args.studies)
        report(
            f"PostgreSQL, {instances:,} instances", seconds, measure(pg, args.studies, args.queries)
        )


if __name__ == "__main__":
    main()

"""The SQLite index over a store (sqlite-utils, WAL mode, schema as ordered migrations).

The index answers queries fast; the files are the truth. ``reindex`` rebuilds it from them.
Every change is one transaction, so a reader (in WAL mode, never blocked) sees a study's rows
before or after an ingest, never half of it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlite_utils

Row = dict[str, Any]
#: (StudyInstanceUID, study row or None, series rows, instance rows)
StudyUpdate = tuple[str, Row | None, list[Row], list[Row]]

#: Ordered schema migrations; the database's ``user_version`` counts those applied.
#: The SQL text is mirrored in ``schema/index.sql`` (a test keeps them equal).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE patients (
        patient_id TEXT PRIMARY KEY,
        patient_name TEXT,
        patient_birth_date TEXT,
        patient_sex TEXT,
        number_of_studies INTEGER NOT NULL
    );
    CREATE TABLE studies (
        study_instance_uid TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL REFERENCES patients(patient_id),
        patient_name TEXT,
        patient_birth_date TEXT,
        patient_sex TEXT,
        study_date TEXT,
        study_time TEXT,
        accession_number TEXT,
        study_id TEXT,
        study_description TEXT,
        referring_physician_name TEXT,
        modalities_in_study TEXT,
        number_of_series INTEGER,
        number_of_instances INTEGER,
        path TEXT NOT NULL,
        query_json TEXT NOT NULL
    );
    CREATE INDEX studies_patient_id ON studies(patient_id);
    CREATE INDEX studies_study_date ON studies(study_date);
    CREATE TABLE series (
        series_instance_uid TEXT PRIMARY KEY,
        study_instance_uid TEXT NOT NULL REFERENCES studies(study_instance_uid),
        modality TEXT,
        series_number INTEGER,
        series_description TEXT,
        series_date TEXT,
        number_of_instances INTEGER,
        path TEXT NOT NULL,
        query_json TEXT NOT NULL
    );
    CREATE INDEX series_study ON series(study_instance_uid);
    CREATE TABLE instances (
        sop_instance_uid TEXT PRIMARY KEY,
        series_instance_uid TEXT NOT NULL REFERENCES series(series_instance_uid),
        study_instance_uid TEXT NOT NULL REFERENCES studies(study_instance_uid),
        sop_class_uid TEXT,
        instance_number INTEGER,
        rows INTEGER,
        columns INTEGER,
        number_of_frames INTEGER NOT NULL,
        original_transfer_syntax_uid TEXT NOT NULL,
        stored_transfer_syntax_uid TEXT NOT NULL,
        original_sha256 TEXT NOT NULL,
        original_size INTEGER NOT NULL,
        path TEXT NOT NULL,
        query_json TEXT NOT NULL
    );
    CREATE INDEX instances_series ON instances(series_instance_uid);
    CREATE INDEX instances_study ON instances(study_instance_uid);
    """,
    """
    CREATE TABLE audit (
        change_id TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        time TEXT NOT NULL,
        user TEXT NOT NULL,
        operation TEXT NOT NULL,
        level TEXT,
        target TEXT,
        reason TEXT,
        study_instance_uid TEXT,
        series_instance_uid TEXT,
        revision INTEGER,
        changes TEXT,
        before_sha256 TEXT,
        after_sha256 TEXT,
        PRIMARY KEY (change_id, sop_instance_uid)
    );
    CREATE INDEX audit_sop ON audit(sop_instance_uid);
    """,
)

TABLE_KEYS = {
    "patients": "patient_id",
    "studies": "study_instance_uid",
    "series": "series_instance_uid",
    "instances": "sop_instance_uid",
}


class Index:
    """The SQLite index of one store."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite_utils.Database(path)
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.db.enable_wal()
        self._migrate()

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        conn: sqlite3.Connection = self.db.conn
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with conn:
                conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")

    def find_instance(self, sop_instance_uid: str) -> Row | None:
        rows = list(
            self.db.query(
                "SELECT sop_instance_uid, series_instance_uid, study_instance_uid,"
                " original_sha256 FROM instances WHERE sop_instance_uid = ?",
                [sop_instance_uid],
            )
        )
        return rows[0] if rows else None

    def replace_studies(self, studies: Iterable[StudyUpdate], *, clear_first: bool = False) -> None:
        """Replace the rows of each given study in one transaction.

        Each tuple is (StudyInstanceUID, study row or None when the study is gone, series rows,
        instance rows). Patient rows are recomputed from the study rows. With ``clear_first``
        every table is emptied in the same transaction (reindex).
        """
        conn: sqlite3.Connection = self.db.conn
        with conn:
            if clear_first:
                for table in ("instances", "series", "studies", "patients"):
                    conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            patients: set[str] = set()
            for study_uid, study, series, instances in studies:
                for row in conn.execute(
                    "SELECT patient_id FROM studies WHERE study_instance_uid = ?", [study_uid]
                ):
                    patients.add(row[0])
                conn.execute("DELETE FROM instances WHERE study_instance_uid = ?", [study_uid])
                conn.execute("DELETE FROM series WHERE study_instance_uid = ?", [study_uid])
                conn.execute("DELETE FROM studies WHERE study_instance_uid = ?", [study_uid])
                if study is None:
                    continue
                patients.add(study["patient_id"])
                self._upsert_patient(conn, study)
                _insert(conn, "studies", [study])
                _insert(conn, "series", series)
                _insert(conn, "instances", instances)
            for patient_id in patients:
                self._refresh_patient(conn, patient_id)

    @staticmethod
    def _upsert_patient(conn: sqlite3.Connection, study: Row) -> None:
        conn.execute(
            "INSERT INTO patients (patient_id, patient_name, patient_birth_date, patient_sex,"
            " number_of_studies) VALUES (?, ?, ?, ?, 0) ON CONFLICT(patient_id) DO NOTHING",
            [
                study["patient_id"],
                study["patient_name"],
                study["patient_birth_date"],
                study["patient_sex"],
            ],
        )

    @staticmethod
    def _refresh_patient(conn: sqlite3.Connection, patient_id: str) -> None:
        """Patient attributes from the patient's study with the greatest UID (deterministic)."""
        latest = conn.execute(
            "SELECT patient_name, patient_birth_date, patient_sex, COUNT(*) OVER ()"
            " FROM studies WHERE patient_id = ? ORDER BY study_instance_uid DESC LIMIT 1",
            [patient_id],
        ).fetchone()
        if latest is None:
            conn.execute("DELETE FROM patients WHERE patient_id = ?", [patient_id])
            return
        conn.execute(
            "UPDATE patients SET patient_name = ?, patient_birth_date = ?, patient_sex = ?,"
            " number_of_studies = ? WHERE patient_id = ?",
            [*latest, patient_id],
        )

    def study_query_objects(self) -> list[Any]:
        """Every study's QIDO-RS object, in StudyInstanceUID order (studies/index.json.gz)."""
        return [
            json.loads(row["query_json"])
            for row in self.db.query("SELECT query_json FROM studies ORDER BY study_instance_uid")
        ]

    def studies(self) -> list[Row]:
        """Study rows for listing (without the JSON column)."""
        return list(
            self.db.query(
                "SELECT study_instance_uid, patient_id, patient_name, study_date,"
                " study_description, modalities_in_study, number_of_series,"
                " number_of_instances FROM studies ORDER BY study_date, study_instance_uid"
            )
        )

    def add_audit(self, rows: Iterable[Row]) -> int:
        """Append audit records (from the append-only audit.jsonl); existing ones are kept."""
        conn: sqlite3.Connection = self.db.conn
        with conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO audit (change_id, sop_instance_uid, time, user, operation,"
                " level, target, reason, study_instance_uid, series_instance_uid, revision,"
                " changes, before_sha256, after_sha256)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [
                        row["change_id"],
                        row["sop"],
                        row["time"],
                        row["user"],
                        row["operation"],
                        row.get("level"),
                        row.get("target"),
                        row.get("reason"),
                        row.get("study"),
                        row.get("series"),
                        row.get("revision"),
                        json.dumps(row.get("changes", [])),
                        row.get("before_sha256"),
                        row.get("after_sha256"),
                    ]
                    for row in rows
                ],
            )
            return conn.total_changes - before

    def audit(self, sop_instance_uid: str | None = None) -> list[Row]:
        """Audit records, oldest first (all, or of one instance)."""
        sql = "SELECT * FROM audit"
        args: list[Any] = []
        if sop_instance_uid is not None:
            sql += " WHERE sop_instance_uid = ?"
            args.append(sop_instance_uid)
        return list(self.db.query(sql + " ORDER BY time, change_id, sop_instance_uid", args))

    def counts(self) -> dict[str, int]:
        return {
            table: int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in TABLE_KEYS
        }

    def study_dump(self, study_instance_uid: str) -> dict[str, list[Row]]:
        """Every row of one study's studies, series and instances tables."""
        return {
            table: list(
                self.db.query(
                    f"SELECT * FROM {table} WHERE study_instance_uid = ?"  # noqa: S608 - ours
                    f" ORDER BY {TABLE_KEYS[table]}",
                    [study_instance_uid],
                )
            )
            for table in ("studies", "series", "instances")
        }

    def dump(self) -> dict[str, list[Row]]:
        """Every row of every table, in key order (for comparisons)."""
        return {
            table: list(self.db.query(f"SELECT * FROM {table} ORDER BY {key}"))  # noqa: S608
            for table, key in TABLE_KEYS.items()
        }


def _insert(conn: sqlite3.Connection, table: str, rows: list[Row]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608 - names are ours
        f" VALUES ({', '.join('?' for _ in columns)})"
    )
    conn.executemany(sql, [[_column(row[c]) for c in columns] for row in rows])


def _column(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value

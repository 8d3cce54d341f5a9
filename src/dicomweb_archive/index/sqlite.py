"""The SQLite index backend (Python's sqlite3, WAL mode, schema as ordered migrations).

Implements :class:`~dicomweb_archive.index.protocol.Index`. Every change is one transaction, so
a reader (in WAL mode, never blocked) sees a study's rows before or after a change, never half
of it. Query conditions (``index/conditions.py``) are rendered here as SQLite SQL with bound
values. A store on local disk keeps its index in ``.dicomweb-archive/local/index.sqlite``; a
memory store in a named in-memory database.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from dicomweb_archive.index.conditions import All, Match
from dicomweb_archive.index.protocol import Row, StudyUpdate
from dicomweb_archive.index.schema import MIGRATIONS, REBUILDS

TABLE_KEYS = {
    "patients": "patient_id",
    "studies": "study_instance_uid",
    "series": "study_instance_uid, series_instance_uid",
    "instances": "sop_instance_uid",
}
_MEMORY: dict[str, sqlite3.Connection] = {}  # keeps named in-memory databases alive
_MEMORY_LOCK = threading.Lock()


def drop_memory_database(name: str) -> None:
    """Let a named in-memory database go (when the last connection to it closes)."""
    with _MEMORY_LOCK:
        keeper = _MEMORY.pop(name, None)
    if keeper is not None:
        keeper.close()


class SQLiteIndex:
    """The SQLite index of one store: a file, or (``memory_name``) a named in-memory database."""

    def __init__(self, path: Path | None = None, *, memory_name: str | None = None) -> None:
        # one connection per thread (the Archive keeps them apart), closed from any thread
        if memory_name is not None:
            uri = f"file:{memory_name}?mode=memory&cache=shared"
            with _MEMORY_LOCK:
                if memory_name not in _MEMORY:
                    _MEMORY[memory_name] = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, check_same_thread=False)
            if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.conn.execute("PRAGMA journal_mode = wal")
        self.path = path
        self.conn.execute("PRAGMA busy_timeout = 30000")
        #: migrations applied now that require the rows to be rebuilt from the store
        self.needs_rebuild = self._migrate()

    def __enter__(self) -> SQLiteIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def _query(self, sql: str, args: Iterable[Any] = ()) -> Iterator[Row]:
        """Rows as dictionaries (column name -> value)."""
        cursor = self.conn.execute(sql, tuple(args))
        names = [column[0] for column in cursor.description]
        for values in cursor:
            yield dict(zip(names, values, strict=True))

    def _migrate(self) -> bool:
        conn = self.conn
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        rebuild = False
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with conn:
                conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
            rebuild |= version > 0 and number in REBUILDS
        return rebuild

    def find_instance(self, sop_instance_uid: str) -> Row | None:
        rows = list(
            self._query(
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
        conn = self.conn
        with conn:
            if clear_first:
                for table in ("instances", "series", "studies", "patients"):
                    conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            patients: set[str] = set()
            for study_uid, study, series, instances in studies:
                conn.execute("DELETE FROM instances WHERE study_instance_uid = ?", [study_uid])
                if self._replace_study(conn, study_uid, study, series, patients):
                    _insert(conn, "instances", instances)
            for patient_id in patients:
                self._refresh_patient(conn, patient_id)

    def patch_studies(self, studies: Iterable[StudyUpdate]) -> None:
        """An edit's rows, in one transaction: each study's study and series rows replaced,
        the given instance rows (those whose query object changed) updated; an edit adds and
        removes no instance. One statement per table and study."""
        conn = self.conn
        with conn:
            patients: set[str] = set()
            for study_uid, study, series, instances in studies:
                if not self._replace_study(conn, study_uid, study, series, patients):
                    continue
                conn.executemany(
                    "UPDATE instances SET sop_class_uid = ?, instance_number = ?, rows = ?,"
                    " columns = ?, query_json = ? WHERE sop_instance_uid = ?",
                    [
                        [
                            row["sop_class_uid"],
                            row["instance_number"],
                            row["rows"],
                            row["columns"],
                            _column(row["query_json"]),
                            row["sop_instance_uid"],
                        ]
                        for row in instances
                    ],
                )
            for patient_id in patients:
                self._refresh_patient(conn, patient_id)

    def _replace_study(
        self,
        conn: sqlite3.Connection,
        study_uid: str,
        study: Row | None,
        series: list[Row],
        patients: set[str],
    ) -> bool:
        """A study's study and series rows replaced (removed when ``study`` is None); the
        patients whose counts change are added to ``patients``. Returns whether it stays."""
        for row in conn.execute(
            "SELECT patient_id FROM studies WHERE study_instance_uid = ?", [study_uid]
        ):
            patients.add(row[0])
        conn.execute("DELETE FROM series WHERE study_instance_uid = ?", [study_uid])
        conn.execute("DELETE FROM studies WHERE study_instance_uid = ?", [study_uid])
        if study is None:
            return False
        patients.add(study["patient_id"])
        self._upsert_patient(conn, study)
        _insert(conn, "studies", [study])
        _insert(conn, "series", series)
        return True

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
            orjson.loads(row["query_json"])
            for row in self._query("SELECT query_json FROM studies ORDER BY study_instance_uid")
        ]

    def studies(self) -> list[Row]:
        """Study rows for listing (without the JSON column)."""
        return list(
            self._query(
                "SELECT study_instance_uid, patient_id, patient_name, study_date,"
                " study_description, modalities_in_study, number_of_series,"
                " number_of_instances FROM studies ORDER BY study_date, study_instance_uid"
            )
        )

    def add_audit(self, rows: Iterable[Row]) -> int:
        """Add audit rows (from the change records); existing ones are kept."""
        conn = self.conn
        with conn:
            before = conn.total_changes
            _insert_audit(conn, rows)
            return conn.total_changes - before

    def replace_audit(self, rows: Iterable[Row]) -> None:
        conn = self.conn
        with conn:
            conn.execute("DELETE FROM audit")
            _insert_audit(conn, rows)

    def replace_change_audit(self, change_id: str, rows: Iterable[Row]) -> None:
        conn = self.conn
        with conn:
            conn.execute("DELETE FROM audit WHERE change_id = ?", [change_id])
            _insert_audit(conn, rows)

    def audit(self, sop_instance_uid: str | None = None, change_id: str | None = None) -> list[Row]:
        """Audit rows, oldest first (all, of one instance, or of one change)."""
        sql = "SELECT * FROM audit WHERE 1"
        args: list[Any] = []
        if sop_instance_uid is not None:
            sql += " AND sop_instance_uid = ?"
            args.append(sop_instance_uid)
        if change_id is not None:
            sql += " AND change_id = ?"
            args.append(change_id)
        return list(self._query(sql + " ORDER BY sequence, change_id, sop_instance_uid", args))

    # -- queries -------------------------------------------------------------------------
    def find_studies(self, condition: All) -> list[str]:
        where, args = _render(condition, {"study": "st"})
        sql = f"SELECT st.study_instance_uid FROM studies st WHERE {where}"  # noqa: S608 - rendered from ours, values bound
        sql += " ORDER BY st.study_instance_uid"
        return [row["study_instance_uid"] for row in self._query(sql, args)]

    def studies_of_patient(self, patient_id: str) -> list[str]:
        return [
            row["study_instance_uid"]
            for row in self._query(
                "SELECT study_instance_uid FROM studies WHERE patient_id = ?"
                " ORDER BY study_instance_uid",
                [patient_id],
            )
        ]

    def find_instances(
        self, study: str, series: str | None = None, sops: list[str] | None = None
    ) -> list[Row]:
        sql = (
            "SELECT i.sop_instance_uid, i.series_instance_uid, i.study_instance_uid,"
            " i.original_sha256, i.original_size, i.incomplete FROM instances i"
            " JOIN series s ON s.study_instance_uid = i.study_instance_uid"
            " AND s.series_instance_uid = i.series_instance_uid"
            " WHERE i.study_instance_uid = ?"
        )
        args: list[Any] = [study]
        if series is not None:
            sql += " AND i.series_instance_uid = ?"
            args.append(series)
        if sops:
            sql += f" AND i.sop_instance_uid IN ({', '.join('?' for _ in sops)})"
            args.extend(sops)
        sql += (
            " ORDER BY s.series_number IS NULL, s.series_number, s.series_instance_uid,"
            " i.instance_number IS NULL, i.instance_number, i.sop_instance_uid"
        )
        return list(self._query(sql, args))

    def locate(self, level: str, uid: str) -> list[Row]:
        if level == "study":
            return self.find_instances(uid)
        column = {"series": "series_instance_uid", "instance": "sop_instance_uid"}[level]
        rows = list(
            self._query(
                f"SELECT DISTINCT study_instance_uid, series_instance_uid FROM instances"  # noqa: S608 - fixed names
                f" WHERE {column} = ? ORDER BY study_instance_uid",
                [uid],
            )
        )
        found: list[Row] = []
        for row in rows:
            sops = [uid] if level == "instance" else None
            found += self.find_instances(
                row["study_instance_uid"], row["series_instance_uid"], sops
            )
        return found

    def search(
        self, level: str, condition: All, *, limit: int | None = None, offset: int = 0
    ) -> list[Any]:
        where, args = _render(condition, _ALIASES)
        sql = f"SELECT {_ALIASES[level]}.query_json AS q FROM {_JOINS[level]} WHERE {where}"  # noqa: S608 - names are ours, values bound
        sql += f" ORDER BY {_ORDER[level]} LIMIT ? OFFSET ?"
        args += [limit if limit is not None else -1, offset]
        return [orjson.loads(row["q"]) for row in self._query(sql, args)]

    def all_instances(self) -> list[Row]:
        return list(
            self._query(
                "SELECT sop_instance_uid, series_instance_uid, study_instance_uid, path,"
                " original_sha256, original_size, number_of_frames, query_json FROM instances"
                " ORDER BY study_instance_uid, series_instance_uid, sop_instance_uid"
            )
        )

    def counts(self) -> dict[str, int]:
        return {
            table: int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in TABLE_KEYS
        }

    def instance_facts(self, study_instance_uid: str) -> list[Row]:
        """The study's instance rows, without their query objects (``index/rows.py``
        ``Facts``)."""
        return list(
            self._query(
                "SELECT study_instance_uid, series_instance_uid, sop_instance_uid,"
                " number_of_frames, original_transfer_syntax_uid, stored_transfer_syntax_uid,"
                " original_sha256, original_size, incomplete FROM instances"
                " WHERE study_instance_uid = ?",
                [study_instance_uid],
            )
        )

    def study_dump(self, study_instance_uid: str) -> dict[str, list[Row]]:
        """Every row of one study's studies, series and instances tables."""
        return {
            table: list(
                self._query(
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
            table: list(self._query(f"SELECT * FROM {table} ORDER BY {key}"))  # noqa: S608
            for table, key in TABLE_KEYS.items()
        }


def _insert_audit(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO audit (change_id, sop_instance_uid, sequence, time, user,"
        " operation, level, target, reason, study_instance_uid, series_instance_uid, revision,"
        " changes, before_sha256, after_sha256)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            [
                row["change_id"],
                row["sop"],
                row.get("sequence", 0),
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


_ALIASES = {"study": "st", "series": "se", "instance": "i"}
_JOINS = {
    "study": "studies st",
    "series": "series se JOIN studies st ON st.study_instance_uid = se.study_instance_uid",
    "instance": "instances i JOIN series se ON se.study_instance_uid = i.study_instance_uid"
    " AND se.series_instance_uid = i.series_instance_uid"
    " JOIN studies st ON st.study_instance_uid = i.study_instance_uid",
}
_ORDER = {
    "study": "st.study_date, st.study_instance_uid",
    "series": "st.study_instance_uid, se.series_number IS NULL, se.series_number,"
    " se.series_instance_uid",
    "instance": "st.study_instance_uid, se.series_number IS NULL, se.series_number,"
    " se.series_instance_uid, i.instance_number IS NULL, i.instance_number, i.sop_instance_uid",
}


def _render(condition: All, aliases: dict[str, str]) -> tuple[str, list[Any]]:
    """SQLite SQL and bound values for a condition tree (PS3.4 C.2.2.2)."""
    clauses: list[str] = []
    args: list[Any] = []
    for match in condition.parts:
        if match.universal:
            continue
        clause, values = _render_match(match, f"{aliases[match.level]}.{match.column}")
        clauses.append(f"({clause})")
        args.extend(values)
    return " AND ".join(clauses) or "1", args


def _render_match(match: Match, column: str) -> tuple[str, list[Any]]:
    if match.kind == "exact":
        return f"{column} = ?", [match.value]
    if match.kind == "uid":
        uids = match.uids
        return f"{column} IN ({', '.join('?' for _ in uids)})", uids
    bounds = match.range
    if bounds is not None:
        parts, args = [], []
        if bounds[0]:
            parts.append(f"{column} >= ?")
            args.append(bounds[0])
        if bounds[1]:
            parts.append(f"{column} <= ?")
            args.append(bounds[1])
        return " AND ".join(parts) or "1", args
    if match.kind == "list":
        return f"('\\' || {column} || '\\') GLOB ?", [f"*\\{_glob(match.value)}\\*"]
    if match.kind == "person":
        return f"upper({column}) GLOB upper(?)", [_glob(match.value)]
    return f"{column} GLOB ?", [_glob(match.value)]


def _glob(value: str) -> str:
    """A DICOM wildcard value as a GLOB pattern (only * and ? are special)."""
    return re.sub(r"([\[\]])", r"[\1]", value)


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
        return orjson.dumps(value).decode()
    return value

"""The index protocol in SQL, shared by the SQLite and PostgreSQL backends.

:class:`SqlIndex` holds every statement (written with ``?`` placeholders) and the rendering of
query conditions (``index/conditions.py``, PS3.4 C.2.2.2); a backend supplies sessions
(:class:`Session`: a connection, inside a transaction for writes) and its :class:`Dialect`:
placeholders, pattern matching (SQLite ``GLOB``, PostgreSQL ``LIKE`` with an escape character)
and "no limit". Every write is one transaction, so a reader sees a study's rows before or after
a change, never half of it. Text compares and sorts by code point in both (PostgreSQL's text
columns are made ``COLLATE "C"``), so both backends answer in the same order.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from dicomweb_archive.index.conditions import All, Match
from dicomweb_archive.index.protocol import Row, StudyUpdate

#: matching keys of VR IS (SeriesNumber, InstanceNumber) kept in INTEGER columns: matched as
#: their decimal text, as a value with wildcards is (PS3.4 C.2.2.2.1, C.2.2.2.4); SQLite compares
#: an integer with text as text, PostgreSQL has no integer LIKE text
INTEGER_COLUMNS = frozenset({"series_number", "instance_number"})
TABLE_KEYS = {
    "patients": "patient_id",
    "studies": "study_instance_uid",
    "series": "study_instance_uid, series_instance_uid",
    "instances": "sop_instance_uid",
}


class Session(Protocol):
    """One connection of a backend, as the shared statements use it."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run ``sql`` once per row; returns the number of rows changed."""
        ...

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    def first(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the backends' SQL."""

    #: the value of ``LIMIT`` that means "no limit"
    no_limit: int | None
    #: SQL and bound value of "``expression`` matches the DICOM wildcard ``value``" (* and ?),
    #: with ``upper`` applied to both sides when the third argument (fold) is true
    pattern: Callable[[str, str, bool], tuple[str, list[Any]]]


class SqlIndex(ABC):
    """The index protocol's statements; subclasses provide :meth:`_read` and :meth:`_write`."""

    dialect: Dialect
    #: migrations applied when the index was opened require its rows to be rebuilt
    needs_rebuild: bool = False

    @abstractmethod
    def close(self) -> None:
        """Let the backend's connections go."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Session]:
        """A session for reads."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Session]:
        """A session inside one transaction, committed when the block ends."""

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self._read() as session:
            return session.rows(sql, args)

    # -- writes --------------------------------------------------------------------------
    def replace_studies(self, studies: Iterable[StudyUpdate], *, clear_first: bool = False) -> None:
        """Replace the rows of each given study in one transaction.

        Each tuple is (StudyInstanceUID, study row or None when the study is gone, series rows,
        instance rows). Patient rows are recomputed from the study rows. With ``clear_first``
        every table is emptied in the same transaction (reindex).
        """
        with self._write() as session:
            if clear_first:
                for table in ("instances", "series", "studies", "patients"):
                    session.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            patients: set[str] = set()
            for study_uid, study, series, instances in studies:
                session.execute("DELETE FROM instances WHERE study_instance_uid = ?", [study_uid])
                if _replace_study(session, study_uid, study, series, patients):
                    _insert(session, "instances", instances)
            for patient_id in sorted(patients):
                _refresh_patient(session, patient_id)

    def patch_studies(self, studies: Iterable[StudyUpdate]) -> None:
        """An edit's rows, in one transaction: each study's study and series rows replaced,
        the given instance rows (those whose query object changed) updated; an edit adds and
        removes no instance. One statement per table and study."""
        with self._write() as session:
            patients: set[str] = set()
            for study_uid, study, series, instances in studies:
                if not _replace_study(session, study_uid, study, series, patients):
                    continue
                session.executemany(
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
            for patient_id in sorted(patients):
                _refresh_patient(session, patient_id)

    def add_audit(self, rows: Iterable[Row]) -> int:
        """Add audit rows (from the change records); existing ones are kept."""
        with self._write() as session:
            return _insert_audit(session, rows)

    def replace_audit(self, rows: Iterable[Row]) -> None:
        with self._write() as session:
            session.execute("DELETE FROM audit")
            _insert_audit(session, rows)

    def replace_change_audit(self, change_id: str, rows: Iterable[Row]) -> None:
        with self._write() as session:
            session.execute("DELETE FROM audit WHERE change_id = ?", [change_id])
            _insert_audit(session, rows)

    # -- reads ---------------------------------------------------------------------------
    def find_instance(self, sop_instance_uid: str) -> Row | None:
        rows = self._query(
            "SELECT sop_instance_uid, series_instance_uid, study_instance_uid,"
            " original_sha256 FROM instances WHERE sop_instance_uid = ?",
            [sop_instance_uid],
        )
        return rows[0] if rows else None

    def study_query_objects(self) -> list[Any]:
        """Every study's QIDO-RS object, in StudyInstanceUID order (studies/index.json.gz)."""
        return [
            orjson.loads(row["query_json"])
            for row in self._query("SELECT query_json FROM studies ORDER BY study_instance_uid")
        ]

    def studies(self) -> list[Row]:
        """Study rows for listing (without the JSON column)."""
        return self._query(
            "SELECT study_instance_uid, patient_id, patient_name, study_date,"
            " study_description, modalities_in_study, number_of_series,"
            " number_of_instances FROM studies ORDER BY study_date, study_instance_uid"
        )

    def audit(self, sop_instance_uid: str | None = None, change_id: str | None = None) -> list[Row]:
        """Audit rows, oldest first (all, of one instance, or of one change)."""
        sql = "SELECT * FROM audit WHERE 1 = 1"
        args: list[Any] = []
        if sop_instance_uid is not None:
            sql += " AND sop_instance_uid = ?"
            args.append(sop_instance_uid)
        if change_id is not None:
            sql += " AND change_id = ?"
            args.append(change_id)
        return self._query(sql + " ORDER BY sequence, change_id, sop_instance_uid", args)

    def find_studies(self, condition: All) -> list[str]:
        where, args = self._render(condition, {"study": "st"})
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
        return self._query(sql, args)

    def locate(self, level: str, uid: str) -> list[Row]:
        if level == "study":
            return self.find_instances(uid)
        column = {"series": "series_instance_uid", "instance": "sop_instance_uid"}[level]
        rows = self._query(
            f"SELECT DISTINCT study_instance_uid, series_instance_uid FROM instances"  # noqa: S608 - fixed names
            f" WHERE {column} = ? ORDER BY study_instance_uid, series_instance_uid",
            [uid],
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
        where, args = self._render(condition, _ALIASES)
        sql = f"SELECT {_ALIASES[level]}.query_json AS q FROM {_JOINS[level]} WHERE {where}"  # noqa: S608 - names are ours, values bound
        sql += f" ORDER BY {_ORDER[level]} LIMIT ? OFFSET ?"
        args += [limit if limit is not None else self.dialect.no_limit, offset]
        return [orjson.loads(row["q"]) for row in self._query(sql, args)]

    def all_instances(self) -> list[Row]:
        return self._query(
            "SELECT sop_instance_uid, series_instance_uid, study_instance_uid, path,"
            " original_sha256, original_size, number_of_frames, query_json FROM instances"
            " ORDER BY study_instance_uid, series_instance_uid, sop_instance_uid"
        )

    def counts(self) -> dict[str, int]:
        with self._read() as session:
            return {
                table: int((session.first(f"SELECT COUNT(*) FROM {table}") or (0,))[0])  # noqa: S608
                for table in TABLE_KEYS
            }

    def instance_facts(self, study_instance_uid: str) -> list[Row]:
        """The study's instance rows, without their query objects (``index/rows.py``
        ``Facts``)."""
        return self._query(
            "SELECT study_instance_uid, series_instance_uid, sop_instance_uid,"
            " number_of_frames, original_transfer_syntax_uid, stored_transfer_syntax_uid,"
            " original_sha256, original_size, incomplete FROM instances"
            " WHERE study_instance_uid = ?",
            [study_instance_uid],
        )

    def study_dump(self, study_instance_uid: str) -> dict[str, list[Row]]:
        """Every row of one study's studies, series and instances tables."""
        return {
            table: self._query(
                f"SELECT * FROM {table} WHERE study_instance_uid = ?"  # noqa: S608 - ours
                f" ORDER BY {TABLE_KEYS[table]}",
                [study_instance_uid],
            )
            for table in ("studies", "series", "instances")
        }

    def dump(self) -> dict[str, list[Row]]:
        """Every row of every table, in key order (for comparisons)."""
        return {
            table: self._query(f"SELECT * FROM {table} ORDER BY {key}")  # noqa: S608
            for table, key in TABLE_KEYS.items()
        }

    # -- conditions ----------------------------------------------------------------------
    def _render(self, condition: All, aliases: dict[str, str]) -> tuple[str, list[Any]]:
        """SQL and bound values for a condition tree (PS3.4 C.2.2.2)."""
        clauses: list[str] = []
        args: list[Any] = []
        for match in condition.parts:
            if match.universal:
                continue
            clause, values = self._render_match(match, f"{aliases[match.level]}.{match.column}")
            clauses.append(f"({clause})")
            args.extend(values)
        return " AND ".join(clauses) or "1 = 1", args

    def _render_match(self, match: Match, column: str) -> tuple[str, list[Any]]:
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
            return " AND ".join(parts) or "1 = 1", args
        pattern = self.dialect.pattern
        if match.column in INTEGER_COLUMNS:
            column = f"CAST({column} AS TEXT)"
        if match.kind == "list":
            # the attribute matches when one of its values matches one of the key's values
            # (separated by backslashes, or commas in QIDO-RS: a CS value holds neither), as
            # Orthanc and dcm4chee match ModalitiesInStudy
            clauses, args = [], []
            for value in [v for v in re.split(r"[\\,]", match.value) if v] or [match.value]:
                clause, values = pattern(f"('\\' || {column} || '\\')", f"*\\{value}\\*", False)
                clauses.append(f"({clause})")
                args.extend(values)
            return " OR ".join(clauses), args
        return pattern(column, match.value, match.kind == "person")


def _replace_study(
    session: Session, study_uid: str, study: Row | None, series: list[Row], patients: set[str]
) -> bool:
    """A study's study and series rows replaced (removed when ``study`` is None); the
    patients whose counts change are added to ``patients``. Returns whether it stays."""
    for row in session.rows(
        "SELECT patient_id FROM studies WHERE study_instance_uid = ?", [study_uid]
    ):
        patients.add(row["patient_id"])
    session.execute("DELETE FROM series WHERE study_instance_uid = ?", [study_uid])
    session.execute("DELETE FROM studies WHERE study_instance_uid = ?", [study_uid])
    if study is None:
        return False
    patients.add(study["patient_id"])
    session.execute(
        "INSERT INTO patients (patient_id, patient_name, patient_birth_date, patient_sex,"
        " number_of_studies) VALUES (?, ?, ?, ?, 0) ON CONFLICT (patient_id) DO NOTHING",
        [study[k] for k in ("patient_id", "patient_name", "patient_birth_date", "patient_sex")],
    )
    _insert(session, "studies", [study])
    _insert(session, "series", series)
    return True


def _refresh_patient(session: Session, patient_id: str) -> None:
    """Patient attributes from the patient's study with the greatest UID (deterministic)."""
    latest = session.first(
        "SELECT patient_name, patient_birth_date, patient_sex, COUNT(*) OVER ()"
        " FROM studies WHERE patient_id = ? ORDER BY study_instance_uid DESC LIMIT 1",
        [patient_id],
    )
    if latest is None:
        session.execute("DELETE FROM patients WHERE patient_id = ?", [patient_id])
        return
    session.execute(
        "UPDATE patients SET patient_name = ?, patient_birth_date = ?, patient_sex = ?,"
        " number_of_studies = ? WHERE patient_id = ?",
        [*latest, patient_id],
    )


def _insert_audit(session: Session, rows: Iterable[Row]) -> int:
    return session.executemany(
        'INSERT INTO audit (change_id, sop_instance_uid, sequence, time, "user",'
        " operation, level, target, reason, study_instance_uid, series_instance_uid, revision,"
        " changes, before_sha256, after_sha256)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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


def _insert(session: Session, table: str, rows: list[Row]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608 - names are ours
        f" VALUES ({', '.join('?' for _ in columns)})"
    )
    session.executemany(sql, [[_column(row[c]) for c in columns] for row in rows])


def _column(value: Any) -> Any:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


def dicom_glob(value: str) -> str:
    """A DICOM wildcard value as an SQLite GLOB pattern (only * and ? are special)."""
    return re.sub(r"([\[\]])", r"[\1]", value)


def dicom_like(value: str, escape: str = "!") -> str:
    """A DICOM wildcard value as an SQL LIKE pattern: ``*`` is ``%``, ``?`` is ``_``, and the
    value's own ``%``, ``_`` and ``escape`` are escaped."""
    out: Iterator[str] = (
        "%" if c == "*" else "_" if c == "?" else escape + c if c in f"%_{escape}" else c
        for c in value
    )
    return "".join(out)

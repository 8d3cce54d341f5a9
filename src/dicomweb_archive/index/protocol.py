"""The index protocol: every call the operations and the server make on an index.

The index answers queries fast; the store's files are the truth and ``reindex`` rebuilds it
from them. Backends: SQLite (``index/sqlite.py``). Conditions are trees without SQL
(``index/conditions.py``) that each backend renders.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from dicomweb_archive.index.conditions import All

Row = dict[str, Any]
#: (StudyInstanceUID, study row or None when the study is gone, series rows, instance rows)
StudyUpdate = tuple[str, Row | None, list[Row], list[Row]]


class Index(Protocol):
    """What the store's index can be asked."""

    def close(self) -> None: ...

    # -- writes (each one transaction) ---------------------------------------------------
    def replace_studies(self, studies: Iterable[StudyUpdate], *, clear_first: bool = False) -> None:
        """Replace each study's rows (patients recomputed); ``clear_first`` empties every
        table first (reindex)."""
        ...

    def patch_studies(self, studies: Iterable[StudyUpdate]) -> None:
        """An edit's rows: each study's study and series rows replaced, the given instance
        rows (whose query object changed) updated."""
        ...

    def add_audit(self, rows: Iterable[Row]) -> int:
        """Add audit rows (kept ones are left); returns how many were new."""
        ...

    def replace_audit(self, rows: Iterable[Row]) -> None:
        """Make the audit table exactly these rows (reindex)."""
        ...

    def replace_change_audit(self, change_id: str, rows: Iterable[Row]) -> None:
        """Make the audit rows of one change exactly these (purge)."""
        ...

    # -- reads ---------------------------------------------------------------------------
    def find_instance(self, sop_instance_uid: str) -> Row | None:
        """study/series/SOP UIDs and original SHA-256 of one instance."""
        ...

    def find_studies(self, condition: All) -> list[str]:
        """StudyInstanceUIDs of the studies matching, in UID order."""
        ...

    def studies_of_patient(self, patient_id: str) -> list[str]: ...

    def find_instances(
        self, study: str, series: str | None = None, sops: list[str] | None = None
    ) -> list[Row]:
        """Instance rows of a study (one series, some SOPs), in series, InstanceNumber and UID
        order: study/series/SOP UIDs, original SHA-256 and size, and the incomplete flag."""
        ...

    def locate(self, level: str, uid: str) -> list[Row]:
        """Instance rows (as :meth:`find_instances`) of the study, series or instance ``uid``."""
        ...

    def search(
        self, level: str, condition: All, *, limit: int | None = None, offset: int = 0
    ) -> list[Any]:
        """QIDO-RS: the query objects of ``level`` matching, in a stable order."""
        ...

    def all_instances(self) -> list[Row]: ...

    def studies(self) -> list[Row]:
        """Study rows for listing (no JSON)."""
        ...

    def study_query_objects(self) -> list[Any]:
        """Every study's QIDO-RS object, in StudyInstanceUID order (studies/index.json.gz)."""
        ...

    def audit(self, sop_instance_uid: str | None = None, change_id: str | None = None) -> list[Row]:
        """Audit rows, oldest first."""
        ...

    def counts(self) -> dict[str, int]: ...

    def instance_facts(self, study_instance_uid: str) -> list[Row]:
        """The study's instance rows without their query objects."""
        ...

    def study_dump(self, study_instance_uid: str) -> dict[str, list[Row]]: ...

    def dump(self) -> dict[str, list[Row]]: ...

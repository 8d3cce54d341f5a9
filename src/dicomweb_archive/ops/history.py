"""History and audit: what the change records say about an instance, or the whole store.

Every change (``store/changes.py``) records each instance it touched with its revision before
and after and the attributes it changed; the index keeps the audit rows. ``history UID``
lists, oldest first, each revision of an instance with the change that produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import NoSuchInstanceError
from dicomweb_archive.model.uid import check_uid
from dicomweb_archive.store.changes import Touched, read_change

JsonObject = dict[str, Any]


@dataclass(slots=True)
class HistoryEntry:
    """One change that touched an instance."""

    change_id: str
    kind: str
    time: str
    user: str
    reason: str
    touched: Touched
    reverts: str | None = None
    #: the change record's steps table (the steps ``touched.before`` names)
    steps: JsonObject = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {
            "change_id": self.change_id,
            "operation": self.kind,
            "time": self.time,
            "user": self.user,
            "reason": self.reason,
            "reverts": self.reverts,
            "revision_before": self.touched.revision_before,
            "revision": self.touched.revision_after,
            "changes": self.touched.changes,
            "study": self.touched.study,
            "series": self.touched.series,
        }


def instance_history(archive: Archive, sop: str) -> list[HistoryEntry]:
    """Every change that touched the instance, oldest first; an unknown UID is an error."""
    check_uid(sop, "SOPInstanceUID", source="argument")
    rows = archive.index.audit(sop)
    if not rows and archive.index.find_instance(sop) is None:
        raise unknown_instance(archive, sop)
    entries: list[HistoryEntry] = []
    seen: set[str] = set()
    for row in rows:
        change_id = row["change_id"]
        if change_id in seen:
            continue
        seen.add(change_id)
        record = read_change(archive.storage, archive.keys, change_id)
        entries.extend(
            HistoryEntry(
                change_id,
                record["kind"],
                record["time"],
                record["user"],
                record["reason"],
                Touched.from_json(item),
                record.get("reverts"),
                record.get("steps", {}),
            )
            for item in record["instances"]
            if item["sop"] == sop
        )
    return entries


def history(archive: Archive, sop: str) -> list[JsonObject]:
    """The revisions of an instance, oldest first: each with the change that produced it."""
    return [entry.to_json() for entry in instance_history(archive, sop)]


def audit_log(archive: Archive, sop: str | None = None) -> list[JsonObject]:
    """The audit rows (one per instance and change), oldest first; an unknown UID is an
    error."""
    if sop is not None:
        check_uid(sop, "SOPInstanceUID", source="argument")
    rows = archive.index.audit(sop)
    if sop is not None and not rows and archive.index.find_instance(sop) is None:
        raise unknown_instance(archive, sop)
    for row in rows:
        row["changes"] = json.loads(row["changes"] or "[]")
    return rows


def unknown_instance(archive: Archive, uid: str) -> NoSuchInstanceError:
    """The error for a UID that names no instance with a history, worded by what the UID is:
    a study's or a series' (history is kept per instance), or none of the store's."""
    if archive.index.locate("study", uid):
        return NoSuchInstanceError(
            f"{uid} is a StudyInstanceUID of this store, not a SOPInstanceUID: history is kept "
            f"per instance (dicomweb-archive series {uid} lists the study's series)"
        )
    rows = archive.index.locate("series", uid)
    if rows:
        return NoSuchInstanceError(
            f"{uid} is a SeriesInstanceUID of this store, not a SOPInstanceUID: history is kept "
            f"per instance (dicomweb-archive list-instances {rows[0]['study_instance_uid']}/"
            f"{uid} lists the series' instances)"
        )
    return NoSuchInstanceError(f"SOPInstanceUID {uid} is not in the store and has no history")

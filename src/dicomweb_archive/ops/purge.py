"""Purge: the one change that deletes for good (``dicomweb-archive purge CHANGE``).

Every other change keeps what it removes aside, so that it can be reverted
(``store/changes.py``). Purging change C deletes the objects C set aside (the space is freed)
and marks C as purged: it can no longer be reverted. After a de-identification in place, the
purge also removes from C's record the original instances' states and UIDs (the patient data
the record kept for revert), and their audit rows: only then is nothing of the originals left
in the store. The purge itself is recorded (kind ``purge``).
"""

from __future__ import annotations

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import NoSuchInstanceError, StoreError, UsageError
from dicomweb_archive.store.changes import audit_rows, read_change
from dicomweb_archive.store.storage import json_gz


def purge(archive: Archive, change_id: str, *, reason: str = "") -> str:
    """Purge change ``change_id`` (see the module docstring); returns the purge's change id."""
    keys = archive.keys
    with archive.writing("purge"):
        try:
            record = read_change(archive.storage, keys, change_id)
        except StoreError as exc:
            raise NoSuchInstanceError(
                f"no change {change_id} in the store (see dicomweb-archive audit)"
            ) from exc
        if record["details"].get("purged_by"):
            raise UsageError(f"change {change_id} is purged already")
        with archive.changing(
            "purge",
            level="change",
            target=change_id,
            reason=reason,
            details={"purged": change_id, "kind": record["kind"]},
        ) as change:
            txn = change.txn
            freed = 0
            for info in list(archive.storage.list_prefix(keys.aside(change_id))):
                txn.delete(info.key)
                freed += info.size
            change.details["bytes"] = freed
            record["details"]["purged_by"] = change.id
            record["aside"] = []
            for item in record["instances"]:
                item["before"] = None
            if record["kind"] == "anonymize":
                record["instances"] = [
                    i for i in record["instances"] if i["revision_after"] is not None
                ]
                for item in record["instances"]:
                    item["changes"] = []
                    item["before_sha256"] = ""
            txn.put(keys.change(change_id), json_gz(record))
            txn.index({"op": "audit_change", "change": change_id, "rows": audit_rows(record)})
            if record["kind"] == "anonymize":  # every earlier change concerns the originals
                for earlier in record["details"].get("earlier_changes", []):
                    for info in list(archive.storage.list_prefix(keys.aside(earlier))):
                        txn.delete(info.key)
                        freed += info.size
                    if archive.storage.head(keys.change(earlier)) is not None:
                        txn.delete(keys.change(earlier))
                    txn.index({"op": "audit_change", "change": earlier, "rows": []})
                change.details["bytes"] = freed
        return change.id

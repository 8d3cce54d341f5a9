"""Purge: the one change that deletes for good (``dicomweb-archive purge CHANGE``).

Every other change keeps what it removes aside, so that it can be reverted
(``store/changes.py``). Purging change C deletes the objects C set aside (the space is freed)
and marks C as purged: it can no longer be reverted. After a de-identification in place, the
purge also removes from C's record the original instances' states and UIDs (the patient data
the record kept for revert), and their audit rows, the records of every earlier change, and
the changes that reverted it and were reverted: only then is nothing of the originals left in
the store. A de-identification that was reverted (its originals are live again) is purged
like any other change: only what it set aside is deleted. The purge itself is recorded (kind
``purge``).
"""

from __future__ import annotations

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import NoSuchInstanceError, StoreError, UsageError
from dicomweb_archive.store.changes import audit_rows, change_ids, read_change
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
            chain = _revert_chain(archive, change_id)
            in_effect = _in_effect(change_id, chain)
            deidentified = record["kind"] == "anonymize" and in_effect
            if deidentified:
                record["instances"] = [
                    i for i in record["instances"] if i["revision_after"] is not None
                ]
                for item in record["instances"]:
                    item["changes"] = []
                    item["before_sha256"] = ""
            txn.put(keys.change(change_id), json_gz(record))
            txn.index({"op": "audit_change", "change": change_id, "rows": audit_rows(record)})
            if deidentified:  # every earlier change, and reverts of it, concern the originals
                others = [*record["details"].get("earlier_changes", []), *sorted(chain)]
                for earlier in others:
                    for info in list(archive.storage.list_prefix(keys.aside(earlier))):
                        txn.delete(info.key)
                        freed += info.size
                    if archive.storage.head(keys.change(earlier)) is not None:
                        txn.delete(keys.change(earlier))
                    txn.index({"op": "audit_change", "change": earlier, "rows": []})
                change.details["bytes"] = freed
        return change.id


def _revert_chain(archive: Archive, change_id: str) -> dict[str, str]:
    """The changes that revert ``change_id``, or revert one of those, and so on: id -> the id
    it reverts."""
    reverts: dict[str, str] = {}
    for cid in change_ids(archive.storage):
        target = read_change(archive.storage, archive.keys, cid).get("reverts")
        if target:
            reverts[cid] = target
    chain: dict[str, str] = {}
    wanted = {change_id}
    while True:
        found = {c: t for c, t in reverts.items() if t in wanted and c not in chain}
        if not found:
            return chain
        chain |= found
        wanted = set(found)


def _in_effect(change_id: str, chain: dict[str, str]) -> bool:
    """Whether a change is in effect: no change in effect reverts it."""
    return not any(_in_effect(c, chain) for c, t in chain.items() if t == change_id)

"""The one change machinery: every mutation of a store is a :class:`ChangeSet`.

Edit, delete, reject, restore, replace, clean (``-c``), de-identification in place, revert and
purge all go the same way (``docs/spec/update.md``):

1. a :class:`~dicomweb_archive.store.journal.Transaction` collects the new objects and
   removals; every object the change removes is first copied aside, under
   ``.dicomweb-archive/aside/<change id>/<its key>`` (a hard link on a local disk), so that
   nothing is lost;
2. each instance the change touches is recorded with its revision before and after, the
   attributes changed, hashes of its metadata, and its edit steps before (the steps
   themselves in the record's ``steps`` table); info records are never rewritten, so with
   the objects set aside this is all a revert needs;
3. the change record ``.dicomweb-archive/changes/<change id>.json.gz`` (history and audit in
   one object) is staged with the rest, and the audit rows go to the index, all in the same
   journal: a change is committed, recorded and indexed at once, or not at all.

The record's and the audit rows' ``target`` carry no patient data: a change of a patient
(``-patient ID``) records :func:`patient_target`, a keyed hash of the PatientID under the
store's key (``store/secrets.py``), the same for every change of that patient.

:func:`read_change` gives a change record back; reverting a change restores each touched
instance's state before it (``ops/revert.py``). ``purge`` is the one change that deletes for
good: it removes what an earlier change set aside (and, after a de-identification, the
original values its record kept), and is itself recorded.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dicomweb_archive.errors import CorruptStoreError, NoSuchObjectError
from dicomweb_archive.store.edit_state import EditState, read_edit_state, stage_edit_state
from dicomweb_archive.store.journal import Transaction, generation
from dicomweb_archive.store.keys import CHANGES, StoreKeys
from dicomweb_archive.store.secrets import KEY, read_key, store_key
from dicomweb_archive.store.storage import Storage, from_json_gz, json_gz

JsonObject = dict[str, Any]
#: The kinds of change, as history and audit name them.
KINDS = (
    "edit",
    "delete",
    "reject",
    "restore",
    "replace",
    "clean",
    "anonymize",
    "revert",
    "purge",
    "receive",
)
RECORD_VERSION = 1


@dataclass(slots=True)
class Touched:
    """One instance a change touched: where, its revision before and after (None: absent),
    the attributes changed ``{"attribute", "old", "new"}``, the SHA-256 of its canonical
    metadata before and after, and its edit state before, ``{"revision", "steps": [ids]}``
    (None: as ingested), for revert."""

    study: str
    series: str
    sop: str
    revision_before: int | None
    revision_after: int | None
    changes: list[JsonObject] = field(default_factory=list)
    before_sha256: str = ""
    after_sha256: str = ""
    before: JsonObject | None = None  # {"revision": ..., "steps": [step ids]}

    def to_json(self) -> JsonObject:
        return {
            "study": self.study,
            "series": self.series,
            "sop": self.sop,
            "revision_before": self.revision_before,
            "revision_after": self.revision_after,
            "changes": self.changes,
            "before_sha256": self.before_sha256,
            "after_sha256": self.after_sha256,
            "before": self.before,
        }

    @classmethod
    def from_json(cls, value: JsonObject) -> Touched:
        return cls(**value)


class ChangeSet:
    """A change being made: a transaction plus what it records (see the module docstring)."""

    def __init__(
        self,
        storage: Storage,
        keys: StoreKeys,
        kind: str,
        *,
        level: str = "",
        target: str = "",
        reason: str = "",
        edits: list[str] | None = None,
        reverts: str | None = None,
        details: JsonObject | None = None,
        change_id: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(kind)
        self.storage = storage
        self.keys = keys
        self.txn = Transaction(storage, txn_id=change_id)
        self.kind = kind
        self.level = level
        #: the store's key was made for this change's target: an abort removes it again
        self.made_key = level == "patient" and read_key(storage) is None
        self.target = patient_target(storage, target) if level == "patient" else target
        self.reason = reason
        self.edits = edits or []
        self.reverts = reverts
        self.details = details or {}
        self.time = datetime.now(UTC).isoformat(timespec="seconds")
        self.user = user_name()
        #: Set by :meth:`abort`: the change was forgotten and will not be committed.
        self.aborted = False
        self.touched: list[Touched] = []
        self.aside: list[str] = []
        #: every step an instance's state before refers to (id -> step JSON)
        self.steps: dict[str, JsonObject] = {}
        #: the edit states this change reads and changes, by study (staged by
        #: :meth:`stage_edit_states`)
        self.edit_states: dict[str, EditState] = {}

    @property
    def id(self) -> str:
        return self.txn.id

    def set_aside(self, key: str) -> None:
        """Remove ``key`` in this change, keeping a copy for revert."""
        if key not in self.aside:  # else a copy is kept already (:meth:`keep_copy`)
            self.storage.copy(self.txn.staged.get(key, key), self.keys.aside(self.id, key))
            self.aside.append(key)
        self.txn.delete(key)

    def keep_copy(self, key: str) -> None:
        """Keep a copy of ``key`` with this change's set-aside objects without removing it
        (bulk data a removed instance refers to, still used by others); nothing when the key
        is missing or kept already."""
        if key in self.aside or self.txn.head(key) is None:
            return
        self.storage.copy(self.txn.staged.get(key, key), self.keys.aside(self.id, key))
        self.aside.append(key)

    def restore_aside(self, key: str) -> None:
        """Undo :meth:`set_aside` of ``key`` (the change will not remove it after all)."""
        self.aside.remove(key)
        self.txn.removed.discard(key)
        self.storage.delete(self.keys.aside(self.id, key))

    def abort(self) -> None:
        """Forget the change: nothing staged, nothing kept aside."""
        self.txn.abort()
        for key in self.aside:
            self.storage.delete(self.keys.aside(self.id, key))
        self.aside.clear()
        if self.made_key:  # nothing of a change that is not made stays
            self.storage.delete(KEY)
            self.made_key = False
        self.aborted = True

    def set_aside_prefix(self, prefix: str) -> list[str]:
        keys = [info.key for info in self.txn.list_prefix(prefix)]
        for key in keys:
            self.set_aside(key)
        return keys

    def include(self, touched: Touched) -> None:
        """Record an instance this change touches."""
        self.touched.append(touched)

    def edit_state(self, study: str) -> EditState:
        """The study's edit state in this change (read once, then changed in place)."""
        if study not in self.edit_states:
            self.edit_states[study] = read_edit_state(self.txn, self.keys, study)
        return self.edit_states[study]

    def state_before(self, study: str, sop: str) -> JsonObject | None:
        """An instance's edit state now, as a change record keeps it (None: as ingested);
        its steps go into this change's steps table."""
        state = self.edit_state(study)
        entry = state.instances.get(sop)
        if entry is None:
            return None
        for sid in entry.steps:
            self.steps[sid] = state.steps[sid]
        return {"revision": entry.revision, "steps": list(entry.steps)}

    def stage_edit_states(self) -> None:
        """Put the edit states this change changed into its transaction."""
        for state in self.edit_states.values():
            stage_edit_state(self.txn, self.keys, state)

    def record(self) -> JsonObject:
        return {
            "version": RECORD_VERSION,
            "change_id": self.id,
            "sequence": 0,
            "kind": self.kind,
            "time": self.time,
            "user": self.user,
            "level": self.level,
            "target": self.target,
            "reason": self.reason,
            "edits": self.edits,
            "reverts": self.reverts,
            "details": self.details,
            "aside": sorted(self.aside),
            "steps": {sid: self.steps[sid] for sid in sorted(self.steps)},
            "instances": [t.to_json() for t in self.touched],
        }

    def finish(self) -> Transaction:
        """Stage the change record and its audit rows; the transaction is then ready to
        commit (under the lease: its sequence is the generation its commit makes)."""
        record = self.record()
        record["sequence"] = generation(self.storage) + 1
        self.txn.put(self.keys.change(self.id), json_gz(record))
        self.txn.index({"op": "audit", "rows": audit_rows(record)})
        return self.txn


def audit_rows(record: JsonObject) -> list[JsonObject]:
    """One audit row per instance a change touched (the index's ``audit`` table); a change
    that touched none (a purge) has one row without instance."""
    rows = []
    instances = record["instances"] or [
        {
            "study": "",
            "series": "",
            "sop": "",
            "revision_before": None,
            "revision_after": None,
            "changes": [],
            "before_sha256": "",
            "after_sha256": "",
        }
    ]
    for item in instances:
        revision = item["revision_after"]
        if revision is None:
            revision = item["revision_before"]
        rows.append(
            {
                "change_id": record["change_id"],
                "sequence": record.get("sequence", 0),
                "sop": item["sop"],
                "time": record["time"],
                "user": record["user"],
                "operation": record["kind"],
                "level": record["level"],
                "target": record["target"],
                "reason": record["reason"],
                "study": item["study"],
                "series": item["series"],
                "revision": revision,
                "changes": [c["attribute"] for c in item["changes"]],
                "before_sha256": item["before_sha256"],
                "after_sha256": item["after_sha256"],
            }
        )
    return rows


def patient_target(storage: Storage, patient_id: str) -> str:
    """A change's target for a patient: ``PatientID-key:`` and 20 hex digits of an HMAC-SHA256
    of the PatientID under the store's key (as keyed de-identification pseudonyms are made,
    with a message of its own so that the two cannot be matched); the key is made on first
    use (under the lease; removed again when the change is aborted)."""
    message = f"audit-patient:{patient_id}".encode()
    digits = hmac.new(store_key(storage), message, hashlib.sha256).hexdigest()[:20].upper()
    return f"PatientID-key:{digits}"


def read_change(storage: Storage, keys: StoreKeys, change_id: str) -> JsonObject:
    try:
        record: JsonObject = from_json_gz(storage.get(keys.change(change_id)))
    except NoSuchObjectError:
        raise
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(f"the record of change {change_id} is unreadable") from exc
    return record


def change_ids(storage: Storage) -> Iterator[str]:
    """Every recorded change's id (in key order, not time order)."""
    for info in storage.list_prefix(CHANGES):
        name = info.key[len(CHANGES) :]
        if name.endswith(".json.gz") and "/" not in name:
            yield name[: -len(".json.gz")]


def user_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"

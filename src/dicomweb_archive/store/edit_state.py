"""A study's edit state: ``.dicomweb-archive/edits/<Study>.json.gz`` (``docs/spec/update.md``).

Info records are written once, at ingest. What changes since is kept here, one object per
study, so that an edit writes one object per study however many instances it changes:

```json
{"version": 1, "study_instance_uid": "...",
 "steps": {"<id>": {"change": "...", "edits": [...], "original_attributes": {...}}},
 "instances": {"<SOP>": {"series": "...", "revision": 2, "steps": ["<id>", "<id>"]}}}
```

An instance's **revision** counts the changes that edited it (0, and no entry, as ingested);
its **steps** (``dicom/steps.py``) applied in order to its info record give its head and
metadata now. A step is stored once and named by the SHA-256 of its canonical JSON, so that
the step a patient-level edit applies to a thousand instances is written once. The object is
absent when no instance of the study is edited.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.dicom.steps import Step
from dicomweb_archive.errors import CorruptStoreError, NoSuchObjectError
from dicomweb_archive.model.dedup import content_hash
from dicomweb_archive.store.instance import InstanceKey
from dicomweb_archive.store.journal import Transaction
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import Reader, from_json_gz, json_gz

JsonObject = dict[str, Any]
EDIT_STATE_VERSION = 1
#: Edit states read by :func:`steps_of`, by (key, etag): an etag names one content
_READ: dict[tuple[str, str], EditState] = {}
_READ_LOCK = threading.Lock()
_READ_MAX = 64


@dataclass(slots=True)
class Entry:
    """One edited instance: its series, revision and steps (ids into the steps table)."""

    series: str
    revision: int
    steps: list[str] = field(default_factory=list)

    def to_json(self) -> JsonObject:
        return {"series": self.series, "revision": self.revision, "steps": self.steps}


@dataclass(slots=True)
class EditState:
    """The edit state of one study (see the module docstring)."""

    study: str
    steps: dict[str, JsonObject] = field(default_factory=dict)
    instances: dict[str, Entry] = field(default_factory=dict)
    #: steps read, by id, and the ids of steps added (by object): a step shared by many
    #: instances is parsed and hashed once
    _read: dict[str, Step] = field(default_factory=dict, repr=False, compare=False)
    _ids: dict[int, tuple[Step, str]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, value: JsonObject) -> EditState:
        return cls(
            value["study_instance_uid"],
            dict(value["steps"]),
            {
                sop: Entry(entry["series"], int(entry["revision"]), list(entry["steps"]))
                for sop, entry in value["instances"].items()
            },
        )

    def to_json(self) -> JsonObject:
        used = {step for entry in self.instances.values() for step in entry.steps}
        return {
            "version": EDIT_STATE_VERSION,
            "study_instance_uid": self.study,
            "steps": {sid: self.steps[sid] for sid in sorted(used)},
            "instances": {sop: self.instances[sop].to_json() for sop in sorted(self.instances)},
        }

    # -- reading -----------------------------------------------------------------------------
    def revision(self, sop: str) -> int:
        entry = self.instances.get(sop)
        return entry.revision if entry is not None else 0

    def steps_of(self, sop: str) -> list[Step]:
        entry = self.instances.get(sop)
        if entry is None:
            return []
        try:
            return [self._step(sid) for sid in entry.steps]
        except KeyError as exc:
            raise CorruptStoreError(
                f"edit state of study {self.study}: step {exc} is missing"
            ) from exc

    def bulk_hashes(self) -> set[str]:
        """The bulk data the heads of snapshot steps refer to."""
        return {
            segment["bulk"]
            for step in self.steps.values()
            for segment in step.get("snapshot", {}).get("head", [])
            if "bulk" in segment
        }

    # -- changing ----------------------------------------------------------------------------
    def _step(self, sid: str) -> Step:
        step = self._read.get(sid)
        if step is None:
            step = self._read[sid] = Step.from_json(self.steps[sid])
            self._ids[id(step)] = (step, sid)
        return step

    def add_step(self, step: Step) -> str:
        """Store a step (once) and return its id."""
        known = self._ids.get(id(step))
        if known is not None and known[0] is step:
            return known[1]
        value = step.to_json()
        sid = content_hash(value)[:32]
        self.steps.setdefault(sid, value)
        self._ids[id(step)] = (step, sid)
        return sid

    def set(self, sop: str, series: str, revision: int, steps: list[Step]) -> None:
        """Give an instance its revision and steps (no entry when both say "as ingested")."""
        if revision == 0 and not steps:
            self.instances.pop(sop, None)
            return
        self.instances[sop] = Entry(series, revision, [self.add_step(s) for s in steps])

    def pop(self, sop: str) -> Entry | None:
        return self.instances.pop(sop, None)


def read_edit_state(reader: Reader, keys: StoreKeys, study: str) -> EditState:
    """The study's edit state (empty when no instance of it is edited)."""
    name = keys.edits(study)
    try:
        data = reader.get(name)
    except NoSuchObjectError:
        return EditState(study)
    try:
        return EditState.from_json(from_json_gz(data))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptStoreError(f"{name} is unreadable") from exc


def stage_edit_state(txn: Transaction, keys: StoreKeys, state: EditState) -> None:
    """Put the study's edit state in ``txn`` (removed when it has no entry)."""
    name = keys.edits(state.study)
    if not state.instances:
        if txn.head(name) is not None:
            txn.delete(name)
        return
    data = json_gz(state.to_json())
    current = txn.head(name)
    if current is None or current.size != len(data) or txn.get(name) != data:
        txn.put(name, data)


def steps_of(reader: Reader, keys: StoreKeys, key: InstanceKey) -> list[Step]:
    """One instance's edit steps (none: as ingested). The study's edit state is parsed once
    per version (its etag), so that exporting or serving a study's instances one by one reads
    it once."""
    name = keys.edits(key.study)
    info = reader.head(name)
    if info is None:
        return []
    with _READ_LOCK:
        state = _READ.get((name, info.etag))
    if state is None:
        state = read_edit_state(reader, keys, key.study)
        again = reader.head(name)
        if again is not None and again.etag == info.etag:  # not replaced while read
            with _READ_LOCK:
                if len(_READ) >= _READ_MAX:
                    _READ.pop(next(iter(_READ)))
                _READ[(name, info.etag)] = state
    entry = state.instances.get(key.sop)
    if entry is None or entry.series != key.series:
        return []
    return state.steps_of(key.sop)

"""A study's instances as they are now (``docs/spec/update.md``).

Each committed instance has its info record, which holds its metadata as received and is
never rewritten, and, when it was edited, a revision and edit steps in the study's edit state
(``store/edit_state.py``). Its metadata now is the steps applied to the metadata as received
(``dicom/steps.py``): no file is parsed.

The info records are the truth. The study's deduplicated records (``store/dedup.py``: its
group file and any per-instance records) hold the same for the instances grouped so far, in
one object, and are read instead of one info record per instance; an instance they do not
hold, or one in ``refresh`` (a change replaced or restored it, so its record may be stale),
is read from its info record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dicomweb_archive.dicom.steps import Step, apply_to_json
from dicomweb_archive.errors import CorruptStoreError, NoSuchInstanceError
from dicomweb_archive.index.rows import Facts
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.ops.study import Member
from dicomweb_archive.store.dedup import StudyRecords, read_study_records
from dicomweb_archive.store.edit_state import EditState, read_edit_state
from dicomweb_archive.store.instance import (
    InstanceKey,
    has_metadata_file,
    instance_keys,
    read_info,
)
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import Reader

JsonObject = dict[str, Any]
Pair = tuple[JsonObject, InfoRecord]


@dataclass(slots=True)
class Instance:
    """One committed instance: its info record (metadata as received inside), its edit
    steps and revision, whether it has its own ``metadata.gz``, and its metadata now."""

    key: InstanceKey
    info: InfoRecord
    steps: list[Step] = field(default_factory=list)
    revision: int = 0
    metadata_file: bool = False
    current: JsonObject | None = None

    @property
    def received(self) -> JsonObject:
        if self.info.metadata is None:
            raise CorruptStoreError(f"the info record of {self.key.sop} holds no metadata")
        return self.info.metadata

    @property
    def metadata(self) -> JsonObject:
        """The metadata now (as received, with the steps applied; computed once)."""
        if self.current is None:
            self.current = apply_to_json(self.received, self.steps)
        return self.current

    @property
    def pair(self) -> Pair:
        return self.metadata, self.info


@dataclass(slots=True)
class StudyState:
    """Every committed instance of a study, by SOP Instance UID, and its edit state."""

    study: str
    edits: EditState
    instances: dict[str, Instance]
    records: StudyRecords

    def pairs(self) -> list[Pair]:
        return [instance.pair for instance in self.instances.values()]

    def members(self) -> list[Member]:
        """The instances as the study's derived objects are made from them."""
        return [
            Member(instance.metadata, Facts.from_info(instance.info))
            for instance in self.instances.values()
        ]


def read_study_state(
    reader: Reader, keys: StoreKeys, study: str, *, refresh: frozenset[str] = frozenset()
) -> StudyState:
    """The study as it is now (see the module docstring)."""
    records = read_study_records(reader, keys, study)
    edits = read_edit_state(reader, keys, study)
    instances: dict[str, Instance] = {}
    for key in instance_keys(reader, keys, study):
        record = records.records.get(key.sop)
        if (
            record is not None
            and record["series_instance_uid"] == key.series
            and (key.sop not in refresh)
        ):
            info = records.instance(key.sop)[1]
        else:
            info = read_info(reader, keys, key)
        entry = edits.instances.get(key.sop)
        instances[key.sop] = Instance(
            key,
            info,
            edits.steps_of(key.sop) if entry is not None and entry.series == key.series else [],
            entry.revision if entry is not None and entry.series == key.series else 0,
            has_metadata_file(reader, keys, key),
        )
    return StudyState(study, edits, instances, records)


class States:
    """Study states read once each, through ``reader`` (a change's transaction: the states
    as they were when the change first looked at each study)."""

    def __init__(self, reader: Reader, keys: StoreKeys) -> None:
        self.reader = reader
        self.keys = keys
        self.cache: dict[str, StudyState] = {}

    def study(self, study: str) -> StudyState:
        if study not in self.cache:
            self.cache[study] = read_study_state(self.reader, self.keys, study)
        return self.cache[study]

    def instance(self, key: InstanceKey) -> Instance:
        found = self.study(key.study).instances.get(key.sop)
        if found is None or found.key != key:
            raise NoSuchInstanceError(f"SOPInstanceUID {key.sop} is not in the store")
        return found

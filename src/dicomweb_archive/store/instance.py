"""Writing and reading one instance's objects: frames, bulk data, metadata and info record.

An instance is committed by its info record: frames and bulk data are written first, under
their final keys, and ``info.json.gz`` last, so that an instance without an info record is one
being written (or left by an interrupted writer, which recovery removes). A readers' listing
of instances only counts those with an info record. Where an instance replaces a stored one,
its objects are written into a transaction instead (``store/journal.py``) and appear with
it. Bulk data is content-addressed per study and written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from dicomweb_archive.dicom.parts_model import BulkPart, FramePart, InstanceEnd
from dicomweb_archive.errors import (
    CorruptStoreError,
    MissingStoreFileError,
    NoSuchObjectError,
    ObjectExistsError,
)
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.tags import SOP_INSTANCE_UID_KEY
from dicomweb_archive.store.journal import Transaction
from dicomweb_archive.store.keys import STUDIES, StoreKeys
from dicomweb_archive.store.multipart import boundary_for, parse_part, part_header, part_trailer
from dicomweb_archive.store.storage import (
    JSON_GZ_HEADERS,
    Data,
    Reader,
    Storage,
    from_json_gz,
    json_gz,
)

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True, order=True)
class InstanceKey:
    """The three UIDs that place an instance in the store."""

    study: str
    series: str
    sop: str


class Sink(Protocol):
    """Where new objects go: the storage itself, or a transaction."""

    def put(
        self,
        key: str,
        data: Data,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        fresh: bool = False,
    ) -> Any: ...

    def delete(self, key: str) -> None: ...


class InstanceWriter:
    """Writes one instance's objects as its parts arrive; :meth:`commit` writes the metadata
    and the info record last, :meth:`abort` removes what was written."""

    def __init__(self, storage: Storage, keys: StoreKeys, key: InstanceKey, sink: Sink) -> None:
        self.storage = storage
        self.keys = keys
        self.key = key
        self.sink = sink
        self.written: list[str] = []
        self.new_bulk: list[str] = []

    def frame(self, part: FramePart) -> None:
        boundary = boundary_for(part.sha256)
        key = self.keys.frame(self.key.study, self.key.series, self.key.sop, part.number)
        self.sink.put(
            key,
            [part_header(boundary, part.media_type), part.data, part_trailer(boundary)],
            content_type=f'multipart/related; type="{part.media_type}"; boundary={boundary}',
            fresh=True,  # read by nothing before the info record commits the instance
        )
        self.written.append(key)

    def bulk(self, part: BulkPart) -> None:
        key = self.keys.bulkdata(self.key.study, part.sha256)
        if isinstance(self.sink, Transaction):  # it appears with the instance
            if self.sink.head(key) is None:
                self.sink.put(key, part.data)
                self.written.append(key)
            return
        if self.storage.head(key) is None:
            try:
                self.storage.put(key, part.data, if_absent=True)
                self.new_bulk.append(key)
            except ObjectExistsError:
                pass

    def commit(self, end: InstanceEnd, *, metadata: bool) -> None:
        """Write the info record (and with ``metadata`` the instance's metadata.gz) last."""
        study, series, sop = self.key.study, self.key.series, self.key.sop
        if metadata:
            name = self.keys.instance_metadata(study, series, sop)
            self.written.append(name)
            self.sink.put(name, json_gz([end.metadata]), **JSON_GZ_HEADERS, fresh=True)
        self.sink.put(self.keys.info(study, series, sop), json_gz(end.info.to_json()))
        self.written = []
        self.new_bulk = []

    def abort(self) -> None:
        """Remove what this writer wrote (frames, metadata, the record its caller wrote and
        listed in :attr:`written`, bulk data no one else had)."""
        for key in self.written:
            if isinstance(self.sink, Transaction):
                self.sink.unstage(key)
            else:
                self.sink.delete(key)
        for key in self.new_bulk:
            self.storage.delete(key)
        self.written = []
        self.new_bulk = []


def read_info(reader: Reader, keys: StoreKeys, key: InstanceKey) -> InfoRecord:
    name = keys.info(key.study, key.series, key.sop)
    try:
        return InfoRecord.from_json(from_json_gz(reader.get(name)))
    except NoSuchObjectError as exc:
        raise CorruptStoreError(f"{name}: info record is missing") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptStoreError(f"{name}: info record is unreadable") from exc


def read_instance_metadata(reader: Reader, keys: StoreKeys, key: InstanceKey) -> JsonObject:
    """The served metadata of an instance now: its own ``metadata.gz`` where it has one (``-i``),
    else its object in the series metadata."""
    if not has_metadata_file(reader, keys, key):
        return _from_series_metadata(reader, keys, key)
    return read_own_metadata(reader, keys, key)


def read_own_metadata(reader: Reader, keys: StoreKeys, key: InstanceKey) -> JsonObject:
    """The instance's own ``metadata.gz``."""
    name = keys.instance_metadata(key.study, key.series, key.sop)
    try:
        value = from_json_gz(reader.get(name))
    except NoSuchObjectError as exc:
        raise CorruptStoreError(f"{name}: instance metadata is missing") from exc
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(f"{name}: instance metadata is unreadable") from exc
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise CorruptStoreError(f"{name}: not a one-instance metadata array")
    result: JsonObject = value[0]
    return result


def _from_series_metadata(reader: Reader, keys: StoreKeys, key: InstanceKey) -> JsonObject:
    name = keys.series_metadata(key.study, key.series)
    try:
        series = from_json_gz(reader.get(name))
    except NoSuchObjectError as exc:
        raise CorruptStoreError(f"{name}: series metadata is missing") from exc
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(f"{name}: series metadata is unreadable") from exc
    for instance in series:
        values = instance.get(SOP_INSTANCE_UID_KEY, {}).get("Value") or [None]
        if values[0] == key.sop:
            found: JsonObject = instance
            return found
    raise CorruptStoreError(f"{name}: SOPInstanceUID {key.sop} is not in the series metadata")


def read_frame(reader: Reader, keys: StoreKeys, key: InstanceKey, number: int) -> memoryview:
    """The payload of stored frame ``number`` (1-based)."""
    name = keys.frame(key.study, key.series, key.sop, number)
    try:
        data = reader.get(name)
    except NoSuchObjectError as exc:
        raise MissingStoreFileError(f"{name}: frame file is missing") from exc
    try:
        return parse_part(data, source=name)[1]
    except ValueError as exc:
        raise CorruptStoreError(str(exc)) from exc


def read_bulk(reader: Reader, keys: StoreKeys, study: str, sha256: str) -> bytes:
    name = keys.bulkdata(study, sha256)
    try:
        return reader.get(name)
    except NoSuchObjectError as exc:
        raise MissingStoreFileError(f"{name}: bulk data file is missing") from exc


def series_uids(reader: Reader, study: str) -> list[str]:
    return [n[:-1] for n in reader.children(StoreKeys.series_dir(study)) if n.endswith("/")]


def instance_keys(reader: Reader, keys: StoreKeys, study: str) -> list[InstanceKey]:
    """Every committed instance of a study (with an info record), sorted (the files are the
    truth)."""
    found: list[InstanceKey] = []
    for series in series_uids(reader, study):
        for name in reader.children(keys.instances_dir(study, series)):
            if not name.endswith("/"):
                continue
            key = InstanceKey(study, series, name[:-1])
            if reader.head(keys.info(study, series, key.sop)) is not None:
                found.append(key)
    return found


def has_metadata_file(reader: Reader, keys: StoreKeys, key: InstanceKey) -> bool:
    """Whether the instance has its own ``metadata.gz`` (written with ``-i``)."""
    return reader.head(keys.instance_metadata(key.study, key.series, key.sop)) is not None


def uncommitted_instances(reader: Reader, keys: StoreKeys, study: str) -> list[InstanceKey]:
    """Instance folders of a study without an info record: being written, or left by an
    interrupted writer."""
    found: list[InstanceKey] = []
    for series in series_uids(reader, study):
        for name in reader.children(keys.instances_dir(study, series)):
            if name.endswith("/"):
                key = InstanceKey(study, series, name[:-1])
                if reader.head(keys.info(study, series, key.sop)) is None:
                    found.append(key)
    return found


def study_uids(reader: Reader) -> list[str]:
    return [n[:-1] for n in reader.children(STUDIES) if n.endswith("/")]


def instance_objects(reader: Reader, keys: StoreKeys, key: InstanceKey) -> list[str]:
    """Every object of an instance's folder (frames, metadata, info record)."""
    return [i.key for i in reader.list_prefix(keys.instance(key.study, key.series, key.sop))]


def bulk_in_use(reader: Reader, keys: StoreKeys, study: str) -> set[str]:
    """SHA-256 of every bulk-data object the study's committed instances refer to: their info
    records, and the heads their edit steps hold (``store/edit_state.py``)."""
    from dicomweb_archive.store.edit_state import read_edit_state  # noqa: PLC0415 - a cycle

    used: set[str] = set()
    for key in instance_keys(reader, keys, study):
        info = read_info(reader, keys, key)
        used |= info.bulk_hashes() | info.kept_originals()
    return used | read_edit_state(reader, keys, study).bulk_hashes()


def bulk_objects(reader: Reader, keys: StoreKeys, study: str) -> dict[str, str]:
    """The study's bulk-data objects: SHA-256 -> key."""
    prefix = keys.bulkdata_dir(study)
    return {i.key[len(prefix) :].replace("/", ""): i.key for i in reader.list_prefix(prefix)}

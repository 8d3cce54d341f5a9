"""Which SOP Instance UIDs the store and the current ingest run already hold.

A different file with a stored SOP Instance UID is refused or replaces the stored instance
(``ops/ingest.py``); this is the lookup behind that rule. The index learns of an instance only
after the run, so the run remembers where it wrote each UID itself, compactly (a hash and a
series number: no UID strings or digests kept per instance).
"""

from __future__ import annotations

import threading

from dicomweb_archive.archive import Archive
from dicomweb_archive.store.changes import ChangeSet
from dicomweb_archive.store.dedup import read_study_records
from dicomweb_archive.store.instance import InstanceKey, read_info


class SeenInstances:
    """Where the store, or this run, holds each SOP Instance UID."""

    def __init__(self, archive: Archive, change: ChangeSet | None) -> None:
        self.archive = archive
        self.keys = archive.keys
        #: the change the run writes into (its reads see what it staged), or None
        self.reader = change.txn if change is not None else archive.storage
        #: per study, its deduplicated records as SOP -> (original SHA-256, where)
        self.records: dict[str, dict[str, tuple[str, InstanceKey]]] = {}
        #: where this run wrote each SOP Instance UID: hash -> its (study, series) in ``places``
        self.written: dict[int, int] = {}
        self.places: list[tuple[str, str]] = []
        self.place_numbers: dict[tuple[str, str], int] = {}
        self.places_lock = threading.Lock()

    def previous(self, key: InstanceKey) -> tuple[str, InstanceKey] | None:
        """What the store holds for this SOP Instance UID: (original SHA-256, where).

        Stage 1 is complete for an instance when its info record exists; the deduplicated
        records of the study say so for every instance at once (read once per study). An
        instance stored in another study or series is found through the index.
        """
        reader = self.reader
        here = self.written_in_run(key.sop)
        if here is not None:
            return read_info(reader, self.keys, here).original.sha256, here
        known = self.known(key.study).get(key.sop)
        if known is not None and reader.head(self.keys.info(*_parts(known[1]))) is not None:
            return known
        if reader.head(self.keys.info(*_parts(key))) is not None:
            return read_info(reader, self.keys, key).original.sha256, key
        row = self.archive.index.find_instance(key.sop)
        if row is None:
            return None
        where = InstanceKey(
            row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"]
        )
        if reader.head(self.keys.info(*_parts(where))) is None:
            return None  # indexed, but no longer in the store
        return read_info(reader, self.keys, where).original.sha256, where

    def written_in_run(self, sop: str) -> InstanceKey | None:
        """Where this run wrote ``sop`` (``written`` holds hashes: the info record says)."""
        place = self.written.get(hash(sop))
        here = None if place is None else InstanceKey(*self.places[place], sop)
        found = here is not None and self.reader.head(self.keys.info(*_parts(here))) is not None
        return here if found else None

    def remember(self, key: InstanceKey) -> None:
        """Note where this run wrote an instance (see ``written``)."""
        with self.places_lock:
            place = self.place_numbers.get((key.study, key.series))
            if place is None:
                place = self.place_numbers[key.study, key.series] = len(self.places)
                self.places.append((key.study, key.series))
            self.written[hash(key.sop)] = place

    def known(self, study: str) -> dict[str, tuple[str, InstanceKey]]:
        """The study's deduplicated records as SOP -> (SHA-256, where), read once per run."""
        if study not in self.records:
            records = read_study_records(self.reader, self.keys, study)
            self.records[study] = {
                sop: (
                    record["info"]["original"]["sha256"],
                    InstanceKey(study, record["series_instance_uid"], sop),
                )
                for sop, record in records.records.items()
            }
        return self.records[study]

    def cleaned(self, study: str) -> None:
        """The run set the study aside (``-c``): none of its records counts any more."""
        self.records[study] = {}

    def forget(self, old: InstanceKey) -> None:
        """A replacement moved ``old`` elsewhere: its record no longer says where it is."""
        self.records.get(old.study, {}).pop(old.sop, None)


def _parts(key: InstanceKey) -> tuple[str, str, str]:
    return key.study, key.series, key.sop

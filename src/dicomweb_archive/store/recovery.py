"""Clean up after an interrupted writer, before anything else is written.

Run by every writer once it holds the lease: a journal left by an interrupted change is applied
(``store/journal.py``; staging objects of changes that never committed are removed), and in
every study with a pending notification (stage 1 notifies before it writes), instance folders
without an info record are removed: their frames were written by a stage-1 run that was
interrupted before the instance was committed (``store/instance.py``), and their per-instance
deduplicated records (stage 1 writes an instance's record before its info record); so is the
study's bulk data no committed instance refers to (written before an instance's frames, it may
be all a killed run left; the copies a change keeps for revert are its own, under ``aside/``).
Objects a change set aside (``.dicomweb-archive/aside/<change id>/``) before it was interrupted,
never committed (no change record), are removed too: the originals are still in place.
"""

from __future__ import annotations

from dicomweb_archive.store import notify
from dicomweb_archive.store.instance import (
    bulk_in_use,
    bulk_objects,
    instance_keys,
    instance_objects,
    uncommitted_instances,
)
from dicomweb_archive.store.journal import IndexApplier, replay
from dicomweb_archive.store.keys import ASIDE, StoreKeys
from dicomweb_archive.store.storage import Storage


def recover(storage: Storage, keys: StoreKeys, apply_index: IndexApplier | None) -> list[str]:
    """Replay, then sweep; returns the keys of the uncommitted objects removed."""
    replay(storage, apply_index)
    removed: list[str] = []
    for change_id in uncommitted_aside(storage, keys):
        found = [info.key for info in storage.list_prefix(keys.aside(change_id))]
        storage.delete_prefix(keys.aside(change_id))
        removed += found
    studies = sorted({s for stage in notify.STAGES for s in notify.pending(storage, stage)})
    for study in studies:
        removed += sweep_study(storage, keys, study)
    return removed


def sweep_study(storage: Storage, keys: StoreKeys, study: str) -> list[str]:
    """Remove a study's uncommitted objects (instance folders without an info record, their
    per-instance records, bulk data no committed instance refers to): only while no writer
    is writing into the study. Returns their keys."""
    removed: list[str] = []
    left = uncommitted_instances(storage, keys, study)
    for key in left:
        for name in instance_objects(storage, keys, key):
            storage.delete(name)
            removed.append(name)
    if left:
        committed = {key.sop for key in instance_keys(storage, keys, study)}
        for key in left:
            record = keys.instance_record(study, key.sop)
            if key.sop not in committed and storage.head(record) is not None:
                storage.delete(record)
                removed.append(record)
    # bulk data is written before the frames: a run killed in between left no folder
    bulk = bulk_objects(storage, keys, study)
    if bulk:
        used = bulk_in_use(storage, keys, study)
        for sha, name in bulk.items():
            if sha not in used:
                storage.delete(name)
                removed.append(name)
    return removed


def uncommitted_aside(storage: Storage, keys: StoreKeys) -> list[str]:
    """Ids of changes that set objects aside but were never committed (no change record)."""
    ids = [name.rstrip("/") for name in storage.children(ASIDE) if name.endswith("/")]
    return [cid for cid in ids if storage.head(keys.change(cid)) is None]

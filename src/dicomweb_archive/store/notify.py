"""Notifications between pipeline stages (``docs/spec/pipeline.md``).

A stage that changes a study writes ``notifications/<next stage>/<StudyInstanceUID>`` before
it writes any of the study's data; the next stage lists them, does the work, and removes the
one it consumed in the same transaction as its own output (and the notification for the stage
after it). An interrupted stage leaves its notification, so running it again completes the
work; the work is idempotent.
"""

from __future__ import annotations

import contextlib

from dicomweb_archive.errors import ObjectExistsError
from dicomweb_archive.store.journal import Transaction
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import Reader, Storage

GROUP = "group"
STUDY = "study"
STAGES = (GROUP, STUDY)


def _content(stage: str, study: str) -> bytes:
    return f'{{"study":"{study}","stage":"{stage}"}}\n'.encode()


def notify(storage: Storage, stage: str, study: str) -> None:
    """Ask ``stage`` to (re)process ``study`` (a new object: written at once)."""
    key = StoreKeys.notification(stage, study)
    if storage.head(key) is None:
        with contextlib.suppress(ObjectExistsError):
            storage.put(key, _content(stage, study), if_absent=True)


def notify_in(txn: Transaction, stage: str, study: str) -> None:
    """Ask ``stage`` to process ``study`` when ``txn`` commits."""
    key = StoreKeys.notification(stage, study)
    if txn.head(key) is None:
        txn.put(key, _content(stage, study))


def pending(reader: Reader, stage: str) -> list[str]:
    """Studies waiting for ``stage``, in UID order."""
    return [n for n in reader.children(StoreKeys.notifications(stage)) if not n.endswith("/")]


def done(txn: Transaction, stage: str, study: str) -> None:
    """Consume ``stage``'s notification of ``study`` when ``txn`` commits."""
    txn.delete(StoreKeys.notification(stage, study))

"""Notifications between pipeline stages (``docs/spec/pipeline.md``).

A stage that changes a study writes ``notifications/<next stage>/<StudyInstanceUID>``
(atomically); the next stage lists them, does the work, writes its own notification for the
stage after it, and only then removes the one it consumed. An interrupted stage leaves its
notification, so running it again completes the work; the work is idempotent.
"""

from __future__ import annotations

from dicomweb_archive.store.files import remove_file, write_bytes
from dicomweb_archive.store.layout import StoreLayout

GROUP = "group"
STUDY = "study"
STAGES = (GROUP, STUDY)


def notify(layout: StoreLayout, stage: str, study: str) -> None:
    """Ask ``stage`` to (re)process ``study``."""
    path = layout.notification(stage, study)
    if not path.exists():
        write_bytes(path, f'{{"study":"{study}","stage":"{stage}"}}\n'.encode())


def pending(layout: StoreLayout, stage: str) -> list[str]:
    """Studies waiting for ``stage``, in UID order."""
    directory = layout.notifications / stage
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def done(layout: StoreLayout, stage: str, study: str) -> None:
    remove_file(layout.notification(stage, study))

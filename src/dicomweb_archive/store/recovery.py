"""Clean up after an interrupted writer, before any stage runs.

An interrupted run can leave temporary files (``.<name>.<random>.tmp``), staging directories
(``.staging-<SOP>-<pid>``) and a directory set aside by a replace (``.<SOP>.old``). They can only
be in studies that have a notification (every stage notifies before it writes), in the top of
``studies/`` and in the private directory. They are removed, and a set-aside directory whose
replacement never arrived is put back.
"""

from __future__ import annotations

from pathlib import Path

from dicomweb_archive.store import notify
from dicomweb_archive.store.files import remove_tree
from dicomweb_archive.store.journal import replay
from dicomweb_archive.store.layout import StoreLayout


def recover(layout: StoreLayout) -> None:
    """Replay an interrupted update's journal, then sweep leftovers of interrupted writers."""
    replay(layout)
    studies = {study for stage in notify.STAGES for study in notify.pending(layout, stage)}
    _sweep(layout.studies, recursive=False)
    _sweep(layout.private, recursive=False)
    _sweep(layout.private / "history", recursive=False)
    _sweep(layout.private / "rejected", recursive=True)
    for stage in notify.STAGES:
        _sweep(layout.notifications / stage, recursive=False)
    for study in sorted(studies):
        _sweep(layout.study(study), recursive=True)
        _sweep(layout.instance_records(study), recursive=False)
        _sweep(layout.groups(study), recursive=False)


def _sweep(directory: Path, *, recursive: bool) -> None:
    if not directory.is_dir():
        return
    for path in list(directory.rglob(".*") if recursive else directory.glob(".*")):
        name = path.name
        if name.endswith(".old") and path.is_dir():
            original = path.with_name(name[1:-4])
            if not original.exists():
                path.replace(original)
            else:
                remove_tree(path)
        elif name.startswith(".staging-") and path.is_dir():
            remove_tree(path)
        elif name.endswith(".tmp") and path.is_file():
            path.unlink()

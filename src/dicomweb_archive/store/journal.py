"""Many-file changes that happen entirely or not at all: a write-ahead journal.

An update writes every new file under a temporary name beside its final place
(``.<name>.<change id>.tmp``), then the journal ``.dicomweb-archive/journal.json`` listing the
renames, removals and audit records (written atomically and fsynced: the commit point), then
applies it and deletes it. Every writer replays a journal left by an interrupted run before
anything else, so the store is either entirely old (no journal: the temporary files are swept)
or entirely new (journal: replayed). The audit records go to the append-only
``.dicomweb-archive/audit.jsonl``, once per change id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dicomweb_archive.store.files import count_write, remove_tree, write_bytes
from dicomweb_archive.store.layout import StoreLayout


def journal_path(layout: StoreLayout) -> Path:
    return layout.private / "journal.json"


def audit_path(layout: StoreLayout) -> Path:
    return layout.private / "audit.jsonl"


def staged_name(final: Path, change_id: str) -> Path:
    return final.with_name(f".{final.name}.{change_id}.tmp")


def stage(final: Path, data: bytes, change_id: str) -> Path:
    """Write ``data`` under the temporary name of ``final`` (not yet visible)."""
    temp = staged_name(final, change_id)
    temp.parent.mkdir(parents=True, exist_ok=True)
    with temp.open("wb") as handle:
        handle.write(data)
    count_write()
    return temp


def commit(
    layout: StoreLayout,
    change_id: str,
    renames: list[tuple[Path, Path]],
    removals: list[Path],
    audit: list[dict[str, Any]],
) -> None:
    """Write the journal (the commit point), then apply it.

    Staged files reach the disk (one ``sync`` for all of them) before the journal does.
    """
    os.sync()
    record = {
        "id": change_id,
        "renames": [[layout.relative(a), layout.relative(b)] for a, b in renames],
        "removals": [layout.relative(p) for p in removals],
        "audit": audit,
    }
    write_bytes(journal_path(layout), json.dumps(record).encode(), fsync=True)
    replay(layout)


def replay(layout: StoreLayout) -> str | None:
    """Apply a journal left by an interrupted run (or just written); returns its change id."""
    path = journal_path(layout)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    for temp_name, final_name in record["renames"]:
        temp, final = layout.root / temp_name, layout.root / final_name
        if temp.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            temp.replace(final)
            count_write()
    for name in record["removals"]:
        target = layout.root / name
        if target.is_dir():
            remove_tree(target)
        elif target.exists():
            target.unlink()
        count_write()
    _append_audit(layout, record["id"], record["audit"])
    path.unlink()
    count_write()
    return str(record["id"])


def _append_audit(layout: StoreLayout, change_id: str, rows: list[dict[str, Any]]) -> None:
    log = audit_path(layout)
    if log.exists() and f'"change_id": "{change_id}"' in log.read_text():
        return  # already logged by the run that was interrupted after logging
    with log.open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"change_id": change_id, **row}, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_audit(layout: StoreLayout) -> list[dict[str, Any]]:
    log = audit_path(layout)
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]

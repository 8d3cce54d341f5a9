"""Upgrade a store written before the configuration existed (format 1) to format 2, in place.

Format 1 stores were directories (there was no other backend). Opening one, under the lease:

1. a format-1 journal left by an interrupted update is replayed, and the leftovers of an
   interrupted format-1 writer (``.<name>.<id>.tmp`` files, ``.staging-*`` folders, ``.<SOP>.old``
   folders set aside by a replace, put back where their replacement never arrived) are
   cleaned, as format 1 did;
2. the folders of the deduplicated data are found (``--path-instances``,
   ``--path-deduplicated``); where format 1's update wrote a second tree under the default
   name beside the one the store was made with (a format-1 defect), that stray tree is kept
   under ``.dicomweb-archive/format-1-leftovers/``, never served or read again;
3. instance folders that only have frames (stage 1 without ``-i``, the study stage not run
   yet) get their info record from the instance's deduplicated record, since format 2 counts
   an instance as committed by its info record;
4. the deduplicated records are written again from the instance files (what readers were
   served), one per instance, so that they agree whatever format 1 left;
5. the history (``history/<change>.json.gz``), audit log (``audit.jsonl``) and rejections
   (``rejected/<change>/``) become change records (``changes/<change>.json.gz``), the rejected
   instances' objects and the bulk data they refer to are kept aside for ``restore``;
6. info records become as received, with the metadata as received in them (and the served
   JSON files are written again as this version writes JSON): format 1
   rewrote an edited instance's info record, and kept the one as ingested in its history;
   what the edits made is kept as a snapshot step (``dicom/steps.py``: the edited head and
   metadata) in the study's edit state, and the states before each change in the change
   records become edit states too;
7. ``config.json`` is written last: until then the store is still format 1 and the upgrade
   runs again. The index is rebuilt from the store afterwards (``ensure_index``).

The inline limits (``-m``/``-M``) a format-1 store was made with are not known: the first
command that names them records them; until then the defaults apply.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from dicomweb_archive.dicom.steps import Snapshot, Step, split_head
from dicomweb_archive.model.dedup import combine
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.store.changes import RECORD_VERSION
from dicomweb_archive.store.config import StoreConfig
from dicomweb_archive.store.edit_state import EditState
from dicomweb_archive.store.keys import ASIDE, CONFIG, GENERATION, StoreKeys
from dicomweb_archive.store.local import LocalStorage
from dicomweb_archive.store.storage import PRIVATE, Storage, json_gz, to_json_bytes

JsonObject = dict[str, Any]
#: format-1 operation names -> change kinds
KIND = {
    "update": "edit",
    "batch": "edit",
    "revert": "revert",
    "delete": "delete",
    "reject": "reject",
    "restore": "restore",
}


def is_format_1(storage: Storage) -> bool:
    """A directory written by format 1: its private folder or served tree, and no config."""
    if not isinstance(storage, LocalStorage) or storage.head(CONFIG) is not None:
        return False
    root = storage.root
    private = root / PRIVATE
    return (private / "index.sqlite").exists() or (root / "studies" / "index.json.gz").exists()


def upgrade_format_1(storage: Storage, defaults: StoreConfig) -> StoreConfig:
    """Upgrade (see the module docstring); returns the configuration written."""
    assert isinstance(storage, LocalStorage)
    root = storage.root
    private = root / PRIVATE
    _replay_journal(root)
    notified = _notified(root)
    _sweep(root, notified)
    path_instances, path_deduplicated = _data_folders(root)
    keys = StoreKeys(path_instances, path_deduplicated)
    _commit_instances(root, keys)
    _convert_changes(root, keys)
    _as_received(root, keys)
    _reserialize(root)
    _rewrite_records(root, keys)
    _prune_bulk(root, keys)
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "lock", "audit.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            (private / name).unlink()
    for name in ("history", "rejected"):
        shutil.rmtree(private / name, ignore_errors=True)
    config = replace(
        defaults,
        path_instances=path_instances,
        path_deduplicated=path_deduplicated,
        inline_public=None,
        inline_private=None,
        created_by="dicomweb-archive (format 1, upgraded)",
    )
    storage.put(CONFIG, config.to_json())
    return config


def _replay_journal(root: Path) -> None:
    journal = root / PRIVATE / "journal.json"
    if not journal.exists():
        return
    record = json.loads(journal.read_text())
    for temp_name, final_name in record["renames"]:
        temp, final = root / temp_name, root / final_name
        if temp.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            temp.replace(final)
    for name in record["removals"]:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    log = root / PRIVATE / "audit.jsonl"
    if not log.exists() or f'"change_id": "{record["id"]}"' not in log.read_text():
        with log.open("a", encoding="utf-8") as handle:
            for row in record["audit"]:
                handle.write(json.dumps({"change_id": record["id"], **row}, sort_keys=True) + "\n")
    journal.unlink()


def _notified(root: Path) -> set[str]:
    found: set[str] = set()
    for stage in ("group", "study"):
        directory = root / "notifications" / stage
        if directory.is_dir():
            found |= {p.name for p in directory.iterdir() if not p.name.startswith(".")}
    return found


def _sweep(root: Path, studies: set[str]) -> None:
    """Format 1's recovery: temporary files, staging folders, set-aside folders."""
    places = [(root / "studies", False), (root / PRIVATE, False)]
    places += [(root / PRIVATE / "history", False), (root / PRIVATE / "rejected", True)]
    places += [(root / "notifications" / s, False) for s in ("group", "study")]
    places += [(root / "studies" / s, True) for s in sorted(studies)]
    for directory, recursive in places:
        if not directory.is_dir():
            continue
        for path in list(directory.rglob(".*") if recursive else directory.glob(".*")):
            name = path.name
            if name == ".dicomweb-archive":
                continue
            if name.endswith(".old") and path.is_dir():
                original = path.with_name(name[1:-4])
                if original.exists():
                    shutil.rmtree(path)
                else:
                    path.replace(original)
            elif name.startswith(".staging-") and path.is_dir():
                shutil.rmtree(path)
            elif name.endswith(".tmp") and path.is_file():
                path.unlink()


def _data_folders(root: Path) -> tuple[str, str]:
    """The --path-instances and --path-deduplicated a format-1 store was written with: the
    folders whose study folders hold instance records, and group indexes. A tree under the
    default name beside another one was written by format 1's update, which ignored the
    store's folders: it is moved to the leftovers."""
    found: dict[str, list[str]] = {"group": [], "instance": []}
    for top in sorted(p for p in root.iterdir() if p.is_dir()):
        if top.name in ("studies", "notifications", ".dicomweb-archive"):
            continue
        for kind in _kinds(top):
            found[kind].append(top.name)
    chosen = {}
    for kind, default in (("instance", "instances"), ("group", "deduplicated")):
        names = found[kind]
        own = [n for n in names if n != default]
        chosen[kind] = own[0] if own else default
        if own and default in names:
            _move(root / default, root / PRIVATE / "format-1-leftovers" / default)
    return chosen["instance"], chosen["group"]


def _kinds(top: Path) -> set[str]:
    found: set[str] = set()
    for study in (p for p in top.iterdir() if p.is_dir()):
        if (study / "index.json.gz").exists():
            found.add("group")
        for record in study.glob("*.gz"):
            if len(record.name) == 67:  # an extract, named by its SHA-256
                continue
            with contextlib.suppress(OSError, ValueError):
                if json.loads(gzip.decompress(record.read_bytes())).get("kind") == "instance":
                    found.add("instance")
                    break
        if found:
            return found
    return found


def _commit_instances(root: Path, keys: StoreKeys) -> None:
    """Give instance folders without an info record theirs, from the deduplicated records."""
    from dicomweb_archive.store.dedup import read_study_records  # noqa: PLC0415

    storage = LocalStorage(root)
    studies = root / "studies"
    for study in (
        sorted(p.name for p in studies.iterdir() if p.is_dir()) if studies.is_dir() else []
    ):
        missing = [
            path
            for path in (studies / study / "series").glob("*/instances/*")
            if path.is_dir() and not (path / "info.json.gz").exists()
        ]
        if not missing:
            continue
        records = read_study_records(storage, keys, study)
        for path in missing:
            if path.name in records.records:
                _metadata, info = records.instance(path.name)
                (path / "info.json.gz").write_bytes(json_gz(info.to_json()))


def _rewrite_records(root: Path, keys: StoreKeys) -> None:
    """Every study's deduplicated data written again, one record per committed instance, from
    its info record (as received, with its metadata)."""
    from dicomweb_archive.store.dedup import write_record  # noqa: PLC0415
    from dicomweb_archive.store.instance import instance_keys  # noqa: PLC0415

    storage = LocalStorage(root)
    studies = root / "studies"
    for study in (
        sorted(p.name for p in studies.iterdir() if p.is_dir()) if studies.is_dir() else []
    ):
        infos = [
            InfoRecord.from_json(_read_gz(root / keys.info(key.study, key.series, key.sop)))
            for key in instance_keys(storage, keys, study)
        ]
        shutil.rmtree(root / keys.instance_records(study), ignore_errors=True)
        shutil.rmtree(root / keys.groups(study), ignore_errors=True)
        for info in infos:
            assert info.metadata is not None
            write_record(storage, keys, study, info.metadata, info)


def _as_received(root: Path, keys: StoreKeys) -> None:
    """Step 6 of the module docstring."""
    from dicomweb_archive.store.dedup import StudyRecords, read_study_records  # noqa: PLC0415

    storage = LocalStorage(root)
    records = sorted(
        (_read_gz(path) for path in (root / keys.change("x")).parent.glob("*.json.gz")),
        key=lambda record: int(record["sequence"]),
    )
    ingested: dict[str, JsonObject] = {}  # SOP -> {"metadata", "info"} as ingested
    made_by: dict[tuple[str, int], str] = {}  # (SOP, revision) -> the change that made it
    for record in records:
        for item in record["instances"]:
            before = item.get("before")
            if before and "info" in before and not before["info"].get("revision"):
                ingested.setdefault(item["sop"], before)
            if item["revision_after"]:
                made_by[(item["sop"], item["revision_after"])] = record["change_id"]
    _rehash(root, records)
    for record in records:
        steps: JsonObject = {}
        for item in record["instances"]:
            before = item.get("before")
            if not before or "info" not in before:
                continue
            revision = int(before["info"].get("revision") or 0)
            if revision == 0:
                item["before"] = None
                continue
            step = _snapshot(record["change_id"], before["info"], before["metadata"])
            state = EditState(item["study"])
            sid = state.add_step(step)
            steps[sid] = state.steps[sid]
            item["before"] = {"revision": revision, "steps": [sid]}
        record["steps"] = steps
        (root / keys.change(record["change_id"])).write_bytes(json_gz(record))
    states: dict[str, EditState] = {}
    studies = root / "studies"
    grouped: dict[str, StudyRecords] = {}
    for path in sorted(studies.glob("*/series/*/instances/*/info.json.gz")):
        study, series, sop = path.parts[-6], path.parts[-4], path.parts[-2]
        if study not in grouped:
            grouped[study] = read_study_records(storage, keys, study)
        recorded = grouped[study].instance(sop)[0] if sop in grouped[study].records else None
        entry = _convert_info(path, ingested, made_by, recorded)
        if entry is not None:
            states.setdefault(study, EditState(study)).set(sop, series, *entry)
    for path in sorted((root / ASIDE).rglob("info.json.gz")):
        _convert_info(path, ingested, made_by, None)  # the change record holds its state
    for state in states.values():
        storage.put(keys.edits(state.study), json_gz(state.to_json()))


def _reserialize(root: Path) -> None:
    """The served JSON files written again as this version writes JSON (the same content;
    numbers are formatted as ``store/storage.py`` formats them), so that verify compares them
    byte for byte."""
    studies = root / "studies"
    for path in sorted(studies.rglob("*.gz")) if studies.is_dir() else []:
        if path.name in ("metadata.gz", "index.json.gz", "series-singleton.json.gz"):
            path.write_bytes(json_gz(_read_gz(path)))


def _rehash(root: Path, records: list[JsonObject]) -> None:
    """The metadata hashes of the change records, taken as this version takes them (of the
    instance's JSON as served, ``ops/study.py``): from each change's state before, the next
    change's state before, or the metadata now."""
    by_sop: dict[str, list[JsonObject]] = {}
    for record in records:
        for item in record["instances"]:
            by_sop.setdefault(item["sop"], []).append(item)
    for sop, items in by_sop.items():
        for position, item in enumerate(items):
            before = item.get("before")
            if before and "metadata" in before:
                item["before_sha256"] = _hash(before["metadata"])
            if item["revision_after"] is None:
                continue
            later = items[position + 1].get("before") if position + 1 < len(items) else None
            if later and "metadata" in later:
                item["after_sha256"] = _hash(later["metadata"])
            elif position + 1 == len(items):
                now = next(
                    root.glob(f"studies/{item['study']}/series/*/instances/{sop}/metadata.gz"),
                    None,
                )
                if now is not None:
                    item["after_sha256"] = _hash(_read_gz(now)[0])


def _hash(metadata: JsonObject) -> str:
    return hashlib.sha256(to_json_bytes(metadata)).hexdigest()


def _convert_info(
    path: Path,
    ingested: dict[str, JsonObject],
    made_by: dict[tuple[str, int], str],
    recorded: JsonObject | None,
) -> tuple[int, list[Step]] | None:
    """Make the info record at ``path`` as received, with its metadata; returns the
    instance's (revision, steps) when it was edited."""
    info = _read_gz(path)
    if "metadata" in info:
        return None
    revision = int(info.pop("revision", 0) or 0)
    served = _read_gz(path.with_name("metadata.gz"))
    metadata = served[0] if served else recorded
    sop = info["sop_instance_uid"]
    original = ingested.get(sop)
    if revision and original is not None and metadata is not None:
        step = _snapshot(made_by.get((sop, revision), "format-1"), info, metadata)
        info = {k: v for k, v in original["info"].items() if k != "revision"}
        info["metadata"] = original["metadata"]
        path.write_bytes(json_gz(info))
        return revision, [step]
    info["metadata"] = metadata  # as received, or (an edit without history) as it is now
    path.write_bytes(json_gz(info))
    return (revision, []) if revision else None


def _snapshot(change: str, info: JsonObject, metadata: JsonObject) -> Step:
    """A step holding an edited instance's head (from its format-1 info record) and
    metadata."""
    head, _rest = split_head(info["skeleton"])
    return Step(change, snapshot=Snapshot(tuple(head), metadata))


def _prune_bulk(root: Path, keys: StoreKeys) -> None:
    """Bulk data only rejected instances referred to is kept aside now: remove the copy left
    in the study (format 1 kept it there)."""
    from dicomweb_archive.store.instance import bulk_in_use, bulk_objects  # noqa: PLC0415

    storage = LocalStorage(root)
    studies = root / "studies"
    for study in (
        sorted(p.name for p in studies.iterdir() if p.is_dir()) if studies.is_dir() else []
    ):
        used = bulk_in_use(storage, keys, study)
        for sha, name in bulk_objects(storage, keys, study).items():
            if sha not in used:
                storage.delete(name)


def _convert_changes(root: Path, keys: StoreKeys) -> None:
    """History, audit log and rejections -> change records (and aside objects)."""
    private = root / PRIVATE
    rows: dict[str, list[JsonObject]] = {}
    log = private / "audit.jsonl"
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["change_id"], []).append(row)
    for sequence, (change_id, change_rows) in enumerate(rows.items(), start=1):
        history = _read_gz(private / "history" / f"{change_id}.json.gz") or {"instances": {}}
        rejected = private / "rejected" / change_id
        before = dict(history["instances"])
        aside: list[str] = []
        if rejected.is_dir():
            before |= _set_aside_rejected(root, keys, change_id, rejected, aside)
        first = change_rows[0]
        record = {
            "version": RECORD_VERSION,
            "change_id": change_id,
            "sequence": sequence,
            "kind": KIND.get(first["operation"], "edit"),
            "time": first["time"],
            "user": first["user"],
            "level": first.get("level", ""),
            "target": first.get("target", ""),
            "reason": first.get("reason", ""),
            "edits": [],
            "reverts": None,
            "details": {"upgraded_from_format": 1},
            "aside": sorted(aside),
            "instances": [_touched(row, before.get(row["sop"])) for row in change_rows],
        }
        target = root / keys.change(change_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(json_gz(record))
    if rows:  # the changes to come are numbered after these
        (root / GENERATION).write_text(str(len(rows)))


def _touched(row: JsonObject, state: JsonObject | None) -> JsonObject:
    removed = row["operation"] in ("delete", "reject")
    revision = int(row.get("revision") or 0)
    changes = state.get("changes") if state else None
    return {
        "study": row["study"],
        "series": row["series"],
        "sop": row["sop"],
        "revision_before": (state or {}).get("revision", revision if removed else revision - 1),
        "revision_after": None if removed else revision,
        "changes": changes or [{"attribute": a, "old": None, "new": None} for a in row["changes"]],
        "before_sha256": row.get("before_sha256", ""),
        "after_sha256": row.get("after_sha256", ""),
        "before": {"metadata": state["metadata"], "info": state["info"]}
        if state and "metadata" in state
        else None,
    }


def _set_aside_rejected(
    root: Path, keys: StoreKeys, change_id: str, rejected: Path, aside: list[str]
) -> dict[str, JsonObject]:
    """Move a format-1 rejection's instances (and copies of their bulk data) aside."""
    states: dict[str, JsonObject] = {}
    manifest = json.loads((rejected / "manifest.json").read_text())
    for study, series, sop in manifest["instances"]:
        saved = _read_gz(rejected / study / series / f"{sop}.record.json.gz")
        folder = rejected / study / series / sop
        if folder.is_dir():
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                key = keys.instance(study, series, sop) + path.relative_to(folder).as_posix()
                _move(path, root / keys.aside(change_id, key))
                aside.append(key)
        if saved is None:
            continue
        info = saved["record"]["info"]
        metadata = combine(
            [saved["extracts"][sha] for sha in saved["record"]["refs"].values()],
            saved["record"]["attributes"],
        )
        states[sop] = {"revision": info.get("revision", 0), "metadata": metadata, "info": info}
        for item in info["bulkdata"]:
            key = keys.bulkdata(study, item["sha256"])
            if (root / key).exists():
                target = root / keys.aside(change_id, key)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / key, target)
                aside.append(key)
    return states


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _read_gz(path: Path) -> Any:
    try:
        return json.loads(gzip.decompress(path.read_bytes()))
    except FileNotFoundError:
        return None

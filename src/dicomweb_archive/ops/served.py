"""A study as it is served, instance by instance: what an edit starts from (``ops/update.py``).

An edit changes metadata only, so it need not read any info record: each instance's metadata
now is its object in its series metadata, the facts of its index row are in the index, and
its edit steps in the study's edit state. From these the edit computes the study's new derived
files and rows, as the study stage computes them from the info records
(``ops/study.py``), and a test checks that the two agree.

When the served files cannot be read (missing, damaged, an instance not in its series
metadata), the study is read from its info records instead (``ops/state.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import ArchiveError, CorruptStoreError
from dicomweb_archive.index.rows import Facts
from dicomweb_archive.model.tags import SOP_INSTANCE_UID_KEY
from dicomweb_archive.ops.state import read_study_state
from dicomweb_archive.ops.study import Member
from dicomweb_archive.store.edit_state import EditState, read_edit_state
from dicomweb_archive.store.storage import Reader, from_json_gz


@dataclass(slots=True)
class ServedStudy:
    """A study's instances now (by SOP Instance UID) and its edit state."""

    study: str
    members: dict[str, Member]
    edits: EditState


def read_served_study(archive: Archive, reader: Reader, study: str) -> ServedStudy:
    """The study as served (see the module docstring)."""
    keys = archive.keys
    rows = archive.index.instance_facts(study)
    try:
        members = _members(reader, archive, study, rows)
    except (ArchiveError, OSError, EOFError, ValueError, TypeError, AttributeError):
        state = read_study_state(reader, keys, study)
        return ServedStudy(study, {m.facts.sop: m for m in state.members()}, state.edits)
    return ServedStudy(study, members, read_edit_state(reader, keys, study))


def _members(
    reader: Reader, archive: Archive, study: str, rows: list[dict[str, object]]
) -> dict[str, Member]:
    facts = {str(row["sop_instance_uid"]): Facts.from_row(row) for row in rows}
    members: dict[str, Member] = {}
    for series in sorted({f.series for f in facts.values()}):
        for metadata in from_json_gz(reader.get(archive.keys.series_metadata(study, series))):
            sop = (metadata.get(SOP_INSTANCE_UID_KEY, {}).get("Value") or [None])[0]
            fact = facts.get(str(sop))
            if fact is None or fact.series != series:
                raise CorruptStoreError(f"{sop}: in the series metadata, not in the index")
            members[fact.sop] = Member(metadata, fact)
    if len(members) != len(facts):
        raise CorruptStoreError(f"study {study}: the series metadata lack instances")
    return members

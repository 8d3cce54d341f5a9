"""``includefield`` (PS3.18 8.3.4.3): attributes added to QIDO-RS results from the served
metadata.

A result's extra attributes come from its series' stored ``metadata.gz`` (edits applied): an
instance's from its own object, a series' from its first instance, a study's from the first
instance of its first series. Only attributes of the result's level and the levels above are
added (PS3.3 C.7 as ``model/edits.py`` places them: patient, study, series, instance), so a
study result never takes an instance's Rows; ``all`` adds every such attribute. BulkDataURIs
are made absolute. Attributes inside sequences (``00400275.00321060``) are refused (400).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dicomweb_archive.errors import BadQueryError
from dicomweb_archive.model.dictionary import tag_of
from dicomweb_archive.model.edits import level_of
from dicomweb_archive.model.uid import is_safe_uid
from dicomweb_archive.store.instance import series_uids
from dicomweb_archive.store.storage import from_json_gz
from dicomweb_archive.web.metadata import absolute, sop_of
from dicomweb_archive.web.responses import JsonObject, NotFoundError

if TYPE_CHECKING:
    from dicomweb_archive.web.app import Server

ALL = "all"
_LEVELS = {
    "study": {"patient", "study"},
    "series": {"patient", "study", "series"},
    "instance": {"patient", "study", "series", "instance"},
}


def parse_includefield(values: list[str]) -> set[str]:
    """The tags (``GGGGEEEE``) asked for, with :data:`ALL` for ``all``; BadQueryError for a
    name that is not a keyword or tag."""
    fields: set[str] = set()
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if not name:
                continue
            if name.lower() == ALL:
                fields.add(ALL)
            elif re.fullmatch(r"[0-9A-Fa-f]{8}", name):
                fields.add(name.upper())
            elif (tag := tag_of(name)) is not None:
                fields.add(f"{tag:08X}")
            else:
                raise BadQueryError(
                    f"includefield={name[:40]!r}: give keywords or tags (GGGGEEEE) of "
                    "attributes outside sequences, or all"
                )
    return fields


def add_fields(
    server: Server, base: str, level: str, found: list[JsonObject], fields: set[str]
) -> None:
    """Add the ``fields`` of each result's level from the served metadata (in place)."""
    server.archive.read(lambda: _add(server, base, level, found, fields))


def _add(server: Server, base: str, level: str, found: list[JsonObject], fields: set[str]) -> None:
    read: dict[tuple[str, str], list[JsonObject]] = {}

    def objects(study: str, series: str) -> list[JsonObject]:
        if (study, series) not in read:
            try:
                data = server.get(server.keys.series_metadata(study, series))
            except NotFoundError:
                data = None
            read[study, series] = from_json_gz(data) if data is not None else []
        return read[study, series]

    levels = _LEVELS[level]
    for item in found:
        study = _first(item, "0020000D")
        if not is_safe_uid(study):
            continue
        if level == "study":
            names = [s for s in series_uids(server.storage, study) if is_safe_uid(s)]
            series = names[0] if names else ""
        else:
            series = _first(item, "0020000E")
        if not is_safe_uid(series):
            continue
        sources = objects(study, series)
        if level == "instance":
            sop = _first(item, "00080018")
            sources = [o for o in sources if sop_of(o) == sop]
        if not sources:
            continue
        url = f"{base}/studies/{study}/series/{series}/"
        for tag, value in sources[0].items():
            if tag in item or not (ALL in fields or tag in fields):
                continue
            if level_of(int(tag, 16)) in levels:
                item[tag] = absolute(value, url)


def _first(item: JsonObject, tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])

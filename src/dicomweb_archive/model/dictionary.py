"""The DICOM data dictionary (PS3.6): VR, VM and keyword of a tag, and the tag of a keyword.

The table is generated (``model/dictionary.tsv``, by ``scripts/generate_dictionary.py``) and
checked entry by entry against pydicom's (``tests/test_dictionary.py``); it is ours so that
reading metadata does not import pydicom (about 0.4 s at start-up). It is read on first use
(a few milliseconds). Repeating groups (PS3.5 7.6: curves 50xx, overlays 60xx, ...) are
matched by mask, as pydicom does. Private tags are not in the dictionary.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

Entry = tuple[str, str, str]  # VR, VM, keyword


@cache
def _tables() -> tuple[dict[int, Entry], list[tuple[int, int, Entry]]]:
    """(tag -> entry, [(value, care, entry)] for the masks): a tag matches a mask when its
    bits under ``care`` equal ``value``'s."""
    entries: dict[int, Entry] = {}
    masks: list[tuple[int, int, Entry]] = []
    text = Path(__file__).with_name("dictionary.tsv").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        tag, vr, vm, keyword = line.split("\t")
        if "x" in tag:
            value = int(tag.replace("x", "0"), 16)
            care = int("".join("0" if c == "x" else "F" for c in tag), 16)
            masks.append((value, care, (vr, vm, keyword)))
        else:
            entries[int(tag, 16)] = (vr, vm, keyword)
    return entries, masks


@cache
def entry(tag: int) -> Entry | None:
    """The dictionary entry of ``tag``, or None (private tags, unknown tags)."""
    entries, masks = _tables()
    found = entries.get(tag)
    if found is not None or tag >> 16 & 1:  # odd groups are private (PS3.5 7.8)
        return found
    for value, care, repeater in masks:
        if (tag ^ value) & care == 0:
            return repeater
    return None


def vr_of(tag: int) -> str | None:
    """The dictionary VR (``"US or SS"`` where it depends on the data set), or None."""
    found = entry(tag)
    return found[0] if found is not None else None


def vm_of(tag: int) -> str | None:
    found = entry(tag)
    return found[1] if found is not None else None


def keyword_of(tag: int) -> str:
    """The keyword of ``tag``, or ``""``."""
    found = entry(tag)
    return found[2] if found is not None else ""


@cache
def _by_keyword() -> dict[str, int]:
    return {keyword: tag for tag, (_vr, _vm, keyword) in _tables()[0].items() if keyword}


def tag_of(keyword: str) -> int | None:
    """The tag of a keyword (``PatientName`` -> 0x00100010), or None."""
    return _by_keyword().get(keyword)

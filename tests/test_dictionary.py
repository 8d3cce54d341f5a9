"""Our data dictionary, character sets and VR checks are pydicom's (``model/dictionary.py``,
``model/charset.py``, ``model/vr.py`` exist so that reading metadata and checking an edit do not
import pydicom): compared entry by entry and value by value."""

from __future__ import annotations

import warnings

import pytest
from pydicom import config
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
from pydicom.charset import convert_encodings, decode_bytes, encode_string
from pydicom.datadict import dictionary_VR, mask_match
from pydicom.valuerep import PersonName, validate_value

from dicomweb_archive.dicom.codecs import ENCODERS
from dicomweb_archive.dicom.recompression import LOSSLESS_TARGETS
from dicomweb_archive.model import charset
from dicomweb_archive.model.dictionary import entry, keyword_of, tag_of, vm_of, vr_of
from dicomweb_archive.model.syntax import EXPLICIT_VR_LITTLE_ENDIAN
from dicomweb_archive.model.vr import validate


def test_every_entry_is_pydicoms() -> None:
    for tag, (vr, vm, _name, _retired, keyword) in DicomDictionary.items():
        assert entry(tag) == (vr, vm, keyword), f"{tag:08X}"
        if keyword:
            assert tag_of(keyword) == tag
    assert tag_of("NoSuchKeyword") is None
    assert entry(0x00091010) is None and keyword_of(0x00091010) == ""


@pytest.mark.parametrize("tag", [0x60003000, 0x60220010, 0x50003000, 0x7F100030, 0x60FE0102])
def test_repeating_groups_match_as_pydicom_does(tag: int) -> None:
    mask = mask_match(tag)
    assert mask is not None
    vr, vm, _name, _retired, keyword = RepeatersDictionary[mask]
    assert (vr_of(tag), vm_of(tag), keyword_of(tag)) == (vr, vm, keyword)
    assert vr_of(tag) == dictionary_VR(tag)
    assert entry(tag | 0x00010000) is None  # the odd group beside it is private


def test_lossless_targets_have_encoders() -> None:
    assert {*ENCODERS, EXPLICIT_VR_LITTLE_ENDIAN} == LOSSLESS_TARGETS


TERMS = [
    [""],
    ["ISO_IR 100"],
    ["ISO_IR 192"],
    ["ISO_IR 144"],
    ["GB18030"],
    ["ISO_IR 13"],
    ["ISO 2022 IR 6", "ISO 2022 IR 87"],
    ["", "ISO 2022 IR 149"],
    ["ISO_IR 100 "],  # a misspelling pydicom corrects
]
TEXTS = [
    "Doe^John",
    "Müller^Jürgen",
    "Иванов^Иван",
    "山田^太郎",
    "홍^길동",
    "Yamada^Tarou=山田^太郎",
]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("terms", TERMS, ids=lambda t: "|".join(t) or "default")
def test_character_sets_are_pydicoms(terms: list[str]) -> None:
    """Encoding and decoding give pydicom's bytes and text, or fail where pydicom cannot."""
    ours = charset.python_encodings([t.strip() for t in terms])
    assert ours == convert_encodings([t.strip() for t in terms])
    for text in TEXTS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # pydicom warns, then writes '?' for what it cannot
            try:
                expected: bytes | None = encode_string(text, ours)
            except (UserWarning, UnicodeError, ValueError):
                expected = None
        try:
            got: bytes | None = charset.encode(text, ours)
        except UnicodeError:
            got = None
        assert got == expected, (terms, text)
        if expected is not None:
            assert charset.decode(expected, ours, {0x5C}) == decode_bytes(expected, ours, {0x5C})
            pn = charset.encode_person_name(text, ours)
            assert pn == PersonName(text).encode(ours)


VALUES = {
    "DA": ["20240131", "2024", "20241301", "20240131-20240201", "-20240101", "2024013"],
    "TM": ["1230", "123000.123456", "2460", "12", "1260"],
    "DT": ["20240131123000+0100", "2024", "20241332"],
    "CS": ["ORIGINAL", "lower", "A_B 1", "X" * 17],
    "DS": ["1.5", " 1e3 ", "1,5", "12345678901234567"],
    "IS": ["12", "-3", "1.0", "2147483648"],
    "UI": ["1.2.3", "1.02.3", "1..2", "1" * 65],
    "AS": ["030Y", "30Y"],
    "AE": ["ARCHIVE", "A\x01"],
    "LO": ["x" * 64, "x" * 65, "line\nbreak"],
    "PN": ["A^B=C^D=E^F", "A=B=C=D", "x" * 65],
    "UR": ["http://example.com/a b", "http://example.com/ "],
    "SH": ["short", "x" * 17],
    "LT": ["text\nwith lines", "x" * 10241],
}


@pytest.mark.parametrize("vr", sorted(VALUES))
def test_vr_checks_agree_with_pydicom(vr: str) -> None:
    """Each value pydicom refuses we refuse; we refuse more only where Table 6.2-1 says so
    (IS outside 32 bits; control characters in text)."""
    for value in VALUES[vr]:
        try:
            validate_value(vr, value, config.RAISE)
            theirs = None
        except ValueError as exc:
            theirs = str(exc)
        try:
            validate(vr, value)
            ours = None
        except ValueError as exc:
            ours = str(exc)
        if theirs is not None:
            assert ours == theirs, (vr, value)
        elif ours is not None:
            assert (vr == "IS" and "32-bit" in ours) or "control character" in ours, (vr, value)

"""Writing a pydicom data set in another little endian transfer syntax without reading values.

pydicom re-encodes every element when the encoding changes (explicit to implicit VR or back),
and so interprets each value by its VR: a value that does not fit its VR (an SL element of 6
bytes, say, which pydicom itself reads as raw bytes) stops the whole write. Here the elements
the transcoding did not set are written with their bytes as received: between little endian
syntaxes only the element header changes (PS3.5 7.1.2, 7.1.3), sequences are written item by
item with undefined lengths (PS3.5 7.5.1), and the VR an explicit header needs is the one
received, else the dictionary's, else UN (PS3.5 6.2.2). Elements set by the transcoding
(Pixel Data and what describes it) are written by pydicom.
"""

from __future__ import annotations

import struct

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.filewriter import write_file_meta_info as _write_file_meta_info
from pydicom.tag import BaseTag

from dicomweb_archive.errors import ExportError

#: VRs whose explicit VR header has a 4-byte length (PS3.5 Table 7.1-1)
LONG_LENGTH_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
UNDEFINED = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: what pydicom raises on a value that does not fit its VR
VALUE_ERRORS = (BytesLengthException, ValueError, TypeError, struct.error, OverflowError)


def write_p10(ds: Dataset, *, implicit: bool) -> bytes:
    """The P10 file of ``ds`` (read from a little endian file) in a little endian transfer
    syntax, its File Meta Information as ``ds.file_meta`` gives it."""
    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    _write_file_meta_info(out, ds.file_meta, enforce_standard=True)
    out.is_little_endian, out.is_implicit_VR = True, implicit
    _write_dataset(out, ds, implicit=implicit)
    return out.getvalue()


def decode_all(ds: Dataset) -> None:
    """Read every value of ``ds`` (a big endian file's: pydicom must read values to write them
    little endian), naming the element whose value does not fit its VR."""
    for tag in sorted(ds.keys()):
        try:
            element = ds[tag]
        except VALUE_ERRORS as exc:
            raise ExportError(
                f"{BaseTag(tag)}: its value does not fit its VR; a big endian file with it "
                "cannot be transcoded (export it without --transfer-syntax)"
            ) from exc
        if element.VR == "SQ":
            for item in element.value:
                decode_all(item)


def _write_dataset(fp: DicomBytesIO, ds: Dataset, *, implicit: bool) -> None:
    encodings = ds.get("SpecificCharacterSet", "ISO_IR 6")
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # group lengths are retired (PS3.5 7.2); pydicom leaves them out too
        element = ds.get_item(tag)
        if isinstance(element, RawDataElement) and not _is_sequence(element):
            if not implicit and element.VR is None and " or " in (_dictionary_vr(tag) or ""):
                try:  # US or SS, OB or OW...: the VR the data set implies (PS3.5 6.2)
                    corrected = correct_ambiguous_vr_element(ds[tag], ds, True)
                except VALUE_ERRORS:
                    _write_raw(fp, element, implicit=implicit)
                else:
                    write_data_element(fp, corrected, encodings)
                continue
            _write_raw(fp, element, implicit=implicit)
            continue
        value = ds[tag]  # a sequence (its items stay raw) or a value the transcoding set
        if value.VR == "SQ":
            _write_sequence(fp, value, implicit=implicit)
            continue
        ambiguous = not implicit and " or " in value.VR
        write_data_element(
            fp, correct_ambiguous_vr_element(value, ds, True) if ambiguous else value, encodings
        )


def _is_sequence(element: RawDataElement) -> bool:
    if element.VR == "SQ":
        return True
    if element.length == UNDEFINED and element.tag != PIXEL_DATA:
        return True  # an undefined length but for Pixel Data: a sequence (PS3.5 7.5.1, 6.2.2)
    return element.VR is None and _dictionary_vr(element.tag) == "SQ"


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _write_raw(fp: DicomBytesIO, element: RawDataElement, *, implicit: bool) -> None:
    value = element.value or b""
    fp.write_tag(element.tag)
    if implicit:
        fp.write_UL(len(value))
    else:
        vr = element.VR or _dictionary_vr(element.tag) or "UN"
        if len(vr) != 2 or (vr not in LONG_LENGTH_VRS and len(value) > 0xFFFF):
            vr = "UN"  # ambiguous or too long for a 2-byte length (PS3.5 6.2.2)
        fp.write(vr.encode("ascii"))
        if vr in LONG_LENGTH_VRS:
            fp.write_US(0)
            fp.write_UL(len(value))
        else:
            fp.write_US(len(value))
    fp.write(value)


def _write_sequence(fp: DicomBytesIO, element: DataElement, *, implicit: bool) -> None:
    fp.write_tag(element.tag)
    if not implicit:
        fp.write(b"SQ\0\0")
    fp.write_UL(UNDEFINED)
    for item in element.value:
        fp.write_tag(ITEM)
        fp.write_UL(UNDEFINED)
        _write_dataset(fp, item, implicit=implicit)
        fp.write_tag(ITEM_END)
        fp.write_UL(0)
    fp.write_tag(SEQUENCE_END)
    fp.write_UL(0)

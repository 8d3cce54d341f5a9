"""Specific Character Set (0008,0005): DICOM defined terms to Python codecs, text decoding and
encoding (PS3.5 6.1, PS3.3 C.12.1.1.2).

A data set with one character set and no code extensions (the default repertoire, the ISO 8859
parts, UTF-8, GB18030, GBK) is decoded and encoded here with Python's codecs. Code extensions
(ISO 2022 escape sequences, several values of (0008,0005)), misspelled terms and the JIS X 0201
repertoire go to pydicom's ``charset`` module, imported only then: it handles those cases
completely, and importing pydicom costs about 0.4 s that most commands need not pay.
Results are the same either way (``tests/test_charset.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT = "iso8859"
#: Defined terms of a single character set without code extensions -> Python codec, as pydicom
#: names them (PS3.3 Table C.12-2, and GB18030 / GBK of Table C.12-5).
SINGLE = {
    "": DEFAULT,
    "ISO_IR 6": DEFAULT,
    "ISO_IR 100": "latin_1",
    "ISO_IR 101": "iso8859_2",
    "ISO_IR 109": "iso8859_3",
    "ISO_IR 110": "iso8859_4",
    "ISO_IR 126": "iso_ir_126",
    "ISO_IR 127": "iso_ir_127",
    "ISO_IR 138": "iso_ir_138",
    "ISO_IR 144": "iso_ir_144",
    "ISO_IR 148": "iso_ir_148",
    "ISO_IR 166": "iso_ir_166",
    "ISO_IR 192": "UTF8",
    "GB18030": "GB18030",
    "GBK": "GBK",
}
_PLAIN_CODECS = frozenset(SINGLE.values())
ESC = 0x1B


def python_encodings(terms: Sequence[str]) -> list[str]:
    """The Python codecs of the values of (0008,0005) (the default repertoire when empty).

    Null bytes in a term (padding written with NUL instead of the space PS3.5 6.2 asks for
    CS, or stray ones) are dropped: Python's codec lookup refuses text holding a null, and the
    term is otherwise what the writer meant. A term still unknown after that falls back to the
    default repertoire, with pydicom's warning, as pydicom's reader does.
    """
    terms = [term.replace("\0", "").strip() for term in terms]
    if len(terms) <= 1:
        codec = SINGLE.get(terms[0] if terms else "")
        if codec is not None:
            return [codec]
    from pydicom.charset import convert_encodings  # noqa: PLC0415 - code extensions only

    return list(convert_encodings(list(terms) or [""]))


def _plain(encodings: Sequence[str]) -> str | None:
    """The one codec of ``encodings`` when Python's codec does the whole job, else None."""
    if len(encodings) == 1 and encodings[0] in _PLAIN_CODECS:
        return encodings[0]
    return None


def decode(raw: bytes, encodings: Sequence[str], delimiters: set[int]) -> str:
    """Text of a value of a character-set VR; bytes the character set cannot decode become
    U+FFFD, as pydicom's reader does (the exact bytes stay in the info record)."""
    if raw.isascii() and ESC not in raw:
        return raw.decode("ascii")
    codec = _plain(encodings)
    if codec is not None and ESC not in raw:
        try:
            return raw.decode(codec)
        except UnicodeError:
            return raw.decode(codec, "replace")
    from pydicom.charset import decode_bytes  # noqa: PLC0415 - code extensions only

    return str(decode_bytes(raw, list(encodings), delimiters))


def encode(value: str, encodings: Sequence[str]) -> bytes:
    """``value`` encoded in the character set; UnicodeError when it cannot be."""
    if value.isascii() and encodings and encodings[0] in _PLAIN_CODECS:
        return value.encode("ascii")  # what the first character set gives it (PS3.5 6.1.2.5.3)
    codec = _plain(encodings)
    if codec is not None:
        return value.encode(codec)
    import warnings  # noqa: PLC0415

    from pydicom.charset import encode_string  # noqa: PLC0415 - code extensions only

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return bytes(encode_string(value, list(encodings)))
        except UserWarning as exc:  # pydicom warns and replaces characters
            raise UnicodeEncodeError(str(encodings[0]), value, 0, len(value), str(exc)) from exc


def encode_person_name(value: str, encodings: Sequence[str]) -> bytes:
    """A PN value encoded per component group (PS3.5 6.2.1: each of the alphabetic,
    ideographic and phonetic groups, and each component, in its own right), empty trailing
    groups left out."""
    groups = [b"^".join(encode(part, encodings) for part in g.split("^")) for g in value.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return b"=".join(groups)

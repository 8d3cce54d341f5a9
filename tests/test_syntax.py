"""Transfer syntax UIDs and tags are defined once (model/syntax.py, model/tags.py), and they are
the Standard's (checked against pydicom's dictionary and UID constants)."""

from __future__ import annotations

import pydicom.uid
from pydicom.datadict import keyword_for_tag

from dicomweb_archive.model import syntax, tags

UIDS = {
    "IMPLICIT_VR_LITTLE_ENDIAN": pydicom.uid.ImplicitVRLittleEndian,
    "EXPLICIT_VR_LITTLE_ENDIAN": pydicom.uid.ExplicitVRLittleEndian,
    "DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN": pydicom.uid.DeflatedExplicitVRLittleEndian,
    "EXPLICIT_VR_BIG_ENDIAN": pydicom.uid.ExplicitVRBigEndian,
    "JPEG_BASELINE": pydicom.uid.JPEGBaseline8Bit,
    "JPEG_LS_LOSSLESS": pydicom.uid.JPEGLSLossless,
    "JPEG_2000_LOSSLESS": pydicom.uid.JPEG2000Lossless,
    "HTJ2K_LOSSLESS": pydicom.uid.HTJ2KLossless,
    "RLE_LOSSLESS": pydicom.uid.RLELossless,
}


def test_transfer_syntaxes_are_pydicoms() -> None:
    """Each transfer syntax constant is the UID pydicom names so; the sets are what they say."""
    for name, uid in UIDS.items():
        assert getattr(syntax, name) == uid, name
    assert all(not pydicom.uid.UID(u).is_compressed for u in syntax.NATIVE)
    assert {u for u in syntax.NATIVE_PIXEL_DATA if pydicom.uid.UID(u).is_deflated} == {
        syntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    }
    for compressed in syntax.FRAME_MEDIA_TYPES:
        assert pydicom.uid.UID(compressed).is_compressed, compressed


def test_tags_are_the_dictionarys() -> None:
    """Each tag constant has the keyword of its name, and its JSON key is its tag in hex."""
    for name in dir(tags):
        value = getattr(tags, name)
        if name.isupper() and isinstance(value, int):
            expected = "".join(part.capitalize() for part in name.split("_"))
            assert keyword_for_tag(value).upper() == expected.upper(), name
            assert getattr(tags, f"{name}_KEY", tags.key(value)) == f"{value:08X}"

"""Edit specifications: ``tag=value`` as users write them, checked against the Standard.

Forms (``docs/spec/update.md``):

- ``PatientName=DOE^JOHN``, ``(0010,0010)=DOE^JOHN``, ``00100010=DOE^JOHN``;
- nested: ``ReferringPhysicianIdentificationSequence[0].PersonIdentificationCodeSequence[0].
  CodeValue=X`` (item indexes from 0);
- ``PatientComments=`` empties the value; ``-PatientComments`` removes the element.

Checks: the attribute's level (PS3.3 C.7: Patient, General Study / Patient Study, General
Series; everything else, and every private attribute, is instance level), its VR and VM
(PS3.5 6.2, 6.4) and the value's syntax for that VR (``model/vr.py``). UIDs that place an
instance (Study, Series, SOP Instance UID) are never edited: corrections keep UIDs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dicomweb_archive.dicom.edit import Edit
from dicomweb_archive.errors import EditRefusedError
from dicomweb_archive.model.dictionary import keyword_of, tag_of, vm_of, vr_of
from dicomweb_archive.model.standard_tables import PATIENT_LEVEL, SERIES_LEVEL, STUDY_LEVEL
from dicomweb_archive.model.vr import validate

LEVELS = ("patient", "study", "series", "instance")
PLACING_UIDS = {0x0020000D, 0x0020000E, 0x00080018, 0x00020003}
#: Attributes that say how the stored pixel data is encoded (PS3.3 C.7.6.3 Image Pixel Module,
#: C.7.6.6 Multi-frame Module, C.7.6.24 and C.7.6.25 for Float and Double Float Pixel Data):
#: changing them would make the frames unreadable, so they are never edited.
PIXEL_DESCRIPTION = {
    0x00280002,  # SamplesPerPixel
    0x00280004,  # PhotometricInterpretation
    0x00280006,  # PlanarConfiguration
    0x00280008,  # NumberOfFrames
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # BitsAllocated
    0x00280101,  # BitsStored
    0x00280102,  # HighBit
    0x00280103,  # PixelRepresentation
    0x00280122,  # FloatPixelPaddingValue
    0x00280123,  # DoubleFloatPixelPaddingValue
    0x00280124,  # FloatPixelPaddingRangeLimit
    0x00280125,  # DoubleFloatPixelPaddingRangeLimit
}
_STEP = re.compile(r"^(?P<name>[A-Za-z0-9(),]+)(\[(?P<index>\d+)\])?$")


@dataclass(frozen=True, slots=True)
class EditSpec:
    """A checked edit: the path, the VR, the new value (None: remove) and its level."""

    text: str
    edit: Edit
    level: str

    @property
    def tag(self) -> int:
        return self.edit.path[0][0]

    @property
    def label(self) -> str:
        return describe(self.tag)


def describe(tag: int) -> str:
    """``(0010,0010) PatientName``."""
    keyword = "private" if tag >> 16 & 1 else keyword_of(tag) or "unknown"
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}"


def level_of(tag: int) -> str:
    """The level an attribute is edited at (PS3.3 C.7)."""
    key = f"{tag:08X}"
    if tag >> 16 & 1:
        return "instance"
    if key in PATIENT_LEVEL:
        return "patient"
    if key in STUDY_LEVEL:
        return "study"
    if key in SERIES_LEVEL:
        return "series"
    return "instance"


def _tag(name: str) -> int:
    cleaned = name.replace("(", "").replace(")", "").replace(",", "")
    if re.fullmatch(r"[0-9A-Fa-f]{8}", cleaned):
        return int(cleaned, 16)
    tag = tag_of(name)
    if tag is None:
        raise EditRefusedError(f"{name}: unknown attribute (use a keyword or (gggg,eeee))")
    return int(tag)


def parse_edit(text: str, *, level: str) -> EditSpec:
    """Parse and check one edit written as ``path=value`` or ``-path``."""
    remove = text.startswith("-") and "=" not in text
    path_text, sep, value = (text[1:], "", "") if remove else text.partition("=")
    if not remove and not sep:
        raise EditRefusedError(
            "an edit without '=': write tag=value, tag= to empty, or -tag to remove",
            phi=repr(text),
        )
    steps = path_text.split(".")
    path: list[tuple[int, int | None]] = []
    for position, step in enumerate(steps):
        match = _STEP.match(step)
        if match is None:
            raise EditRefusedError(f"{path_text!r}: {step!r} is not an attribute")
        index = match.group("index")
        last = position == len(steps) - 1
        if (index is None) != last:
            raise EditRefusedError(f"{path_text!r}: sequence steps need an item index, like Seq[0]")
        path.append((_tag(match.group("name")), int(index) if index is not None else None))
    tag = path[-1][0]
    top = path[0][0]
    vr = _vr(tag, remove=remove)
    if top in PLACING_UIDS or tag in PLACING_UIDS:
        raise EditRefusedError(
            f"{describe(tag)}: UIDs that place an instance are kept on correction "
            "(see docs/spec/update.md)"
        )
    if top >> 16 == 0x0002:
        raise EditRefusedError(
            f"{describe(top)}: File Meta Information (the Transfer Syntax among it) is not edited"
        )
    if top in PIXEL_DESCRIPTION:
        raise EditRefusedError(
            f"{describe(top)} describes how the stored pixel data is encoded: changing it would "
            "make the frames unreadable, so it is not edited (ingest a corrected file with "
            "--replace instead)"
        )
    if top >= 0x7FE00000:
        raise EditRefusedError(f"{describe(top)}: pixel data and later elements are not edited")
    owner = level_of(top)
    if owner != level:
        raise EditRefusedError(
            f"{describe(top)} is {'an' if owner == 'instance' else 'a'} {owner}-level attribute: "
            f"edit it with -{owner}, not -{level}"
        )
    checked = None if remove else _check_value(tag, vr, value)
    return EditSpec(text, Edit(tuple(path), vr, checked), owner)


def _vr(tag: int, *, remove: bool) -> str:
    if tag >> 16 & 1:
        if remove:
            return "UN"
        raise EditRefusedError(
            f"{describe(tag)}: private attributes have no dictionary VR; they can be removed "
            "(-tag), not set"
        )
    vr = vr_of(tag)
    if vr is None:
        raise EditRefusedError(f"{describe(tag)}: not in the data dictionary")
    if " or " in vr:
        raise EditRefusedError(f"{describe(tag)}: its VR ({vr}) depends on the data set")
    return vr


def _check_value(tag: int, vr: str, value: str) -> str:
    """The value as given, checked against the attribute's VR and VM (PS3.5 6.2, PS3.6);
    errors name the attribute and the value's position, the value itself only in ``phi``
    (it may be patient data: shown with --verbose)."""
    if value == "":
        return value
    if vr == "SQ":
        raise EditRefusedError(f"{describe(tag)}: a sequence can be emptied (tag=) or removed")
    values = [value] if vr in ("LT", "ST", "UT", "UR") else value.split("\\")
    _check_vm(tag, len(values), value)
    for number, item in enumerate(values, start=1):
        if item == "":
            continue
        try:
            if vr in ("US", "SS", "UL", "SL", "SV", "UV"):
                int(item)
            elif vr in ("FL", "FD"):
                float(item)
            elif vr == "AT":
                if not re.fullmatch(r"[0-9A-Fa-f]{8}", item):
                    raise ValueError(f"{item!r} is not GGGGEEEE")
            else:
                validate(vr, item)
        except ValueError as exc:
            which = f"value {number}" if len(values) > 1 else "the value"
            raise EditRefusedError(
                f"{describe(tag)}: {which} is not a valid {vr} (PS3.5 6.2)", phi=str(exc)
            ) from exc
    return value


def _check_vm(tag: int, count: int, value: str) -> None:
    vm = vm_of(tag) or "1-n"
    low_text, _, high_text = vm.partition("-")
    low = int(low_text) if low_text.isdigit() else 1
    if high_text == "":
        high: float = low
    elif high_text.isdigit():
        high = int(high_text)
    else:
        high = float("inf")
    step = int(low_text) if "n" in high_text and high_text != "n" and low_text.isdigit() else 1
    if not low <= count <= high or count % step:
        raise EditRefusedError(f"{describe(tag)}: {count} values, VM is {vm}", phi=repr(value))

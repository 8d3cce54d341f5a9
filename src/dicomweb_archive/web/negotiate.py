"""Content negotiation for WADO-RS (PS3.18 8.7): which part type and transfer syntax to send.

An ``Accept`` header lists media ranges; for multipart responses the part type is the
``type`` parameter and the transfer syntax the ``transfer-syntax`` parameter
(``*`` accepts whatever is stored). ``application/octet-stream`` without a transfer syntax
means Explicit VR Little Endian (PS3.18 Table 8.7.3-5). A media range with the weight ``q=0``
is not acceptable (RFC 9110 12.4.2) and is left out; other weights do not reorder the list.

Instances (``application/dicom``, PS3.18 8.7.3.4 and 8.7.8.2): ``transfer-syntax=*`` gets the
instance as stored; no transfer syntax (also ``*/*`` and no Accept at all) the default, Explicit
VR Little Endian, except for pixel data received lossy compressed, which PS3.18 8.7.3.4 lets go
as stored; a transfer syntax UID gets the instance in it when it is the stored one or one it can
be transcoded to (``ops/retrieve.py``). An incomplete instance (its received file ends inside
Pixel Data) is never transcoded: without a transfer syntax it is sent only when it is stored in
the default (or received lossy), else the answer is 406 naming what it can be sent in.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomweb_archive.model.syntax import EXPLICIT_VR_LITTLE_ENDIAN
from dicomweb_archive.ops.retrieve import AS_STORED, TRANSCODE_TARGETS


@dataclass(frozen=True, slots=True)
class Wanted:
    """One acceptable part: its media type and transfer syntax (``*`` for any)."""

    media_type: str
    transfer_syntax: str | None


def parse_accept(header: str | None) -> list[Wanted]:
    """The acceptable parts of a multipart response, in the order given (a weight of 0 leaves
    its media range out, RFC 9110 12.4.2; other weights are not used to reorder)."""
    if not header:
        return [Wanted("*/*", None)]
    wanted = []
    for media_range in _split(header):
        parts = [p.strip() for p in media_range.split(";")]
        main = parts[0].lower()
        params = {}
        for parameter in parts[1:]:
            name, _, value = parameter.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        if _weight(params.get("q")) == 0:
            continue
        if main == "multipart/related":
            wanted.append(Wanted(params.get("type", "*/*").lower(), params.get("transfer-syntax")))
        elif main in ("*/*", "*"):
            wanted.append(Wanted("*/*", None))
        else:
            wanted.append(Wanted(main, params.get("transfer-syntax")))
    return wanted


def parse_weighted(header: str | None) -> list[tuple[str, float]]:
    """Each media range of an Accept value (its type and subtype, lower case, ``*/*`` for
    ``*``) with its weight, in the order given, weight 0 included (RFC 9110 12.5.1: a range
    weighted 0 refuses what it names even where a wider range accepts it)."""
    if not header:
        return [("*/*", 1.0)]
    ranges = []
    for media_range in _split(header):
        main, *parameters = (p.strip() for p in media_range.split(";"))
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                weight = _weight(value.strip().strip('"'))
        main = main.lower()
        ranges.append(("*/*" if main == "*" else main, weight))
    return ranges


def _weight(value: str | None) -> float:
    """A media range's weight (RFC 9110 12.4.2: 0 to 1, 1 when absent; an unreadable one
    counts as 1, as if absent)."""
    if value is None:
        return 1.0
    try:
        return float(value)
    except ValueError:
        return 1.0


def _split(header: str) -> list[str]:
    """Split on commas outside quotes."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return [item for item in (o.strip() for o in out) if item]


def choose_frame_type(
    wanted: list[Wanted], stored_media_type: str, stored_syntax: str
) -> tuple[str, str] | None:
    """The (media type, transfer syntax) to send frames in, or None (406).

    Stored bytes are sent when acceptable; else native Explicit VR Little Endian when
    ``application/octet-stream`` is acceptable (the frames are then decoded).
    """
    for item in wanted:
        if item.media_type in ("*/*", stored_media_type) and item.transfer_syntax in (
            None,
            "*",
            stored_syntax,
        ):
            if item.media_type == "*/*" or item.transfer_syntax is not None:
                return stored_media_type, stored_syntax
            if stored_media_type != "application/octet-stream":
                return stored_media_type, stored_syntax
        if item.media_type in ("application/octet-stream", "*/*"):
            if item.transfer_syntax in ("*",) or (
                item.transfer_syntax in (None, stored_syntax)
                and stored_media_type == "application/octet-stream"
            ):
                return stored_media_type, stored_syntax
            if item.transfer_syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN):
                return "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN
    return None


def accepts(wanted: list[Wanted], media_type: str) -> bool:
    """Whether a multipart response of ``media_type`` parts is acceptable."""
    return any(item.media_type in ("*/*", media_type) for item in wanted)


def choose_instance_syntax(
    wanted: list[Wanted], *, stored: str, lossy: bool, transcodable: bool = True
) -> str | None:
    """The transfer syntax to send an instance in (:data:`AS_STORED` or a UID), or None when
    no acceptable part can be given (see the module docstring); ``stored`` is the syntax the
    instance is sent in as stored; an instance that is not ``transcodable`` (incomplete) goes
    as stored or not at all: without a transfer syntax, only when it is stored in the default
    Explicit VR Little Endian or received lossy (PS3.18 8.7.3.4)."""
    for item in wanted:
        if item.media_type not in ("*/*", "application/dicom"):
            continue
        syntax = item.transfer_syntax
        default_as_stored = lossy or stored == EXPLICIT_VR_LITTLE_ENDIAN
        if syntax in (AS_STORED, stored) or (syntax is None and default_as_stored):
            return AS_STORED
        if syntax is None and transcodable:
            return EXPLICIT_VR_LITTLE_ENDIAN
        if syntax in TRANSCODE_TARGETS and transcodable:
            return syntax
    return None


def instance_syntaxes_named(wanted: list[Wanted]) -> bool:
    """Whether every acceptable instance part names a transfer syntax that not every instance
    can be sent in (then each instance's stored syntax decides, before anything is sent)."""
    return not any(
        item.media_type in ("*/*", "application/dicom")
        and (item.transfer_syntax in (None, AS_STORED) or item.transfer_syntax in TRANSCODE_TARGETS)
        for item in wanted
    )

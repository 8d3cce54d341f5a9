"""WADO-RS retrieval of bulk data, of Pixel Data and of whole instances (PS3.18 10.4).

- Bulk data (``/studies/{s}/bulkdata/...``): the stored value, one
  ``application/octet-stream`` part.
- Pixel Data (``.../instances/{i}/frames``, the BulkDataURI the metadata gives it): for pixel
  data received native, the attribute's value as received, one ``application/octet-stream``
  part (PS3.18 8.7.3.3.2: bulk data is the value; frames recompressed at ingest are decoded,
  each checked against the SHA-256 of its pixels as received), 410 when the received file
  ends inside it; for encapsulated pixel data, one part per frame, as the frames resource gives
  them (``web/app.py``).
- Instances (``/studies/{s}``, ``.../series/{r}``, ``.../instances/{i}``): PS3.10 files in the
  transfer syntax the Accept header asks for (``web/negotiate.py``, ``ops/retrieve.py``), one
  ``application/dicom`` part each, streamed instance by instance. An instance up to
  :data:`WHOLE_INSTANCE` bytes, or one that is transcoded, is read whole from one state of the
  store; a larger one is streamed frame by frame, each frame and bulk-data object checked
  against its SHA-256, so that a change of the store meanwhile cuts the response short rather
  than mixing two states. The first instance is read before the status is sent: its errors get
  their status code (404, 406, 500); a later one's cut the response short
  (``web/responses.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from dicomweb_archive.errors import CodecError, ExportError
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.syntax import NATIVE_PIXEL_DATA
from dicomweb_archive.ops.reconstruct import FrameReaders
from dicomweb_archive.ops.retrieve import (
    AS_STORED,
    TRANSCODE_TARGETS,
    generate_retrieved,
    is_incomplete,
    is_lossy,
    stored_syntax,
)
from dicomweb_archive.store.instance import InstanceKey
from dicomweb_archive.web.negotiate import (
    accepts,
    choose_instance_syntax,
    instance_syntaxes_named,
    parse_accept,
)
from dicomweb_archive.web.responses import (
    Chunk,
    NotFoundError,
    UnacceptableError,
    multipart,
    multipart_streamed,
)

if TYPE_CHECKING:
    from dicomweb_archive.web.app import Server

DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
#: Instances up to this size are read whole from one state of the store (see above)
WHOLE_INSTANCE = 64 << 20
AVAILABLE = (
    f"{DICOM} with transfer-syntax * (as stored) or "
    + ", ".join(TRANSCODE_TARGETS)
    + " (Explicit VR Little Endian when none is given)"
)


def bulk(server: Server, request: Request, study: str, name: str) -> Response:
    study = server.uid(study)
    if len(name) != 64 or any(c not in "0123456789abcdef" for c in name):
        raise NotFoundError(name)
    if not accepts(parse_accept(request.headers.get("accept")), OCTET_STREAM):
        raise UnacceptableError(OCTET_STREAM)
    data = server.get(server.keys.bulkdata(study, name))
    return multipart(iter([data]), OCTET_STREAM, OCTET_STREAM, None)


def pixel_data(server: Server, request: Request, key: InstanceKey) -> Response:
    """The value of an instance's Pixel Data (see the module docstring)."""
    info = server.archive.read(lambda: server.instance_info(key))
    native = info.original.transfer_syntax_uid in NATIVE_PIXEL_DATA
    cut = incomplete_frame(info.skeleton)
    if cut is not None and (native or not info.frames):  # PS3.18 8.7.4: known, not given
        return Response(
            f"Pixel Data is incomplete: the received file ends inside frame {cut} (the "
            "instance, with transfer-syntax=*, gives the file as received)\n",
            status_code=410,
            media_type="text/plain",
        )
    if not info.frames:
        raise NotFoundError(key.sop)
    if not native:
        return server.frames(request, key, None)
    if not accepts(parse_accept(request.headers.get("accept")), OCTET_STREAM):
        raise UnacceptableError(f"{OCTET_STREAM} (the value of native Pixel Data)")
    readers = FrameReaders(server.storage, server.keys, key, info, check_parts=True)

    def value() -> Iterator[Chunk]:
        size = 0
        for number in range(1, len(info.frames) + 1):
            frame = readers.frame(number)
            size += len(frame)
            yield frame
        if size % 2:
            yield b"\0"  # the value's padding to an even length (PS3.5 7.1.1)

    chunks = value()
    first = next(chunks)  # read before the status is sent: its errors get their status code
    part = f"{OCTET_STREAM}; transfer-syntax={info.original.transfer_syntax_uid}"
    return multipart_streamed(
        iter([(part, itertools.chain([first], chunks))]), OCTET_STREAM, None, what=request.url.path
    )


def instances(
    server: Server, request: Request, study: str, series: str | None, sop: str | None
) -> Response:
    """The instances of a study, series or one instance (see the module docstring)."""
    wanted = parse_accept(request.headers.get("accept"))
    if not accepts(wanted, DICOM):
        raise UnacceptableError(AVAILABLE)
    study = server.uid(study)
    archive = server.archive
    rows = archive.index.find_instances(
        study,
        server.uid(series) if series else None,
        [server.uid(sop)] if sop else None,
    )
    if not rows:
        raise NotFoundError(sop or series or study)
    keys = [
        InstanceKey(r["study_instance_uid"], r["series_instance_uid"], r["sop_instance_uid"])
        for r in rows
    ]

    def choose(key: InstanceKey) -> str:
        info = archive.read(lambda: server.instance_info(key))
        stored = stored_syntax(info)
        incomplete = is_incomplete(info)
        syntax = choose_instance_syntax(
            wanted, stored=stored, lossy=is_lossy(info), transcodable=not incomplete
        )
        if syntax is None and incomplete:
            raise UnacceptableError(
                f"{DICOM} with transfer-syntax * or {stored} only: {key.sop} is incomplete (its "
                "received file ends inside Pixel Data) and is sent as received"
            )
        if syntax is None:
            raise UnacceptableError(f"{AVAILABLE}; {key.sop} is stored in {stored}")
        return syntax

    if instance_syntaxes_named(wanted):
        chosen = {key: choose(key) for key in keys}
    else:  # only an incomplete instance (the index says which) may refuse a syntax every
        # other instance can be sent in: it is asked before anything is sent
        flagged = zip(keys, rows, strict=True)
        chosen = {key: choose(key) for key, row in flagged if row.get("incomplete")}

    def part(key: InstanceKey) -> tuple[str, Iterable[Chunk]]:
        info = archive.read(lambda: server.instance_info(key))
        syntax = chosen.get(key) or choose(key)
        sent = stored_syntax(info) if syntax == AS_STORED else syntax
        part_type = f"{DICOM}; transfer-syntax={sent}"
        if info.original.size > WHOLE_INSTANCE and sent == stored_syntax(info):
            chunks = generate_retrieved(archive, key, syntax, info=info, check_parts=True)
            return part_type, itertools.chain([next(chunks, b"")], chunks)
        try:
            whole = archive.read(lambda: b"".join(generate_retrieved(archive, key, syntax)))
        except (CodecError, ExportError) as exc:
            raise UnacceptableError(
                f"{AVAILABLE}; {key.sop} cannot be sent in {sent}: {exc}"
            ) from exc
        return part_type, [whole]

    first = part(keys[0])
    parts = itertools.chain([first], (part(key) for key in keys[1:]))
    return multipart_streamed(parts, DICOM, None, what=request.url.path)

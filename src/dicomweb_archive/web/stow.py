"""STOW-RS, the Studies Store Transaction (PS3.18 10.5): ``POST {prefix}/studies`` and
``POST {prefix}/studies/{study}`` with a ``multipart/related; type="application/dicom"`` body.

- Media type (PS3.18 10.5.1.1): the body must be ``multipart/related`` with
  ``type="application/dicom"`` (or no type; each part is then taken as ``application/dicom``
  unless it names another type); other types, among them ``application/dicom+json`` with bulk
  data, are answered 415. A part of another type fails alone (0xC000).
- The body streams through python-multipart's parser, in a worker thread, to one temporary
  file per part: memory holds a chunk, never the body. Bodies longer than ``max_upload`` bytes
  are answered 413 (before reading, when Content-Length says so), and nothing is stored. A
  preamble before the first boundary is ignored (RFC 2046 5.1.1).
- The answer is ``application/dicom+json`` only: a request whose Accept does not take it is
  answered 406 before its body is read (PS3.18 8.7.4, 10.5.3), and nothing is stored.
- Each part is stored as ``mkdicomweb`` stores a file (``ops/receive.py``); a part that is not
  DICOM, is truncated outside Pixel Data, lacks a UID, or names another study than the URL
  fails alone, with its Failure Reason.
- The answer is the Store Instances Response Module (PS3.18 I.1) as ``application/dicom+json``:
  Referenced SOP Sequence (0008,1199) with each stored instance's Retrieve URL (0008,1190) and
  Warning Reason (0008,1196), Failed SOP Sequence (0008,1198) with Failure Reason (0008,1197),
  and the study's Retrieve URL; status (PS3.18 10.5.3, Table 10.5.3-1) 200 when every instance
  was stored, 202 when some were (or with warnings), 409 when none was, 400 for a body that is
  not a multipart message, 406 for an Accept it cannot answer, 415 for another media type.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from dicomweb_archive.model.uid import is_safe_uid
from dicomweb_archive.ops.receive import CANNOT_UNDERSTAND, Received
from dicomweb_archive.web.negotiate import parse_weighted
from dicomweb_archive.web.responses import DICOM_JSON, LOG

DICOM = "application/dicom"
MULTIPART = "multipart/related"
#: --max-upload's default: 4 GiB
DEFAULT_MAX_UPLOAD = 4 << 30

# the parser logs its own wording of a malformed body; the 400 says it once, in ours (an
# application that configures logging still receives these records)
logging.getLogger("python_multipart").addHandler(logging.NullHandler())


class BadRequestError(Exception):
    """The body is not a multipart message that can be read (400)."""


class TooLargeError(Exception):
    """The body is longer than the server takes (413)."""


@dataclass(slots=True)
class _Part:
    file: BinaryIO
    content_type: str = ""


class _Spool:
    """The parts of one body, each in a temporary file, as the parser finds them."""

    def __init__(self, boundary: bytes, limit: int) -> None:
        self.parts: list[_Part] = []
        self.boundary = boundary
        self.limit = limit
        self.size = 0
        self.ended = False
        #: the body up to its first delimiter (a preamble, RFC 2046 5.1.1), while it is sought
        self._preamble: bytearray | None = bytearray()
        self._field = b""
        self._value = b""
        self._headers: list[tuple[bytes, bytes]] = []
        callbacks: dict[str, Callable[..., None]] = {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }
        self.parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLargeError
        if self._preamble is not None:
            chunk = self._skip_preamble(chunk)
            if not chunk:
                return
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:  # the parser's wording names its own states
            raise self._not_multipart() from exc

    def _not_multipart(self) -> BadRequestError:
        boundary = self.boundary.decode("latin-1")[:70]  # RFC 2046 5.1.1: 70 at most
        return BadRequestError(
            f'the request body is not multipart/related with boundary "{boundary}" '
            "(the boundary its Content-Type gives; RFC 2046 5.1.1)"
        )

    def _skip_preamble(self, chunk: bytes) -> bytes:
        """What follows the preamble, from the first delimiter on (empty while it is not
        found): RFC 2046 5.1.1 lets a body begin with text before its first boundary, which
        is to be ignored. The delimiter is "--" and the boundary, at the start of the body or
        after a CRLF, then optional spaces and a CRLF (or "--": the close delimiter). While it
        is sought, only what may begin one is kept."""
        assert self._preamble is not None
        self._preamble += chunk
        delimiter = b"--" + self.boundary
        at = 0 if len(self._preamble) == self.size else -1  # at the body's start
        while True:
            if at < 0 or not self._preamble.startswith(delimiter, at):
                found = self._preamble.find(b"\r\n" + delimiter, max(at, 0))
                if found < 0:
                    keep = len(delimiter) + 1
                    del self._preamble[: max(0, len(self._preamble) - keep)]
                    return b""
                at = found + 2
            after = bytes(self._preamble[at + len(delimiter) :]).lstrip(b" \t")
            if len(after) < 2 and not after.startswith((b"\r\n", b"--")):
                del self._preamble[: max(0, at - 2)]  # undecided: wait for more
                return b""
            if after.startswith((b"\r\n", b"--")):
                rest = bytes(self._preamble[at:])
                self._preamble = None
                return rest
            at += 1  # the boundary begins a line of the preamble: seek on

    def finish(self) -> None:
        if self._preamble is not None:  # no delimiter at all
            raise self._not_multipart()
        self.parser.finalize()
        if not self.ended:
            raise BadRequestError("the body ends before its closing boundary")
        if not self.parts:
            raise BadRequestError("the body has no parts")
        for part in self.parts:
            part.file.seek(0)

    def close(self) -> None:
        for part in self.parts:
            part.file.close()

    def _begin(self) -> None:
        self._headers = []
        self.parts.append(_Part(tempfile.TemporaryFile(prefix="dicomweb-stow-")))  # noqa: SIM115

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].file.write(data[start:end])

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((self._field.strip().lower(), self._value.strip()))
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        for name, value in self._headers:
            if name == b"content-type":
                self.parts[-1].content_type = value.decode("latin-1")

    def _end(self) -> None:
        self.ended = True


#: seconds a request body may pause before it is given up (408): a client that stops sending
#: must not hold a connection and a spool for ever (the header timeout covers only headers)
BODY_IDLE_SECONDS = 60.0


async def store_instances(
    request: Request,
    study: str | None,
    *,
    store: Callable[[list[tuple[str, BinaryIO]], str | None], list[Received]],
    base: str,
    max_upload: int,
    turn: asyncio.Lock,
) -> Response:
    """Answer one Store Instances request (see the module docstring); ``store`` stores the
    named part streams (``ops.receive.receive_instances`` on the server's archive). Bodies
    are received at once; ``turn`` lets one request store at a time (the store's writer
    lease would serialize them anyway: waiting here keeps the worker threads for reads)."""
    if study is not None and not is_safe_uid(study):
        return _text(f"{study[:80]!r} is not a Study Instance UID", 400)
    accept = request.headers.get("accept")
    if not answers_json(accept):  # before the body is read: nothing is stored
        return _text(
            f"a Store Instances response is {DICOM_JSON} (PS3.18 10.5.3), which the Accept "
            f"header {(accept or '')[:200]!r} does not take; nothing stored",
            406,
        )
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    part_type = options.get(b"type", DICOM.encode()).decode("latin-1").lower()
    if media_type.decode("latin-1").lower() != MULTIPART or part_type != DICOM:
        return _text(
            f'a Store Instances request takes {MULTIPART}; type="{DICOM}" (PS3.18 10.5.1.1)', 415
        )
    boundary = options.get(b"boundary")
    if not boundary:
        return _text("the Content-Type has no boundary", 400)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_upload:
        return _too_large(max_upload)
    spool = _Spool(boundary, max_upload)
    try:
        try:
            chunks = request.stream().__aiter__()
            while True:
                try:  # a client that stops sending holds a connection: not for ever
                    chunk = await asyncio.wait_for(chunks.__anext__(), BODY_IDLE_SECONDS)
                except StopAsyncIteration:
                    break
                if chunk:
                    await run_in_threadpool(spool.write, chunk)
            await run_in_threadpool(spool.finish)
        except TimeoutError:
            return _text(f"no part of the body came for {BODY_IDLE_SECONDS:.0f} s", 408)
        except TooLargeError:
            return _too_large(max_upload)
        except BadRequestError as exc:
            return _text(str(exc), 400)
        except ClientDisconnect:
            return _text("the client went away before the body ended", 400)
        async with turn:
            return await run_in_threadpool(_store_parts, spool.parts, study, store, base)
    finally:
        spool.close()


def answers_json(accept: str | None) -> bool:
    """Whether an Accept value takes ``application/dicom+json`` (the only response media type
    this server gives, PS3.18 10.5.3): the most specific range that matches it decides, with a
    weight above 0 (RFC 9110 12.5.1); no Accept takes anything."""
    weights: dict[int, float] = {}
    for media_range, weight in parse_weighted(accept):
        specificity = {DICOM_JSON: 2, "application/*": 1, "*/*": 0}.get(media_range)
        if specificity is not None:
            weights[specificity] = min(weight, weights.get(specificity, weight))
    return bool(weights) and weights[max(weights)] > 0


def _store_parts(
    parts: list[_Part],
    study: str | None,
    store: Callable[[list[tuple[str, BinaryIO]], str | None], list[Received]],
    base: str,
) -> Response:
    outcomes: list[Received | None] = []
    streams: list[tuple[str, BinaryIO]] = []
    for number, part in enumerate(parts, start=1):
        media_type = part.content_type.split(";")[0].strip().lower()
        if media_type not in ("", DICOM):
            failed = Received(f"part {number}", failure_reason=CANNOT_UNDERSTAND)
            failed.messages.append(f"part {number}: {media_type} is not {DICOM}; not stored")
            outcomes.append(failed)
        else:
            outcomes.append(None)
            streams.append((f"part {number}", part.file))
    stored = iter(store(streams, study) if streams else [])
    results = [outcome or next(stored) for outcome in outcomes]
    for outcome in results:
        for message in outcome.messages:
            LOG.warning("STOW-RS %s", message)
    body, status = store_response(results, base)
    return Response(body, status_code=status, media_type=DICOM_JSON)


def store_response(outcomes: list[Received], base: str) -> tuple[bytes, int]:
    """The Store Instances Response Module (PS3.18 I.1) and the status of Table 10.5.3-1."""
    stored = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    value: dict[str, Any] = {}
    studies = {o.study_instance_uid for o in stored}
    study_url = [f"{base}/studies/{studies.pop()}"] if len(studies) == 1 else []
    value["00081190"] = _element("UR", study_url)
    if failed:
        value["00081198"] = _element("SQ", [_reference(o) for o in failed])
    if stored:
        value["00081199"] = _element("SQ", [_reference(o, base=base) for o in stored])
    if not stored:
        status = 409
    elif failed or any(o.warning_reason is not None for o in stored):
        status = 202
    else:
        status = 200
    return json.dumps(value).encode(), status


def _reference(outcome: Received, *, base: str | None = None) -> dict[str, Any]:
    """An item of the SOP Instance Reference Macro (PS3.3 Table 10-11) with its reason or
    Retrieve URL."""
    item = {
        "00081150": _element("UI", [outcome.sop_class_uid] if outcome.sop_class_uid else []),
        "00081155": _element("UI", [outcome.sop_instance_uid] if outcome.sop_instance_uid else []),
    }
    if outcome.failure_reason is not None:
        item["00081197"] = _element("US", [outcome.failure_reason])
        return item
    key = (outcome.study_instance_uid, outcome.series_instance_uid, outcome.sop_instance_uid)
    item["00081190"] = _element(
        "UR", [f"{base}/studies/{key[0]}/series/{key[1]}/instances/{key[2]}"]
    )
    if outcome.warning_reason is not None:
        item["00081196"] = _element("US", [outcome.warning_reason])
    return item


def _element(vr: str, values: list[Any]) -> dict[str, Any]:
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _too_large(limit: int) -> Response:
    return _text(f"the body is larger than this server takes ({limit} bytes)", 413)


def _text(message: str, status: int) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain")

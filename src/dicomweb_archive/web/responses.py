"""What the routes of ``serve`` answer with: errors that become status codes, JSON bodies with
their ETag, ``multipart/related`` bodies (PS3.18 8.7.3) and frame lists.

A multipart body is streamed part by part; a part that fails after the response began (a store
file that cannot be read midway) is logged as one line and the connection is closed before the
closing boundary, so that no client takes a cut response for a whole one.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from dicomweb_archive.errors import BadQueryError

JsonObject = dict[str, Any]
DICOM_JSON = "application/dicom+json"
#: The most frames one request may name (PS3.18 10.4.1.1.3 frame lists): decoding is costly
MAX_FRAME_LIST = 500
LOG = logging.getLogger("dicomweb_archive.web")
Chunk = bytes | memoryview


class NotFoundError(Exception):
    """A resource the store does not hold (404). ``answer`` is the answer's sentence, saying
    what was not found (never a storage name nor patient data); without it, "not found"."""

    def __init__(self, *args: object, answer: str = "") -> None:
        super().__init__(*args)
        self.answer = answer


class UnacceptableError(Exception):
    """What was asked for cannot be given (406); the message says what is available.
    ``asked`` words the request when it was not the Accept header (a query parameter)."""

    def __init__(self, available: str, *, asked: str | None = None) -> None:
        super().__init__(available)
        self.asked = asked


class ResponseCutShortError(Exception):
    """A response failed after its status line was sent (logged once, as one line)."""


def json_body(value: Any) -> tuple[bytes, str]:
    """JSON bytes and their ETag."""
    body = orjson.dumps(value)
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def frame_numbers(numbers: str | None, count: int) -> list[int]:
    if numbers is None:
        return list(range(1, count + 1))
    if numbers.count(",") >= MAX_FRAME_LIST:
        raise BadQueryError(
            f"a frame list names at most {MAX_FRAME_LIST} frames; ask for the rest in "
            "further requests"
        )
    try:
        chosen = [int(n) for n in numbers.split(",")]
    except ValueError as exc:
        raise BadQueryError(f"frame list {numbers!r} is not a list of numbers") from exc
    if not chosen or any(n < 1 or n > count for n in chosen):
        if any(n < 1 for n in chosen):  # frames are numbered from 1 (PS3.18 10.4.1.1.3)
            raise BadQueryError(f"frame list {numbers!r}: frame numbers start at 1")
        has = f"the instance has {count} frame{'s' if count != 1 else ''}"
        raise NotFoundError(
            f"frames {numbers} ({has})", answer=f"not found: frame {numbers[:100]} ({has})"
        )
    return chosen


def multipart(
    parts: Iterator[bytes], part_type: str, type_parameter: str, etag: str | None
) -> StreamingResponse:
    """A ``multipart/related`` response of ``parts``, each of ``part_type``."""
    return multipart_streamed(
        ((part_type, [data]) for data in parts), type_parameter, etag, what="multipart response"
    )


def multipart_streamed(
    parts: Iterator[tuple[str, Iterable[Chunk]]],
    type_parameter: str,
    etag: str | None,
    *,
    what: str,
) -> StreamingResponse:
    """A ``multipart/related`` response of ``(content type, chunks)`` parts, each streamed;
    ``what`` names the response in the log line of a failure midway."""
    boundary = uuid.uuid4().hex

    def body() -> Iterator[Chunk]:  # a plain iterator: Starlette runs it in its thread pool
        try:
            for part_type, chunks in parts:
                yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
                yield from chunks
                yield b"\r\n"
        except Exception as exc:
            LOG.error("%s: cut short: %s", what, exc)
            raise ResponseCutShortError(what) from exc
        yield f"--{boundary}--\r\n".encode()

    media_type = f'multipart/related; type="{type_parameter}"; boundary={boundary}'
    headers = {"ETag": etag} if etag else {}
    return StreamingResponse(body(), media_type=media_type, headers=headers)

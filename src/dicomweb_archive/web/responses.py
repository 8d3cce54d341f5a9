"""What the routes of ``serve`` answer with: errors that become status codes, JSON bodies with
their ETag, ``multipart/related`` bodies (PS3.18 8.7.3) and frame lists."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from dicomweb_archive.errors import BadQueryError

JsonObject = dict[str, Any]
DICOM_JSON = "application/dicom+json"


class NotFoundError(Exception):
    """A resource the store does not hold (404)."""


class UnacceptableError(Exception):
    """The Accept header cannot be satisfied (406)."""


def json_body(value: Any) -> tuple[bytes, str]:
    """JSON bytes and their ETag."""
    body = orjson.dumps(value)
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def frame_numbers(numbers: str | None, count: int) -> list[int]:
    if numbers is None:
        return list(range(1, count + 1))
    try:
        chosen = [int(n) for n in numbers.split(",")]
    except ValueError as exc:
        raise BadQueryError(f"frame list {numbers!r} is not a list of numbers") from exc
    if not chosen or any(n < 1 or n > count for n in chosen):
        raise NotFoundError(f"frames {numbers} (the instance has {count})")
    return chosen


def multipart(
    parts: Iterator[bytes], part_type: str, type_parameter: str, etag: str | None
) -> StreamingResponse:
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:  # a plain iterator: Starlette runs it in its thread pool
        for data in parts:
            yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    media_type = f'multipart/related; type="{type_parameter}"; boundary={boundary}'
    headers = {"ETag": etag} if etag else {}
    return StreamingResponse(body(), media_type=media_type, headers=headers)

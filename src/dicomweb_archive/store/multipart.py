"""Frame files: one ``multipart/related`` body part per frame (PS3.18 8.7.3, RFC 2387).

Each frame file is exactly what a WADO-RS frame response with one part contains, so a static
server can send it as is (``docs/spec/store-layout.md``)::

    --<boundary>\\r\\n
    Content-Type: <media type>; transfer-syntax=<uid>\\r\\n
    \\r\\n
    <bytes>\\r\\n--<boundary>--

The boundary is derived from the frame's SHA-256 (deterministic, and it cannot occur in the
frame's bytes in practice); the original tool used random boundaries.
"""

from __future__ import annotations

BOUNDARY_PREFIX = "dicomweb-archive-"


def boundary_for(sha256: str) -> str:
    return BOUNDARY_PREFIX + sha256[:32]


def part_header(boundary: str, content_type: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")


def part_trailer(boundary: str) -> bytes:
    return f"\r\n--{boundary}--".encode("ascii")


def parse_part(data: bytes, *, source: str) -> tuple[str, memoryview]:
    """Content type and payload of a body part; the payload is a view of ``data`` (no copy)."""
    first_line_end = data.find(b"\r\n")
    headers_end = data.find(b"\r\n\r\n")
    if not data.startswith(b"--") or first_line_end < 0 or headers_end < 0:
        raise ValueError(f"{source}: not a multipart body part")
    boundary = data[2:first_line_end]
    trailer = b"\r\n--" + boundary + b"--"
    if not data.endswith(trailer):
        raise ValueError(f"{source}: multipart body part has no closing boundary")
    content_type = ""
    for line in data[first_line_end + 2 : headers_end].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            content_type = value.strip().decode("ascii")
    return content_type, memoryview(data)[headers_end + 4 : len(data) - len(trailer)]

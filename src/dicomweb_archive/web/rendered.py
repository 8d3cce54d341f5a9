"""WADO-RS rendered and thumbnail resources (PS3.18 8.3.5, 10.4.1.1.3): the routes' answers.

``.../rendered`` and ``.../thumbnail`` at study, series, instance and frame level, as
``image/jpeg`` (the default) or ``image/png``, chosen by the ``accept`` query parameter, else
the Accept header, weights honoured (PS3.18 8.3.3.1, RFC 9110 12.5.1); any other type is 406.
Query parameters (PS3.18 8.3.5.1), each 400 when invalid: ``window=center,width[,function]``
(``linear``, ``linear-exact``, ``sigmoid``; rendered resources only),
``viewport=vw,vh[,sx,sy,sw,sh]``, ``quality=1..100``; frame numbers start at 1 (0 is 400).
Which frame stands for a study, series or instance, and how it is rendered: ``ops/render.py``
and ``dicom/render.py``. A frame list naming more than one frame gives a
``multipart/related`` body, one image per frame. A thumbnail asked with the defaults is the
stored ``thumbnail.jpg`` when ``mkdicomweb --thumbnails`` wrote one, else it is rendered; the
server never writes to the store.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomweb_archive.errors import BadQueryError, NoSuchInstanceError
from dicomweb_archive.ops import render as ops
from dicomweb_archive.store.instance import InstanceKey, read_info
from dicomweb_archive.web.negotiate import parse_weighted
from dicomweb_archive.web.responses import (
    NotFoundError,
    UnacceptableError,
    frame_numbers,
    multipart,
)

if TYPE_CHECKING:
    from dicomweb_archive.dicom.render import RenderOptions
    from dicomweb_archive.web.app import Server

JPEG, PNG = "image/jpeg", "image/png"
#: the largest viewport width or height (an image of 4096 x 4096 RGB is 48 MB in memory)
MAX_VIEWPORT = 4096
#: the series metadata the rendered routes read, by file and etag (``ops/render.py``)
CACHE: ops.MetadataCache = {}


def rendered(
    server: Server,
    request: Request,
    study: str,
    *,
    series: str | None = None,
    sop: str | None = None,
    frames: str | None = None,
    thumbnail: bool = False,
) -> Response:
    """A rendered (or thumbnail) resource of a study, series, instance or frames."""
    from dicomweb_archive.dicom.render import RenderOptions  # noqa: PLC0415 - PIL, pydicom

    params = request.query_params
    options = RenderOptions(
        media_type=choose_media_type(params.get("accept"), request.headers.get("accept")),
        window=None if thumbnail else parse_window(params.get("window")),
        viewport=parse_viewport(params.get("viewport")),
        quality=parse_quality(params.get("quality")),
    )
    if thumbnail and options.viewport is None:
        options = RenderOptions(
            options.media_type, None, ops.thumbnail_options().viewport, options.quality
        )
    ids = [server.uid(u) for u in (study, series, sop) if u is not None]
    try:
        images = server.archive.read(lambda: _images(server, ids, frames, options, thumbnail))
    except NoSuchInstanceError as exc:
        raise NotFoundError(str(exc), answer=_missing(server, ids)) from exc
    if len(images) == 1:
        return Response(images[0], media_type=options.media_type)
    return multipart(iter(images), options.media_type, options.media_type, None)


def _missing(server: Server, ids: list[str]) -> str:
    """What of a rendered resource's study, series, instance or image is not in the store,
    worded for the answer (no UID repeated, no patient data): the first level that is missing,
    else that the study, series or instance holds no image (no Pixel Data)."""
    storage, keys = server.storage, server.keys
    levels = [
        ("study", keys.series_index(ids[0])),
        ("series", keys.series_metadata(*ids[:2]) if len(ids) > 1 else None),
        ("instance", keys.info(*ids) if len(ids) > 2 else None),
    ]
    for level, name in levels:
        if name is not None and storage.head(name) is None:
            return f"not found: the {level} is not in the store"
    return f"not found: the {levels[len(ids) - 1][0]} holds no image"


def _images(
    server: Server, ids: list[str], frames: str | None, options: RenderOptions, thumbnail: bool
) -> list[bytes]:
    storage, keys = server.storage, server.keys
    if len(ids) < 3:
        key = ops.representative(storage, keys, ids[0], ids[1] if len(ids) > 1 else None)
        stored = keys.study_thumbnail(ids[0]) if len(ids) == 1 else keys.series_thumbnail(*ids)
    else:
        key = InstanceKey(*ids)
        stored = keys.instance_thumbnail(*ids)
    default = thumbnail and frames is None and options == ops.thumbnail_options()
    if default and storage.head(stored) is not None:
        return [storage.get(stored)]
    # first: an instance not in its series is not found (its info record is then missing)
    metadata = ops.instance_metadata(storage, keys, key, CACHE)
    numbers = [1]
    if frames is not None:
        numbers = frame_numbers(frames, len(read_info(storage, keys, key).frames))
    return [ops.render(storage, keys, key, n, options, metadata=metadata) for n in numbers]


def choose_media_type(parameter: str | None, header: str | None) -> str:
    """``image/jpeg`` or ``image/png``, as the ``accept`` parameter (else the Accept header)
    weighs them (RFC 9110 12.5.1, PS3.18 8.3.3.1): each type takes the weight of the most
    specific range naming it (``image/png`` before ``image/*`` before ``*/*``); the heavier
    wins, of two alike the one listed first, JPEG for a wildcard; weight 0 refuses. Raises
    UnacceptableError (naming the parameter when it was the parameter that asked)."""
    ranges = parse_weighted(parameter if parameter else header)
    best: tuple[float, int, bool, str] | None = None
    for candidate in (JPEG, PNG):
        matching = [
            (specificity, -position, weight)
            for position, (media_range, weight) in enumerate(ranges)
            for specificity, pattern in ((2, candidate), (1, "image/*"), (0, "*/*"))
            if media_range == pattern
        ]
        if not matching:
            continue
        _, position, weight = max(matching)  # the most specific; of those, the first
        rank = (weight, position, candidate == JPEG, candidate)
        if weight > 0 and (best is None or rank > best):
            best = rank
    if best is None:
        raise UnacceptableError(
            f"{JPEG}, {PNG}", asked=f"accept={parameter}" if parameter else None
        )
    return best[3]


def parse_window(value: str | None) -> Any:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.2), or None."""
    from dicomweb_archive.dicom.render import WINDOW_FUNCTIONS, Window  # noqa: PLC0415

    if value is None:
        return None
    parts = value.split(",")
    function = parts[2].strip().lower() if len(parts) == 3 else "linear"
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        center = width = math.nan
    if len(parts) not in (2, 3) or not (math.isfinite(center) and math.isfinite(width)):
        raise BadQueryError(f"window={value!r}: center,width[,function], two numbers")
    if function not in WINDOW_FUNCTIONS:
        raise BadQueryError(f"window function {function!r}: linear, linear-exact or sigmoid")
    if width < 1 if function == "linear" else width <= 0:
        raise BadQueryError(f"window width {width:g}: at least 1 (linear), else above 0")
    return Window(center, width, WINDOW_FUNCTIONS[function])


def parse_viewport(value: str | None) -> Any:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3), or None."""
    from dicomweb_archive.dicom.render import Viewport  # noqa: PLC0415

    if value is None:
        return None
    try:
        numbers = [int(n) for n in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 6) or not all(0 < n <= MAX_VIEWPORT for n in numbers[:2]):
        raise BadQueryError(
            f"viewport={value!r}: vw,vh[,sx,sy,sw,sh], whole numbers, vw and vh 1 to {MAX_VIEWPORT}"
        )
    if len(numbers) == 2:
        return Viewport(numbers[0], numbers[1])
    sx, sy, sw, sh = numbers[2:]
    if sx < 0 or sy < 0 or sw == 0 or sh == 0:
        raise BadQueryError(f"viewport={value!r}: sx and sy at least 0, sw and sh not 0")
    return Viewport(numbers[0], numbers[1], (sx, sy, sw, sh))


def parse_quality(value: str | None) -> int:
    """``quality=1..100`` (PS3.18 8.3.5.1.4); the default when absent."""
    from dicomweb_archive.dicom.render import DEFAULT_QUALITY  # noqa: PLC0415

    if value is None:
        return DEFAULT_QUALITY
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise BadQueryError(f"quality={value!r}: a whole number from 1 to 100")
    return int(value)


def routes(server: Server, wrap: Any) -> list[Route]:
    """The rendered and thumbnail routes of every level (``web/app.py`` mounts them)."""
    levels = [
        "/studies/{study}",
        "/studies/{study}/series/{series}",
        "/studies/{study}/series/{series}/instances/{sop}",
        "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
    ]
    out = []
    for path in levels:
        for name, thumbnail in (("rendered", False), ("thumbnail", True)):

            def handler(request: Request, thumbnail: bool = thumbnail, **ids: str) -> Response:
                return rendered(server, request, **ids, thumbnail=thumbnail)

            out.append(Route(f"{path}/{name}", wrap(handler)))
    return out

"""Rendered and thumbnail resources of the store (PS3.18 8.3.5, 10.4.1.1.3): which frame, with
which attributes, and the thumbnails kept as derived files.

- An instance's rendered resource is its first frame (PS3.18 allows a multi-frame media type
  for a multi-frame instance; this store gives the first frame); a frame list's is each frame.
- A series' is its representative instance's: the middle one, in InstanceNumber order, of its
  instances with Pixel Data (as viewers pick a series' thumbnail); a study's is that of its
  first series (by SeriesNumber) holding an image.
- The attributes are the instance's metadata now (the series ``metadata.gz``: an edit of
  Window Center counts); the frame is decoded from its stored file with the pixel description
  it was stored with (``dicom/codecs.py``), one frame at a time.
- A thumbnail is the rendered resource in the default viewport (:data:`THUMBNAIL`, 128 x 128,
  aspect kept), JPEG. ``mkdicomweb --thumbnails`` (and ``mkdicomwebstudy --thumbnails``) keep
  them as derived files (``thumbnail.jpg`` in the study, series and instance folders,
  ``docs/spec/store-layout.md``) inside the study stage's transaction
  (:func:`stage_thumbnails`), so that a static server serves them; a change to a series'
  metadata drops its thumbnails and the study's (``ops/study.py``), so does an instance written
  by a change (a replacement, STOW-RS, C-STORE: ``ops/changes.py``, its pixels may be new where
  its metadata is not), and the next study stage with ``--thumbnails`` writes them again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import ArchiveError, NoSuchInstanceError, NoSuchObjectError
from dicomweb_archive.model.pixel import PixelDescription
from dicomweb_archive.store.instance import InstanceKey, read_bulk, read_frame, read_info
from dicomweb_archive.store.journal import Transaction
from dicomweb_archive.store.keys import StoreKeys
from dicomweb_archive.store.storage import Reader, from_json_gz

JsonObject = dict[str, Any]
PIXEL_DATA_KEY = "7FE00010"  # (7FE0,0010) PixelData
SOP_INSTANCE_UID_KEY = "00080018"  # (0008,0018) SOPInstanceUID
SERIES_INSTANCE_UID_KEY = "0020000E"  # (0020,000E) SeriesInstanceUID
#: the viewport of a thumbnail when none is asked for (PS3.18 leaves it to the origin server)
THUMBNAIL_SIZE = 128
#: studies per transaction of :func:`write_thumbnails`
CHUNK = 100
#: series whose metadata a :data:`MetadataCache` keeps
CACHE_SIZE = 32
#: (series metadata key, etag) -> the series' instance objects by SOP Instance UID
MetadataCache = dict[tuple[str, str], dict[str, JsonObject]]


def thumbnail_options() -> Any:
    """The options of a stored thumbnail: JPEG, 128 x 128, the default quality."""
    from dicomweb_archive.dicom.render import RenderOptions, Viewport  # noqa: PLC0415 - PIL

    return RenderOptions(viewport=Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE))


def series_metadata(reader: Reader, keys: StoreKeys, study: str, series: str) -> list[JsonObject]:
    """The series' instance objects now (its ``metadata.gz``), in InstanceNumber order.

    Raises NoSuchInstanceError when the series is not in the store.
    """
    try:
        value = from_json_gz(reader.get(keys.series_metadata(study, series)))
    except NoSuchObjectError as exc:
        raise NoSuchInstanceError(f"series {series} of study {study} is not in the store") from exc
    return list(value)


def instance_metadata(
    reader: Reader, keys: StoreKeys, key: InstanceKey, cache: MetadataCache | None = None
) -> JsonObject:
    """An instance's object in its series metadata (its metadata now); ``cache`` keeps the
    series' objects by their file's etag (a server renders a series' frames one by one)."""
    name = keys.series_metadata(key.study, key.series)
    head = reader.head(name) if cache is not None else None
    objects = cache.get((name, head.etag)) if cache is not None and head is not None else None
    if objects is None:
        objects = {
            _uid(obj, SOP_INSTANCE_UID_KEY): obj
            for obj in series_metadata(reader, keys, key.study, key.series)
        }
        if cache is not None and head is not None:
            if len(cache) >= CACHE_SIZE:
                cache.pop(next(iter(cache)))
            cache[(name, head.etag)] = objects
    if key.sop not in objects:
        raise NoSuchInstanceError(f"instance {key.sop} is not in the store")
    return objects[key.sop]


def representative(
    reader: Reader, keys: StoreKeys, study: str, series: str | None = None
) -> InstanceKey:
    """The instance whose first frame stands for a series (or a study): see the docstring.

    Raises NoSuchInstanceError when the series (study) holds no image.
    """
    if series is not None:
        candidates = [series]
    else:
        try:
            listing = from_json_gz(reader.get(keys.series_index(study)))
        except NoSuchObjectError as exc:
            raise NoSuchInstanceError(f"study {study} is not in the store") from exc
        candidates = [_uid(obj, SERIES_INSTANCE_UID_KEY) for obj in listing]
    for uid in candidates:
        images = [o for o in series_metadata(reader, keys, study, uid) if PIXEL_DATA_KEY in o]
        if images:
            return InstanceKey(study, uid, _uid(images[len(images) // 2], SOP_INSTANCE_UID_KEY))
    raise NoSuchInstanceError(f"{series or study} holds no image")


def render(
    reader: Reader,
    keys: StoreKeys,
    key: InstanceKey,
    number: int,
    options: Any,
    *,
    metadata: JsonObject | None = None,
) -> bytes:
    """Frame ``number`` of an instance rendered as ``options`` (``dicom/render.py``'s
    ``RenderOptions``) ask; ``metadata``: the instance's metadata now, when known.

    Raises NoSuchInstanceError when the instance has no such frame, CodecError when the
    frame cannot be decoded or rendered.
    """
    from dicomweb_archive.dicom.codecs import decode_frame  # noqa: PLC0415 - numpy, codecs
    from dicomweb_archive.dicom.render import (  # noqa: PLC0415
        expand_ybr_422,
        render_frame,
        to_attributes,
    )
    from dicomweb_archive.model.syntax import NATIVE  # noqa: PLC0415

    info = read_info(reader, keys, key)
    if not 1 <= number <= len(info.frames):
        raise NoSuchInstanceError(f"{key.sop} has no frame {number} ({len(info.frames)} stored)")
    if metadata is None:
        metadata = instance_metadata(reader, keys, key)
    pixel = info.stored.pixel or PixelDescription.from_metadata(info.metadata or {})
    data = read_frame(reader, keys, key, number)
    syntax = info.frame_syntax(number)
    if syntax in NATIVE and pixel.photometric_interpretation == "YBR_FULL_422":
        array, photometric = expand_ybr_422(bytes(data), pixel), "YBR_FULL_422"
    else:
        array, photometric = decode_frame(bytes(data), syntax, pixel)

    def bulk(uri: str) -> bytes:
        return read_bulk(reader, keys, key.study, "".join(uri.split("/")[-3:]))

    return render_frame(array, pixel, photometric, to_attributes(metadata, bulk), options)


def write_thumbnails(archive: Archive, studies: Iterable[str]) -> int:
    """Write the thumbnails ``studies`` lack (:func:`stage_thumbnails`), under the write
    lease, :data:`CHUNK` studies per transaction; returns how many were written."""
    todo = sorted(set(studies))
    written = 0
    with archive.writing("thumbnails"):
        for start in range(0, len(todo), CHUNK):
            txn = archive.transaction()
            for study in todo[start : start + CHUNK]:
                written += stage_thumbnails(txn, archive.keys, study)
            archive.commit(txn)
    return written


def stage_thumbnails(txn: Transaction, keys: StoreKeys, study: str) -> int:
    """Write the thumbnails a study lacks (study, series, instances with Pixel Data) into
    ``txn``; returns how many were written. An instance whose frame cannot be rendered gets
    none (its series' representative is then another one's thumbnail or none)."""
    options = thumbnail_options()
    written = 0
    made: set[InstanceKey] = set()  # the instances with a thumbnail
    if txn.head(keys.series_index(study)) is None:
        return 0
    for obj in from_json_gz(txn.get(keys.series_index(study))):
        series = _uid(obj, SERIES_INSTANCE_UID_KEY)
        for meta in series_metadata(txn, keys, study, series):
            if PIXEL_DATA_KEY not in meta:
                continue
            key = InstanceKey(study, series, _uid(meta, SOP_INSTANCE_UID_KEY))
            name = keys.instance_thumbnail(study, series, key.sop)
            if txn.head(name) is None:
                try:
                    image = render(txn, keys, key, 1, options, metadata=meta)
                except ArchiveError:
                    continue  # no frame, or one that cannot be decoded: no thumbnail
                txn.put(name, image, content_type="image/jpeg")
                written += 1
            made.add(key)
    for name, key in _level_thumbnails(txn, keys, study):
        if key in made and txn.head(name) is None:
            txn.copy(keys.instance_thumbnail(key.study, key.series, key.sop), name)
            written += 1
    return written


def _level_thumbnails(
    txn: Transaction, keys: StoreKeys, study: str
) -> list[tuple[str, InstanceKey]]:
    """The study's and each series' thumbnail keys, with their representative instances."""
    out = []
    for series in [
        _uid(o, SERIES_INSTANCE_UID_KEY) for o in from_json_gz(txn.get(keys.series_index(study)))
    ]:
        try:
            out.append(
                (keys.series_thumbnail(study, series), representative(txn, keys, study, series))
            )
        except NoSuchInstanceError:
            continue
    with contextlib.suppress(NoSuchInstanceError):  # a study without an image has none
        out.append((keys.study_thumbnail(study), representative(txn, keys, study)))
    return out


def _uid(obj: JsonObject, tag: str) -> str:
    return str((obj.get(tag, {}).get("Value") or [""])[0])

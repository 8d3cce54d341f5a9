"""``verify --against DIR``: the store against the received P10 files.

The check is specified in ``docs/spec/export-verify.md``.

Every file under DIR must be in the store (by SOP Instance UID) with the SHA-256 recorded at
ingest; a file whose instance was edited since is counted ``edited``, not ``identical`` (the
store holds what was received, but serves and exports it edited). Where the store no longer
holds a file's codestreams (frames of a compressed original recompressed at ingest), the
file's frames are decoded and must give the pixel hashes recorded for the stored frames
(``docs/spec/recompression.md``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.parts import FramePart, InstanceHeader, generate_parts
from dicomweb_archive.errors import ArchiveError, CodecError
from dicomweb_archive.model.query import first_value
from dicomweb_archive.model.tags import SOP_INSTANCE_UID_KEY
from dicomweb_archive.store.edit_state import steps_of
from dicomweb_archive.store.instance import InstanceKey, read_info

if TYPE_CHECKING:
    from dicomweb_archive.ops.verify import VerifyReport


def _sop_of(path: Path) -> str:
    """The SOP Instance UID of a P10 file, from its header only."""
    with path.open("rb") as handle:
        parts = generate_parts(handle, frames_uri=lambda _m: "", bulk_uri=lambda _m, _s: "")
        try:
            header = next(parts)
        finally:
            parts.close()
    assert isinstance(header, InstanceHeader)
    sop = first_value(header.metadata, SOP_INSTANCE_UID_KEY)
    if not isinstance(sop, str) or not sop:
        raise ArchiveError(f"{path}: no SOPInstanceUID")
    return sop


def verify_against(archive: Archive, directory: Path, report: VerifyReport) -> None:
    """Every P10 file under ``directory`` must be in the store with the same SHA-256; for an
    instance whose compressed original was recompressed (``pixels+attributes``), every frame of
    the file must also decode to the pixels the store's frames decode to (their recorded
    hash), which closes the proof that the store holds what was received."""
    stored = {row["sop_instance_uid"]: row for row in archive.index.all_instances()}
    counts = {
        "files": 0,
        "identical": 0,
        "edited": 0,
        "different": 0,
        "missing": 0,
        "not_dicom": 0,
    }
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        counts["files"] += 1
        try:
            sop = _sop_of(path)
        except (ArchiveError, OSError):
            counts["not_dicom"] += 1
            continue
        with path.open("rb") as handle:
            sha = hashlib.file_digest(handle, "sha256").hexdigest()
        row = stored.get(sop)
        if row is None:
            counts["missing"] += 1
            report.add("against", str(path), f"SOPInstanceUID {sop} is not in the store")
        elif row["original_sha256"] != sha:
            counts["different"] += 1
            report.add("against", str(path), f"SOPInstanceUID {sop} differs from the store")
        else:
            key = InstanceKey(row["study_instance_uid"], row["series_instance_uid"], sop)
            edited = bool(steps_of(archive.storage, archive.keys, key))
            counts["edited" if edited else "identical"] += 1
            message = _original_pixels_differ(archive, key, path)
            if message is not None:
                report.add("against", str(path), message)
    report.against = counts


def _original_pixels_differ(archive: Archive, key: InstanceKey, path: Path) -> str | None:
    """For an instance whose original codestreams are not kept: why the file's frames do not
    decode to the recorded source pixels (None: they do, or there is nothing to check)."""
    try:
        info = read_info(archive.storage, archive.keys, key)
    except ArchiveError:
        return None  # the store check reports the instance itself
    pixel = info.stored.pixel
    if info.rebuilds_original() or pixel is None:
        return None
    with path.open("rb") as handle:
        for part in generate_parts(
            handle, frames_uri=lambda _m: "", bulk_uri=lambda _m, _s: "", name=str(path)
        ):
            if not isinstance(part, FramePart) or part.number > len(info.frames):
                continue
            source = info.frames[part.number - 1].source
            if source is None:
                continue
            try:
                from dicomweb_archive.dicom.codecs import decode_frame, native_bytes  # noqa: PLC0415

                array, _ = decode_frame(bytes(part.data), source.transfer_syntax_uid, pixel)
            except CodecError as exc:
                return f"frame {part.number} of the original cannot be decoded: {exc}"
            digest = hashlib.sha256(native_bytes(array, pixel)).hexdigest()
            if digest != source.pixels_sha256:
                return (
                    f"frame {part.number} of the original decodes to other pixels than the store's"
                )
    return None

"""Generated DICOM test files (never downloaded): CT slices, multi-frame images, bad inputs.

Also used by ``bench/`` to build its data sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

if TYPE_CHECKING:  # scripts/sample_data.py (the demo) runs without the test extras
    import pytest

ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root, for generated test data only


def uid(suffix: str | int) -> str:
    """A deterministic UID under pydicom's root."""
    return f"{ROOT}{suffix}"


def make_ct(
    *,
    study: str,
    series: str,
    sop: str,
    patient_id: str = "PAT001",
    patient_name: str = "DOE^JOHN",
    instance_number: int = 1,
    rows: int = 64,
    columns: int = 64,
    frames: int = 1,
    seed: int = 0,
    modality: str = "CT",
    realistic: bool = False,
) -> Dataset:
    """A small but complete CT-like image (uncompressed, explicit VR little endian): uniform
    noise, or with ``realistic`` a :func:`phantom` slice per frame."""
    rng = np.random.default_rng(seed)
    if realistic:
        pixels = np.stack([phantom(rows, columns, seed + n) for n in range(frames)])
    else:
        pixels = rng.integers(0, 4096, size=(frames, rows, columns), dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "ACC1"
    ds.Modality = modality
    ds.ReferringPhysicianName = "WHO^CARES"
    ds.StudyDescription = "Generated study"
    ds.SeriesDescription = "Generated series"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.SliceThickness = "1.250"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0, 0, float(instance_number)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = pixels.tobytes()
    return ds


def write_ct(path: Path, **kwargs: object) -> Path:
    """Write :func:`make_ct` to ``path`` as a P10 file."""
    ds = make_ct(**kwargs)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    directory: Path,
    *,
    count: int,
    study: str | None = None,
    series: str | None = None,
    rows: int = 64,
    columns: int = 64,
    patient_id: str = "PAT001",
    patient_name: str = "DOE^JOHN",
    prefix: str = "IM",
    realistic: bool = False,
) -> list[Path]:
    """A series of ``count`` CT slices; UIDs derived deterministically unless given."""
    study = study or generate_uid(prefix=ROOT, entropy_srcs=[str(directory), "study"])
    series = series or generate_uid(prefix=ROOT, entropy_srcs=[str(directory), "series"])
    paths = []
    for number in range(1, count + 1):
        sop = generate_uid(prefix=ROOT, entropy_srcs=[series, str(number)])
        paths.append(
            write_ct(
                directory / f"{prefix}{number:05d}.dcm",
                study=study,
                series=series,
                sop=sop,
                instance_number=number,
                rows=rows,
                columns=columns,
                patient_id=patient_id,
                patient_name=patient_name,
                seed=number,
                realistic=realistic,
            )
        )
    return paths


def write_odd_bits(path: Path, *, study: str, series: str, sop: str) -> Path:
    """A two-frame signed 12-bit CT whose second frame has bits above Bits Stored that are not
    the sign (as some modalities write overlays): frame 1 is recompressed as values, frame 2 as
    16-bit words (:func:`refuse_overlay_frames` makes a codec refuse it instead)."""
    ds = make_ct(study=study, series=series, sop=sop, frames=2, rows=32, columns=32)
    ds.PixelRepresentation = 1
    values = np.arange(-512, 512, dtype=np.int16).reshape(32, 32)
    second = values.view(np.uint16) & 0x0FFF | 0x4000  # 12 stored bits, bit 14 set
    ds.PixelData = values.tobytes() + second.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def phantom(rows: int, columns: int, seed: int) -> np.ndarray:
    """A CT-like slice (stored values, rescale intercept -1024): air around an elliptic body
    of soft tissue with two lungs and a vertebra, quantum noise (sigma 8), zero outside the
    circular field of view. Compresses losslessly about as real CT does (JPEG-LS ~3:1)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    cx, cy = columns / 2, rows / 2
    image = np.full((rows, columns), 24.0)  # air, -1000 HU
    image[np.hypot((x - cx) / (0.42 * columns), (y - cy) / (0.33 * rows)) < 1] = 1064  # 40 HU
    for side in (0.35, 0.65):
        lung = np.hypot((x - side * columns) / (0.1 * columns), (y - cy) / (0.15 * rows)) < 1
        image[lung] = 224  # -800 HU
    image[np.hypot((x - cx) / (0.04 * columns), (y - 0.7 * rows) / (0.04 * rows)) < 1] = 2024
    image += rng.normal(0, 8, (rows, columns))
    pixels: np.ndarray = np.clip(image, 0, 4095).astype(np.uint16)
    pixels[np.hypot(x - cx, y - cy) > min(rows, columns) / 2] = 0
    return pixels


def refuse_overlay_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make recompression refuse frames with bit 14 set but not bit 15 (frame 2 of
    :func:`write_odd_bits`), so that an instance has a frame kept as received beside
    recompressed ones."""
    from dicomweb_archive.dicom.codecs import encode as real
    from dicomweb_archive.errors import CodecError

    def encode(array: np.ndarray, syntax: str) -> bytes:
        if ((np.asarray(array).view(np.uint16) & 0xC000) == 0x4000).any():
            raise CodecError("refused by the test")
        return real(array, syntax)

    monkeypatch.setattr("dicomweb_archive.dicom.recompress.encode", encode)

"""Rendered frames per second: ours against pydicom + Pillow on the same frames, in the same run.

Usage: python bench/render.py [--count 50] [--size 512] [--runs 5] [--workdir DIR]

A generated series of ``count`` CT phantom slices (``size`` x ``size``, 16 bits, with Window
Center/Width and Rescale) is ingested with the default JPEG-LS recompression. Then, each the
median of ``runs`` passes over every instance (interleaved):

- ours: ``ops/render.py``'s ``render`` of frame 1 as JPEG (quality 90) at its size, as
  ``/rendered`` answers: info record read, series metadata read once per pass (the
  server keeps it by its etag), the stored JPEG-LS frame decoded
  (imagecodecs), Modality LUT and window (pydicom's pixels utilities), 8 bits, Pillow;
- ours with a 128 x 128 viewport, as ``/thumbnail`` renders one that is not stored;
- pydicom + Pillow: each instance as a JPEG-LS P10 file in memory (the same stored frame,
  made beforehand, not timed) read by ``pydicom.dcmread``, ``pixel_array`` (pydicom's JPEG-LS
  decoder: pylibjpeg-libjpeg), ``apply_modality_lut``, ``apply_voi_lut``, 8 bits, Pillow JPEG.

Prints a Markdown table (frames/s, and ours against pydicom + Pillow).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut  # noqa: E402
from pydicom.uid import JPEGLSLossless  # noqa: E402
from tests.factory import write_series  # noqa: E402

from dicomweb_archive import Archive, ingest  # noqa: E402
from dicomweb_archive.dicom.render import RenderOptions, Viewport  # noqa: E402
from dicomweb_archive.ops.render import MetadataCache, instance_metadata, render  # noqa: E402
from dicomweb_archive.store.instance import InstanceKey, read_frame  # noqa: E402


def median_rates(
    actions: dict[str, Callable[[], object]], frames: int, runs: int
) -> dict[str, float]:
    """Frames per second of each action: ``frames`` divided by its median time over ``runs``
    rounds, each round running every action once (interleaved: a machine shared with other
    work slows them alike)."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            start = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - start)
    return {name: frames / statistics.median(spent) for name, spent in times.items()}


def pydicom_render(data: bytes) -> bytes:
    """A JPEG-LS P10 file rendered with pydicom and Pillow alone."""
    ds = pydicom.dcmread(io.BytesIO(data))
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, prefer_lut=False)
    bits = int(ds.BitsStored)
    low = -(2 ** (bits - 1)) if ds.PixelRepresentation else 0
    high = 2 ** (bits - 1) - 1 if ds.PixelRepresentation else 2**bits - 1
    low, high = (
        low * ds.RescaleSlope + ds.RescaleIntercept,
        high * ds.RescaleSlope + ds.RescaleIntercept,
    )
    display = np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(display, "L").save(out, format="JPEG", quality=90)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        files = write_series(
            workdir / "in", count=args.count, rows=args.size, columns=args.size, realistic=True
        )
        with Archive.open_or_create(workdir / "store") as archive:
            assert ingest(archive, files).ok
            storage, keys = archive.storage, archive.keys
            instances = []
            for path in files:
                ds = pydicom.dcmread(path)
                key = InstanceKey(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
                ds.PixelData = encapsulate([bytes(read_frame(storage, keys, key, 1))])
                ds.file_meta.TransferSyntaxUID = JPEGLSLossless
                out = io.BytesIO()
                ds.save_as(out, enforce_file_format=True)
                instances.append((key, out.getvalue()))

            def ours(options: RenderOptions) -> Callable[[], None]:
                def run() -> None:
                    cache: MetadataCache = {}  # as the server keeps a series' metadata
                    for key, _ in instances:
                        metadata = instance_metadata(storage, keys, key, cache)
                        render(storage, keys, key, 1, options, metadata=metadata)

                return run

            key, data = instances[0]  # the same image from both: the same work is measured
            assert render(storage, keys, key, 1, RenderOptions()) == pydicom_render(data)
            count = len(instances)
            rates = median_rates(
                {
                    "ours, rendered (JPEG, frame size)": ours(RenderOptions()),
                    "ours, thumbnail (JPEG, 128 x 128)": ours(
                        RenderOptions(viewport=Viewport(128, 128))
                    ),
                    "pydicom + Pillow (JPEG, frame size)": lambda: [
                        pydicom_render(data) for _, data in instances
                    ],
                },
                count,
                args.runs,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    baseline = rates["pydicom + Pillow (JPEG, frame size)"]
    print(f"{count} frames of {args.size} x {args.size}, stored JPEG-LS; median of {args.runs}")
    print()
    print("| renderer | frames/s | vs pydicom + Pillow |")
    print("| --- | ---: | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()

"""Rendering one decoded frame as a consumer-format image (PS3.18 8.3.5, 10.4.1.1.3).

The pipeline is the grayscale and colour pipelines of PS3.3 C.11 and PS3.4 N.2, with pydicom's
``pydicom.pixels`` utilities, on the VOI and Modality LUT attributes the instance has now
(:func:`to_attributes`):

- grayscale (MONOCHROME1/2): Modality LUT (Rescale Slope/Intercept, or the Modality LUT
  Sequence, PS3.3 C.11.1), then VOI (PS3.3 C.11.2): the ``window`` asked for, else the first
  Window Center/Width, else the first VOI LUT, else a linear window over the frame's values;
  the VOI output range is scaled to 8 bits and MONOCHROME1 is inverted (PS3.3 C.7.6.3.1.2);
- PALETTE COLOR: the Palette Color LUTs (PS3.3 C.7.6.3.1.5, 8 or 16-bit entries scaled to 8);
- YBR_FULL and YBR_FULL_422: to RGB (PS3.3 C.7.6.3.1.2); RGB with more than 8 bits stored is
  scaled to 8 bits. Planar Configuration is undone by the decoder (``dicom/codecs.py``).

Then the viewport (PS3.18 8.3.5.1.3: a source region, flipped where its width or height is
negative, scaled to fit the viewport keeping its aspect ratio) and the encoding with Pillow:
JPEG at ``quality`` (PS3.18 8.3.5.1.4), or PNG (lossless, ``quality`` ignored).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    convert_color_space,
)

from dicomweb_archive.errors import BadQueryError, CodecError
from dicomweb_archive.model.pixel import PixelDescription

JPEG = "image/jpeg"
PNG = "image/png"
MEDIA_TYPES = (JPEG, PNG)
#: JPEG quality when none is asked for (PS3.18 8.3.5.1.4 leaves it to the origin server)
DEFAULT_QUALITY = 90
#: PS3.18 8.3.5.1.2 window functions -> VOI LUT Function (0028,1056) (PS3.3 C.11.2.1.3)
WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
#: the attributes of the Modality LUT, VOI LUT and Palette Color LUT modules the pipeline reads
RENDER_TAGS = (
    "00281050",  # WindowCenter
    "00281051",  # WindowWidth
    "00281052",  # RescaleIntercept
    "00281053",  # RescaleSlope
    "00281054",  # RescaleType
    "00281056",  # VOILUTFunction
    "00281101",  # RedPaletteColorLookupTableDescriptor
    "00281102",  # GreenPaletteColorLookupTableDescriptor
    "00281103",  # BluePaletteColorLookupTableDescriptor
    "00281201",  # RedPaletteColorLookupTableData
    "00281202",  # GreenPaletteColorLookupTableData
    "00281203",  # BluePaletteColorLookupTableData
    "00281221",  # SegmentedRedPaletteColorLookupTableData
    "00281222",  # SegmentedGreenPaletteColorLookupTableData
    "00281223",  # SegmentedBluePaletteColorLookupTableData
    "00283000",  # ModalityLUTSequence
    "00283010",  # VOILUTSequence
)
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")


@dataclass(frozen=True, slots=True)
class Window:
    """A window asked for (PS3.18 8.3.5.1.2): center, width, VOI LUT Function."""

    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True, slots=True)
class Viewport:
    """PS3.18 8.3.5.1.3: the viewport's size, and the source region (None: the whole image;
    a negative width or height flips the region)."""

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What a rendered resource is asked as (PS3.18 8.3.5.1)."""

    media_type: str = JPEG
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY


def to_attributes(metadata: dict[str, Any], bulk: Callable[[str], bytes]) -> Dataset:
    """The LUT attributes of an instance's DICOM JSON (PS3.18 F.2) as a pydicom data set;
    ``bulk`` reads a BulkDataURI's value (LUT data above the store's inline limit)."""
    subset = {tag: metadata[tag] for tag in RENDER_TAGS if tag in metadata}
    try:
        return Dataset.from_json(subset, bulk_data_uri_handler=lambda _tag, _vr, uri: bulk(uri))
    except (ValueError, KeyError, TypeError) as exc:  # pydicom's errors for a bad value
        raise CodecError(f"the LUT attributes cannot be read: {exc}") from exc


def to_display(
    frame: np.ndarray,
    pixel: PixelDescription,
    photometric: str,
    attributes: Dataset,
    window: Window | None = None,
) -> np.ndarray:
    """A decoded frame (``dicom/codecs.py``) as 8-bit display values: (rows, columns) for
    grayscale, (rows, columns, 3) RGB for colour (see the module docstring).

    Raises CodecError for a Photometric Interpretation that cannot be rendered.
    """
    ds = Dataset()
    ds.update(attributes)
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = pixel.samples_per_pixel
    ds.BitsAllocated, ds.BitsStored = pixel.bits_allocated, pixel.bits_stored
    ds.PixelRepresentation = pixel.pixel_representation
    try:
        if photometric in GRAYSCALE:
            return _grayscale(frame, ds, window)
        return _colour(frame, ds, photometric)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        raise CodecError(f"a {photometric} frame cannot be rendered: {exc}") from exc


def _grayscale(frame: np.ndarray, ds: Dataset, window: Window | None) -> np.ndarray:
    """PS3.3 C.11.1 and C.11.2, then 8 bits (:func:`to_eight_bits`)."""
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window.center, window.width
        ds.VOILUTFunction = window.function
        ds.pop("VOILUTSequence", None)
    if frame.ndim != 2:
        raise ValueError(f"a grayscale frame of shape {frame.shape}")
    values = apply_modality_lut(frame, ds)
    low, high = voi_range(ds)
    if "WindowWidth" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, prefer_lut=False)
    else:  # no VOI: the frame's own range
        low, high = float(np.min(values)), float(np.max(values))
    display = to_eight_bits(values, low, high)
    return 255 - display if ds.PhotometricInterpretation == "MONOCHROME1" else display


def voi_range(ds: Dataset) -> tuple[float, float]:
    """The range of the VOI transformation's output, as pydicom's ``apply_voi_lut`` gives it:
    the VOI LUT's entries (PS3.3 C.11.2.1.1) or, for a window, the stored values' range after
    the Modality LUT (PS3.3 C.11.1); an 8-bit display maps it to 0..255 linearly."""
    if "WindowWidth" not in ds and "VOILUTSequence" in ds:
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    low, high = (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2**bits - 1)
    )
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return float(low), float(high)


def to_eight_bits(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` from ``low``..``high`` to 0..255, linearly, rounded to the nearest integer."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled: np.ndarray = np.subtract(values, low, dtype=np.float64)
    scaled *= 255.0 / (high - low)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def _colour(frame: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        rgb = apply_color_lut(frame, ds)
        return to_eight_bits(rgb, 0, 2 ** (16 if bits > 8 else 8) - 1)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a colour frame of shape {frame.shape}")
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        frame = convert_color_space(frame, photometric, "RGB")
    elif photometric not in ("RGB", "YBR_RCT", "YBR_ICT"):  # the JPEG 2000 decoder undid
        # the reversible or irreversible component transform (PS3.5 8.2.4): RGB
        raise ValueError("only RGB, YBR_FULL, YBR_FULL_422, YBR_RCT, YBR_ICT, PALETTE COLOR")
    bits = int(ds.BitsStored)
    if bits == 8 and frame.dtype == np.uint8:
        return frame
    return to_eight_bits(frame, 0, 2**bits - 1)


def expand_ybr_422(data: bytes, pixel: PixelDescription) -> np.ndarray:
    """A native YBR_FULL_422 frame (PS3.3 C.7.6.3.1.2: Y1 Y2 Cb Cr for each two pixels of a
    row, 8 bits) as a (rows, columns, 3) YBR_FULL array, chroma repeated.

    Raises CodecError when the frame is not such a frame.
    """
    size = pixel.rows * pixel.columns * 2
    if pixel.bits_allocated != 8 or pixel.columns % 2 or len(data) < size:
        raise CodecError(
            f"a native YBR_FULL_422 frame of {len(data)} bytes is not {pixel.rows} x "
            f"{pixel.columns} pixels of 8 bits in pairs"
        )
    pairs = np.frombuffer(data, dtype=np.uint8, count=size).reshape(pixel.rows, -1, 4)
    luma = pairs[..., :2].reshape(pixel.rows, pixel.columns)
    chroma = [np.repeat(pairs[..., n], 2, axis=1) for n in (2, 3)]
    return np.stack([luma, *chroma], axis=-1)


def to_viewport(display: np.ndarray, viewport: Viewport | None) -> Image.Image:
    """The display values cut to the viewport's source region (its part inside the image) and
    scaled to fit the viewport, keeping the aspect ratio (PS3.18 8.3.5.1.3).

    Raises BadQueryError when the region lies outside the image.
    """
    image = Image.fromarray(display, "L" if display.ndim == 2 else "RGB")
    if viewport is None:
        return image
    if viewport.region is not None:
        sx, sy, sw, sh = viewport.region
        left, right = sorted((sx, sx + sw))
        top, bottom = sorted((sy, sy + sh))
        left, top = max(left, 0), max(top, 0)  # the part of the region inside the image
        right, bottom = min(right, image.width), min(bottom, image.height)
        if right <= left or bottom <= top:
            raise BadQueryError(
                f"the viewport's region {sx},{sy},{sw},{sh} is outside the image "
                f"({image.width} x {image.height})"
            )
        image = image.crop((left, top, right, bottom))
        if sw < 0:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if sh < 0:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    scale = min(viewport.width / image.width, viewport.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def encode_image(image: Image.Image, media_type: str, quality: int) -> bytes:
    """The image as JPEG (at ``quality``) or PNG."""
    out = io.BytesIO()
    if media_type == PNG:
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def render_frame(
    frame: np.ndarray,
    pixel: PixelDescription,
    photometric: str,
    attributes: Dataset,
    options: RenderOptions,
) -> bytes:
    """One decoded frame rendered as ``options`` ask (see the module docstring)."""
    display = to_display(frame, pixel, photometric, attributes, options.window)
    return encode_image(to_viewport(display, options.viewport), options.media_type, options.quality)

"""The Image Pixel Module attributes a decoder needs (PS3.3 C.7.6.3), defined once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, slots=True)
class PixelDescription:
    """Rows, Columns, Samples per Pixel, Bits Allocated/Stored, Pixel Representation,
    Photometric Interpretation and Planar Configuration of a frame."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int = 0

    @property
    def dtype(self) -> np.dtype[Any]:
        """The little endian container type of one sample."""
        import numpy as np  # noqa: PLC0415 - numpy is imported only where pixels are handled

        kind = "i" if self.pixel_representation else "u"
        return np.dtype(f"<{kind}{max(1, self.bits_allocated // 8)}")

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of a decoded frame (samples last)."""
        if self.samples_per_pixel > 1:
            return (self.rows, self.columns, self.samples_per_pixel)
        return (self.rows, self.columns)

    @property
    def frame_size(self) -> int:
        """Bytes of one native frame (PS3.5 8.1.1; single-bit frames packed)."""
        samples = self.rows * self.columns * self.samples_per_pixel
        if self.photometric_interpretation == "YBR_FULL_422":
            samples = self.rows * self.columns * 2
        return (samples * self.bits_allocated + 7) // 8

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> PixelDescription:
        return cls(**value)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> PixelDescription:
        """From an instance's DICOM JSON (PS3.18 F.2); absent values take their defaults."""

        def first(tag: str, default: Any) -> Any:
            values = metadata.get(tag, {}).get("Value")
            return values[0] if values else default

        bits_allocated = int(first("00280100", 8))
        return cls(
            rows=int(first("00280010", 0)),
            columns=int(first("00280011", 0)),
            samples_per_pixel=int(first("00280002", 1)),
            bits_allocated=bits_allocated,
            bits_stored=int(first("00280101", bits_allocated)),
            pixel_representation=int(first("00280103", 0)),
            photometric_interpretation=str(first("00280004", "MONOCHROME2")),
            planar_configuration=int(first("00280006", 0)),
        )

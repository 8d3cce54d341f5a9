"""Write the demo's sample data: a curated set of pydicom's files plus a generated CT series."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.factory import write_series

#: pydicom files that show the range of what ingest handles.
PYDICOM_FILES = (
    "CT_small.dcm",  # explicit VR little endian CT with private data
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "JPEG2000.dcm",  # encapsulated JPEG 2000
    "SC_rgb_rle_2frame.dcm",  # RLE, two frames, colour
    "rtdose.dcm",  # multi-frame native dose grid
    "rtplan.dcm",  # implicit VR, deep sequences, no pixels
    "test-SR.dcm",  # structured report
    "waveform_ecg.dcm",  # waveform bulk data
)


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in PYDICOM_FILES:
        source = get_testdata_file(name, download=False)
        if isinstance(source, str):
            shutil.copy(source, target / name)
    write_series(
        target / "generated-ct", count=20, rows=256, columns=256, patient_id="DEMO", realistic=True
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-data"))

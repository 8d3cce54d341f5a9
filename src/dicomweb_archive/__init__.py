"""dicomweb-archive: a static DICOMweb store built from DICOM Part 10 files.

The public library API lives here; the command-line interface in :mod:`dicomweb_archive.cli`
is a thin shell over it.
"""

from dicomweb_archive.errors import ArchiveError
from dicomweb_archive.ops.ingest import IngestReport, ingest
from dicomweb_archive.ops.reconstruct import reconstruct_p10, write_p10
from dicomweb_archive.ops.reindex import reindex

__version__ = "0.1.0"

__all__ = [
    "ArchiveError",
    "IngestReport",
    "__version__",
    "ingest",
    "reconstruct_p10",
    "reindex",
    "write_p10",
]

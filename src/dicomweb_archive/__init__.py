"""dicomweb-archive: a static DICOMweb store built from DICOM Part 10 files.

The public library API lives here; the command-line interface in :mod:`dicomweb_archive.cli`
is a thin shell over it.
"""

from dicomweb_archive.dicom.parts import InlineLimits, generate_parts
from dicomweb_archive.dicom.recompress import Recompression
from dicomweb_archive.errors import ArchiveError
from dicomweb_archive.ops.ingest import (
    IngestReport,
    PipelineOptions,
    ingest,
    write_instances,
    write_stream,
)
from dicomweb_archive.ops.reconstruct import reconstruct_p10, write_p10
from dicomweb_archive.ops.reindex import reindex
from dicomweb_archive.ops.stages import build_studies, group_studies

__version__ = "0.1.0"

__all__ = [
    "ArchiveError",
    "IngestReport",
    "InlineLimits",
    "PipelineOptions",
    "Recompression",
    "__version__",
    "build_studies",
    "generate_parts",
    "group_studies",
    "ingest",
    "reconstruct_p10",
    "reindex",
    "write_instances",
    "write_p10",
    "write_stream",
]

"""dicomweb-archive: a static DICOMweb store built from DICOM Part 10 files.

The public library API lives here; the command-line interface in :mod:`dicomweb_archive.cli`
is a thin shell over it. Open a store once and pass it to every operation::

    archive = Archive.open_or_create("/data/dicomweb")
    report = ingest(archive, ["/path/to/files"])
"""

__version__ = "0.2.0"

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.parts import InlineLimits, generate_parts
from dicomweb_archive.dicom.recompress import Recompression
from dicomweb_archive.errors import ArchiveError
from dicomweb_archive.ops.ingest import ingest, write_instances, write_stream
from dicomweb_archive.ops.ingest_types import IngestReport, PipelineOptions
from dicomweb_archive.ops.reconstruct import reconstruct_p10, write_p10
from dicomweb_archive.ops.reindex import reindex
from dicomweb_archive.ops.stages import build_studies, group_studies

__all__ = [
    "Archive",
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

"""dicomweb-archive: a static DICOMweb store built from DICOM Part 10 files.

The public library API lives here; the command-line interface in :mod:`dicomweb_archive.cli`
is a thin shell over it. Open a store once and pass it to every operation::

    archive = Archive.open_or_create("/data/dicomweb")
    report = ingest(archive, ["/path/to/files"])

The names below are imported when first used (PEP 562), so that importing the package, or a
command that needs little of it, stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: public name -> the module that defines it
_EXPORTS = {
    "Archive": "dicomweb_archive.archive",
    "ArchiveError": "dicomweb_archive.errors",
    "IngestReport": "dicomweb_archive.ops.ingest_types",
    "InlineLimits": "dicomweb_archive.dicom.parts",
    "PipelineOptions": "dicomweb_archive.ops.ingest_types",
    "Recompression": "dicomweb_archive.dicom.recompression",
    "build_studies": "dicomweb_archive.ops.stages",
    "generate_parts": "dicomweb_archive.dicom.parts",
    "group_studies": "dicomweb_archive.ops.stages",
    "ingest": "dicomweb_archive.ops.ingest",
    "reconstruct_p10": "dicomweb_archive.ops.reconstruct",
    "reindex": "dicomweb_archive.ops.reindex",
    "write_instances": "dicomweb_archive.ops.ingest",
    "write_p10": "dicomweb_archive.ops.reconstruct",
    "write_stream": "dicomweb_archive.ops.ingest",
}

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

if TYPE_CHECKING:
    from dicomweb_archive.archive import Archive
    from dicomweb_archive.dicom.parts import InlineLimits, generate_parts
    from dicomweb_archive.dicom.recompression import Recompression
    from dicomweb_archive.errors import ArchiveError
    from dicomweb_archive.ops.ingest import ingest, write_instances, write_stream
    from dicomweb_archive.ops.ingest_types import IngestReport, PipelineOptions
    from dicomweb_archive.ops.reconstruct import reconstruct_p10, write_p10
    from dicomweb_archive.ops.reindex import reindex
    from dicomweb_archive.ops.stages import build_studies, group_studies


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dicomweb_archive' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

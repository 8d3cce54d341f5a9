"""Where every file of the store lives (``docs/spec/store-layout.md``). Pure path functions.

The layout is the original tool's (REFERENCE.md section 5), which OHIF's static DICOMweb
configuration reads, plus per-instance ``metadata.gz`` and ``info.json.gz`` the pipeline's
deduplicated data (``instances/``, ``deduplicated/``) and notifications, and a private
``.dicomweb-archive/`` directory for the index and the lock. Every UID reaching
these functions has passed :func:`dicomweb_archive.model.uid.check_uid`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PRIVATE_DIR = ".dicomweb-archive"


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """Paths of one store rooted at ``root``."""

    root: Path
    path_instances: str = "instances"
    path_deduplicated: str = "deduplicated"

    @property
    def private(self) -> Path:
        return self.root / PRIVATE_DIR

    @property
    def index_path(self) -> Path:
        return self.private / "index.sqlite"

    @property
    def lock_path(self) -> Path:
        return self.private / "lock"

    @property
    def notifications(self) -> Path:
        return self.root / "notifications"

    def notification(self, stage: str, study: str) -> Path:
        return self.notifications / stage / study

    def instance_records(self, study: str) -> Path:
        """Per-instance deduplicated records of a study (``--path-instances``)."""
        return self.root / self.path_instances / study

    def instance_record(self, study: str, sop: str) -> Path:
        return self.instance_records(study) / f"{sop}.gz"

    def extract(self, study: str, sha256: str) -> Path:
        return self.instance_records(study) / f"{sha256}.gz"

    def groups(self, study: str) -> Path:
        """Group files of a study (``--path-deduplicated``)."""
        return self.root / self.path_deduplicated / study

    def group(self, study: str, sha256: str) -> Path:
        return self.groups(study) / f"{sha256}.gz"

    def group_index(self, study: str) -> Path:
        return self.groups(study) / "index.json.gz"

    @property
    def studies(self) -> Path:
        return self.root / "studies"

    @property
    def studies_index(self) -> Path:
        return self.studies / "index.json.gz"

    def study(self, study: str) -> Path:
        return self.studies / study

    def study_index(self, study: str) -> Path:
        return self.study(study) / "index.json.gz"

    def series_dir(self, study: str) -> Path:
        return self.study(study) / "series"

    def series_index(self, study: str) -> Path:
        return self.series_dir(study) / "index.json.gz"

    def series(self, study: str, series: str) -> Path:
        return self.series_dir(study) / series

    def series_singleton(self, study: str, series: str) -> Path:
        return self.series(study, series) / "series-singleton.json.gz"

    def series_metadata(self, study: str, series: str) -> Path:
        return self.series(study, series) / "metadata.gz"

    def instances_dir(self, study: str, series: str) -> Path:
        return self.series(study, series) / "instances"

    def instances_index(self, study: str, series: str) -> Path:
        return self.instances_dir(study, series) / "index.json.gz"

    def instance(self, study: str, series: str, sop: str) -> Path:
        return self.instances_dir(study, series) / sop

    def instance_metadata(self, study: str, series: str, sop: str) -> Path:
        return self.instance(study, series, sop) / "metadata.gz"

    def info(self, study: str, series: str, sop: str) -> Path:
        return self.instance(study, series, sop) / "info.json.gz"

    def frames_dir(self, study: str, series: str, sop: str) -> Path:
        return self.instance(study, series, sop) / "frames"

    def frame(self, study: str, series: str, sop: str, number: int) -> Path:
        return self.frames_dir(study, series, sop) / f"{number}.mht"

    def bulkdata_dir(self, study: str) -> Path:
        return self.study(study) / "bulkdata"

    def bulkdata(self, study: str, sha256: str) -> Path:
        return self.bulkdata_dir(study) / sha256[:3] / sha256[3:5] / sha256[5:]

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def frames_uri(sop: str) -> str:
    """BulkDataURI of the pixel data, relative to the series directory (the original tool's)."""
    return f"instances/{sop}/frames"


def bulkdata_uri(sha256: str) -> str:
    """BulkDataURI of a bulk-data value, relative to the series directory."""
    return f"../../bulkdata/{sha256[:3]}/{sha256[3:5]}/{sha256[5:]}"

"""Where every object of the store lives (``docs/spec/store-layout.md``). Pure key functions.

The layout is the original tool's (REFERENCE.md section 5), which OHIF's static DICOMweb
configuration reads, plus per-instance ``metadata.gz`` and ``info.json.gz``, the pipeline's
deduplicated data (``instances/``, ``deduplicated/``: the ``--path-instances`` and
``--path-deduplicated`` recorded in the store's configuration), notifications, and the private
``.dicomweb-archive/`` prefix. Every UID reaching these functions has passed
:func:`dicomweb_archive.model.uid.check_uid`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomweb_archive.store.storage import PRIVATE

CONFIG = PRIVATE + "config.json"
JOURNAL = PRIVATE + "journal.json"
GENERATION = PRIVATE + "generation"
#: present when the index could not take a committed change's rows: it is rebuilt
REINDEX = PRIVATE + "reindex"
STAGING = PRIVATE + "staging/"
CHANGES = PRIVATE + "changes/"
ASIDE = PRIVATE + "aside/"
EDITS = PRIVATE + "edits/"
STUDIES = "studies/"
STUDIES_INDEX = "studies/index.json.gz"
NOTIFICATIONS = "notifications/"
#: A thumbnail (PS3.18 thumbnail resources) as a derived file: JPEG, the default viewport
THUMBNAIL = "thumbnail.jpg"


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """The keys of one store's objects."""

    path_instances: str = "instances"
    path_deduplicated: str = "deduplicated"

    # -- notifications and deduplicated data -----------------------------------------------
    @staticmethod
    def notifications(stage: str) -> str:
        return f"{NOTIFICATIONS}{stage}/"

    @staticmethod
    def notification(stage: str, study: str) -> str:
        return f"{NOTIFICATIONS}{stage}/{study}"

    def instance_records(self, study: str) -> str:
        """Per-instance deduplicated records of a study (``--path-instances``), a prefix."""
        return f"{self.path_instances}/{study}/"

    def instance_record(self, study: str, sop: str) -> str:
        return f"{self.instance_records(study)}{sop}.gz"

    def extract(self, study: str, sha256: str) -> str:
        return f"{self.instance_records(study)}{sha256}.gz"

    def groups(self, study: str) -> str:
        """Group files of a study (``--path-deduplicated``), a prefix."""
        return f"{self.path_deduplicated}/{study}/"

    def group(self, study: str, sha256: str) -> str:
        return f"{self.groups(study)}{sha256}.gz"

    def group_index(self, study: str) -> str:
        return f"{self.groups(study)}index.json.gz"

    # -- the served tree -------------------------------------------------------------------
    @staticmethod
    def study(study: str) -> str:
        """The prefix of a study's served objects."""
        return f"{STUDIES}{study}/"

    @staticmethod
    def study_index(study: str) -> str:
        return f"{STUDIES}{study}/index.json.gz"

    @staticmethod
    def series_dir(study: str) -> str:
        return f"{STUDIES}{study}/series/"

    @staticmethod
    def series_index(study: str) -> str:
        return f"{STUDIES}{study}/series/index.json.gz"

    @staticmethod
    def series(study: str, series: str) -> str:
        return f"{STUDIES}{study}/series/{series}/"

    def series_singleton(self, study: str, series: str) -> str:
        return self.series(study, series) + "series-singleton.json.gz"

    def series_metadata(self, study: str, series: str) -> str:
        return self.series(study, series) + "metadata.gz"

    def instances_dir(self, study: str, series: str) -> str:
        return self.series(study, series) + "instances/"

    def instances_index(self, study: str, series: str) -> str:
        return self.series(study, series) + "instances/index.json.gz"

    def instance(self, study: str, series: str, sop: str) -> str:
        return f"{self.series(study, series)}instances/{sop}/"

    def instance_metadata(self, study: str, series: str, sop: str) -> str:
        return self.instance(study, series, sop) + "metadata.gz"

    def info(self, study: str, series: str, sop: str) -> str:
        return self.instance(study, series, sop) + "info.json.gz"

    def frames_dir(self, study: str, series: str, sop: str) -> str:
        return self.instance(study, series, sop) + "frames/"

    def frame(self, study: str, series: str, sop: str, number: int) -> str:
        return f"{self.instance(study, series, sop)}frames/{number}.mht"

    # -- thumbnails: derived files, dropped when their series' metadata change -------------
    @staticmethod
    def study_thumbnail(study: str) -> str:
        return f"{STUDIES}{study}/{THUMBNAIL}"

    def series_thumbnail(self, study: str, series: str) -> str:
        return self.series(study, series) + THUMBNAIL

    def instance_thumbnail(self, study: str, series: str, sop: str) -> str:
        return self.instance(study, series, sop) + THUMBNAIL

    @staticmethod
    def bulkdata_dir(study: str) -> str:
        return f"{STUDIES}{study}/bulkdata/"

    @staticmethod
    def bulkdata(study: str, sha256: str) -> str:
        return f"{STUDIES}{study}/bulkdata/{sha256[:3]}/{sha256[3:5]}/{sha256[5:]}"

    # -- the private prefix ----------------------------------------------------------------
    @staticmethod
    def change(change_id: str) -> str:
        """The change record: what a change did, to what, by whom (history and audit)."""
        return f"{CHANGES}{change_id}.json.gz"

    @staticmethod
    def edits(study: str) -> str:
        """The study's edit state: each edited instance's revision and steps
        (``store/edit_state.py``)."""
        return f"{EDITS}{study}.json.gz"

    @staticmethod
    def aside(change_id: str, key: str = "") -> str:
        """Where a change keeps the objects it removed, so that it can be reverted."""
        return f"{ASIDE}{change_id}/{key}"


def frames_uri(sop: str) -> str:
    """BulkDataURI of the pixel data, relative to the series directory (the original tool's)."""
    return f"instances/{sop}/frames"


def bulkdata_uri(sha256: str) -> str:
    """BulkDataURI of a bulk-data value, relative to the series directory."""
    return f"../../bulkdata/{sha256[:3]}/{sha256[3:5]}/{sha256[5:]}"

"""The warnings ingest gives on a stored file besides its info record's: UIDs stored although
not conformant (``model/uid.py``), a file that ends inside Pixel Data (``model/incomplete.py``).
"""

from __future__ import annotations

from dicomweb_archive.dicom.parts import InstanceEnd
from dicomweb_archive.model.incomplete import incomplete_frame
from dicomweb_archive.model.uid import nonconformant_uid_warnings
from dicomweb_archive.store.instance import InstanceKey


def uid_warnings(key: InstanceKey) -> list[str]:
    """Warnings for the instance's UIDs that are stored although not conformant (PS3.5 9.1)."""
    return nonconformant_uid_warnings(
        {"StudyInstanceUID": key.study, "SeriesInstanceUID": key.series, "SOPInstanceUID": key.sop}
    )


def incomplete_warning(end: InstanceEnd) -> list[str]:
    """The warning of an instance whose file ends inside Pixel Data (``model/incomplete.py``)."""
    cut = incomplete_frame(end.info.skeleton)
    if cut is None:
        return []
    whole = {1: "no frame is whole", 2: "frame 1 is whole"}.get(
        cut, f"frames 1-{cut - 1} are whole"
    )
    return [
        f"stored incomplete: the file ends inside Pixel Data, {whole}; the received bytes are "
        "kept (export gives the file back as received)"
    ]

"""C-MOVE and C-GET (PS3.4 C.4.2, C.4.3): the exported files of the instances an identifier
names, sent by C-STORE sub-operations.

The identifier names instances by the unique key of its level (PS3.4 C.2.2.1.1, C.4.2.2.1):
Patient ID (PATIENT, Patient Root only), Study Instance UIDs (STUDY), Series Instance UIDs
(SERIES) or SOP Instance UIDs (IMAGE), lists allowed; other keys narrow as C-FIND's do. Without
that key, or with a wildcard in it or in another level's unique key (unique keys hold single
values or UID lists, never wildcards: PS3.4 C.2.2.1.1, C.4.2.2.1), the request is refused (the
server logs why).

Each instance is sent as ``mkdicomwebpart10`` exports it (``ops/retrieve.py``): the file as
received, byte for byte for an unedited instance, in the transfer syntax it was received in
(the frames' syntax for one recompressed at ingest), streamed from a temporary file
(pynetdicom's ``_config.STORE_SEND_CHUNKED_DATASET``). Where the peer accepted no presentation
context for its SOP Class in that syntax, it is transcoded losslessly to Explicit VR Little
Endian, else to Implicit VR Little Endian, the default transfer syntax every peer accepts
(PS3.5 10.1) (built whole in memory, as ``export --transfer-syntax`` does); where the peer
accepts none of these, the sub-operation fails (counted in Number of Failed Sub-operations, its
SOP Instance UID in Failed SOP Instance UID List) and the others go on.

A C-MOVE association to the destination proposes, per SOP Class, the syntaxes of the instances
and one context offering Explicit and Implicit VR Little Endian (at most 128 presentation
contexts, PS3.8 9.3.2.2; an instance left without one fails). A destination that accepts the
association but none of its presentation contexts fails every sub-operation (0xA702, PS3.4
C.4.2.3.1), not 0xA801: the destination is known. C-GET uses the contexts the requestor
proposed with the SCP role (PS3.7 D.3.3.4).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from dicomweb_archive.archive import Archive
from dicomweb_archive.dimse.query import (
    IDENTIFIER_DOES_NOT_MATCH,
    QueryRefusedError,
    key_text,
    read_query,
)
from dicomweb_archive.errors import ExportError
from dicomweb_archive.index.protocol import Index
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.syntax import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from dicomweb_archive.ops.retrieve import generate_retrieved, stored_syntax
from dicomweb_archive.store.instance import InstanceKey, read_info

#: the unique key of each level: keyword, tag (PS3.4 C.2.2.1.1)
UNIQUE_KEYS = {
    "PATIENT": ("PatientID", 0x00100020),
    "STUDY": ("StudyInstanceUID", 0x0020000D),
    "SERIES": ("SeriesInstanceUID", 0x0020000E),
    "IMAGE": ("SOPInstanceUID", 0x00080018),
}
MAX_CONTEXTS = 128
#: wildcard characters (PS3.4 C.2.2.2.4), which a retrieve's unique keys cannot hold
WILDCARDS = "*?"
#: the largest number of sub-operations a response can count (US, PS3.4 C.4.2.1.6)
MAX_SUBOPERATIONS = 65535
STUDY_UID, SERIES_UID, SOP_UID, SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"
#: what an instance is transcoded to, in this order, when the peer does not take its own syntax
FALLBACK_SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


@dataclass(frozen=True, slots=True)
class Target:
    """One instance to send: its key, SOP Class and the transfer syntax it is stored in."""

    key: InstanceKey
    sop_class: str
    syntax: str


class StoredInstance(Dataset):
    """What the retrieve handlers yield to pynetdicom for one sub-operation: a data set that
    is only a name for the instance; :func:`sending_from_store` sends the stored file."""

    def __init__(self, target: Target, outcome: Callable[[bool], None] | None = None) -> None:
        super().__init__()
        self.SOPInstanceUID = target.key.sop  # for the Failed SOP Instance UID List
        self.target = target
        #: told whether the sub-operation succeeded (Success or Warning from the peer)
        self.outcome = outcome


def find_targets(index: Index, identifier: Dataset, model: str) -> list[Target]:
    """The instances a C-MOVE or C-GET identifier names (see the module docstring), without
    their syntaxes yet."""
    query = read_query(identifier, model.rsplit(".", 1)[0] + ".1")
    keyword, tag = UNIQUE_KEYS[query.level]
    if key_text(identifier, tag, []).strip() in ("", "*"):
        raise QueryRefusedError(
            IDENTIFIER_DOES_NOT_MATCH, f"a {query.level} retrieve needs {keyword}"
        )
    for name, unique in UNIQUE_KEYS.values():
        if any(c in key_text(identifier, unique, []) for c in WILDCARDS):
            raise QueryRefusedError(
                IDENTIFIER_DOES_NOT_MATCH, f"{name}: no wildcards in a retrieve's unique keys"
            )
    targets = []
    for item in index.search("instance", query.condition):
        key = InstanceKey(_first(item, STUDY_UID), _first(item, SERIES_UID), _first(item, SOP_UID))
        targets.append(Target(key, _first(item, SOP_CLASS), ""))
    return targets


def with_syntaxes(archive: Archive, targets: Iterable[Target]) -> list[Target]:
    """``targets`` with the transfer syntax each is sent in when the peer accepts it."""
    return [
        Target(t.key, t.sop_class, native_syntax(read_info(archive.storage, archive.keys, t.key)))
        for t in targets
    ]


def native_syntax(info: InfoRecord) -> str:
    """The transfer syntax an instance is sent in: its original's when the store rebuilds the
    received file, else its stored frames' (``ops/retrieve.py``)."""
    if info.rebuilds_original():
        return info.original.transfer_syntax_uid
    return stored_syntax(info)


def contexts_for(targets: Iterable[Target]) -> list[PresentationContext]:
    """The presentation contexts a C-MOVE proposes to its destination (module docstring)."""
    native = dict.fromkeys((t.sop_class, t.syntax) for t in targets)
    contexts = [build_context(c, [s]) for c, s in native]
    classes = dict.fromkeys(c for c, _ in native)
    contexts += [build_context(c, list(FALLBACK_SYNTAXES)) for c in classes]
    return contexts[:MAX_CONTEXTS]


def sending_from_store(assoc: Association, archive: Archive) -> None:
    """Make ``assoc`` send each :class:`StoredInstance` handed to its ``send_c_store`` from
    the store (the module docstring); other data sets go as before."""
    if getattr(assoc, "_sends_from_store", False):
        return
    send = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, StoredInstance):
            return send(dataset, *args, **kwargs)
        succeeded = False
        try:
            status = _send_stored(
                assoc, archive, dataset.target, lambda p: send(p, *args, **kwargs)
            )
            code = status.get("Status")
            succeeded = code is not None and code_to_category(code) in (
                STATUS_SUCCESS,
                STATUS_WARNING,
            )
            return status
        finally:
            if dataset.outcome is not None:
                dataset.outcome(succeeded)

    setattr(assoc, "send_c_store", send_c_store)  # noqa: B010 - on this association only
    setattr(assoc, "_sends_from_store", True)  # noqa: B010


def _send_stored(
    assoc: Association, archive: Archive, target: Target, send: Callable[[Path], Dataset]
) -> Dataset:
    accepted = [target.syntax, *FALLBACK_SYNTAXES]
    syntax = next((s for s in accepted if _accepted(assoc, target.sop_class, s)), None)
    if syntax is None:
        raise ExportError(
            f"SOPInstanceUID {target.key.sop}: the peer accepted no presentation context for "
            f"SOP Class {target.sop_class} in {target.syntax}, Explicit or Implicit VR Little "
            "Endian"
        )
    with tempfile.NamedTemporaryFile(prefix="dicomweb-archive-", suffix=".dcm") as file:
        for chunk in generate_retrieved(archive, target.key, syntax):
            file.write(chunk)
        file.flush()
        return send(Path(file.name))


def _accepted(assoc: Association, sop_class: str, syntax: str) -> bool:
    return any(
        cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == syntax and cx.as_scu
        for cx in assoc.accepted_contexts
    )


def _first(item: dict[str, Any], tag: str) -> str:
    return str((item.get(tag, {}).get("Value") or [""])[0])

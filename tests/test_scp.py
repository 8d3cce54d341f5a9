"""``scp`` with DCMTK as the real peer: storescu sends every pydicom test file that ingest
accepts; the store keeps what was sent byte for byte; findscu finds what the index holds;
movescu and getscu retrieve what is stored; a calling AE title not allowed is rejected; four
storescu at once lose and duplicate nothing."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest

from dicomweb_archive import Archive, ingest
from dicomweb_archive.index.conditions import All, Match
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.ops.verify import verify
from tests.conftest import corpus_files, corpus_id
from tests.dimse_peers import HAVE_DCMTK, dcmtk, received, scp, split_p10, storescp, witness
from tests.factory import write_series

pytestmark = [
    pytest.mark.local,
    pytest.mark.skipif(not HAVE_DCMTK, reason="DCMTK's network tools are not installed"),
]

#: storescu's option proposing each transfer syntax (with the uncompressed ones)
PROPOSE = {
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}
#: Files ingest accepts that DCMTK's storescu does not send, and why.
NOT_SENT = {
    "SC_rgb_jpeg.dcm": "DCMTK cannot parse it (its JPEG data is not encapsulated: pydicom's "
    "test of a malformed file)",
}
#: Files storescu sends other than they are (the archive keeps what it sent), and why.
#: (DCMTK reads each file and writes the data set again as it sends it; the values are the
#: same, their encoding is not: test_storescu_sends_the_corpus checks the store keeps what it
#: sent.)
_PADDING = "Data Set Trailing Padding (FFFC,FFFC) left out"
_LENGTHS = "sequences and items of undefined length sent with explicit lengths"
CHANGED_BY_STORESCU = {
    "CT_small.dcm": _PADDING,
    "MR_small.dcm": _PADDING,
    "examples_rgb_color.dcm": _PADDING,
    "ExplVR_BigEndNoMeta.dcm": "big endian without File Meta: sent in Explicit VR Little Endian",
    "image_dfl.dcm": "deflated again, with other compression settings",
    "693_J2KI.dcm": "group lengths (gggg,0000) recalculated, and " + _LENGTHS,
    **dict.fromkeys(
        [
            "rtstruct.dcm",
            "liver_1frame.dcm",
            "reportsi.dcm",
            "waveform_ecg.dcm",
            "examples_palette.dcm",
            "examples_ybr_color.dcm",
            "JPEG-lossy.dcm",
            "examples_jpeg2k.dcm",
            "JPEG2000-embedded-sequence-delimiter.dcm",
            "SC_rgb_gdcm_KY.dcm",
            *(f"dicomdirtests/98892001/CT2N/{n}" for n in ("6293", "6924")),
            *(f"dicomdirtests/98892001/CT5N/{n}" for n in ("2062", "2392", "2693", "3023", "3353")),
        ],
        _LENGTHS,
    ),
}


@dataclass
class Sent:
    """The corpus sent to a store by storescu (and, the same way, to DCMTK's storescp)."""

    store: str
    #: SOP Instance UID -> the file sent
    files: dict[str, Path] = field(default_factory=dict)
    #: SOP Instance UID -> (transfer syntax, data set) as the association delivered them
    peer: dict[str, tuple[str, bytes]] = field(default_factory=dict)


def _accepted(tmp: Path) -> dict[str, Path]:
    """One corpus file per SOP Instance UID, each one ingest stores."""
    with Archive.create(f"memory://{tmp.name}-reference") as reference:
        report = ingest(reference, corpus_files())
    return {r.key.sop: r.path for r in report.results if r.status == "stored" and r.key}


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Sent:
    tmp = tmp_path_factory.mktemp("scp")
    files = _accepted(tmp)
    by_syntax: dict[str, list[Path]] = defaultdict(list)
    for path in files.values():
        by_syntax[split_p10(path)[0].get("TransferSyntaxUID", "")].append(path)
    store = str(tmp / "store")
    Archive.create(store).close()
    with scp(store) as (port, _server), witness() as (peer_port, delivered):
        for syntax, paths in sorted(by_syntax.items()):
            for target in (port, peer_port):
                args = ["-nh", "-R", PROPOSE.get(syntax, "-xe"), "-aec", "ARCHIVE"]
                dcmtk("storescu", *args, "127.0.0.1", str(target), *map(str, paths))
    return Sent(store, files, dict(delivered))


def test_storescu_sends_the_corpus(sent: Sent, tmp_path: Path) -> None:
    """Every file storescu sends is stored, with the File Meta a storage SCP writes, and
    exports byte for byte as the association delivered it (as a plain SCP receives it)."""
    with Archive.open(sent.store) as archive:
        report = export(archive, Selection(every_study=True), out=tmp_path)
        assert verify(archive).ok
    exported = {item.key.sop: item for item in report.items}
    not_sent = {corpus_id(p) for sop, p in sent.files.items() if sop not in exported}
    assert not_sent == set(NOT_SENT)
    assert set(sent.peer) == set(exported)
    recompressed = 0
    for sop, item in exported.items():
        meta, body = split_p10(tmp_path / item.name)
        if item.recompressed:  # pixel-identical (verify checked), in the stored syntax
            recompressed += 1
            continue
        assert meta["SourceApplicationEntityTitle"] == "STORESCU"
        assert meta["MediaStorageSOPInstanceUID"] == sop
        assert (meta["TransferSyntaxUID"], body) == sent.peer[sop], corpus_id(sent.files[sop])
    assert recompressed < len(exported) / 10


def test_what_storescu_changes(sent: Sent) -> None:
    """storescu sends the corpus unchanged but for the files listed, each for its reason."""
    changed = {
        corpus_id(sent.files[sop]): syntax
        for sop, (syntax, body) in sent.peer.items()
        if split_p10(sent.files[sop])[1] != body
    }
    assert set(changed) == set(CHANGED_BY_STORESCU)

"""``scp`` with DCMTK as the real peer: storescu sends every pydicom test file that ingest
accepts; the store keeps what was sent byte for byte; findscu finds what the index holds;
movescu and getscu retrieve what is stored; a calling AE title not allowed is rejected; four
storescu at once lose and duplicate nothing."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest

from dicomweb_archive import Archive, ingest
from dicomweb_archive.dimse.settings import Peer
from dicomweb_archive.errors import ArchiveError
from dicomweb_archive.index.conditions import All, Match
from dicomweb_archive.ops.export import Selection, export
from dicomweb_archive.ops.retrieve import generate_retrieved
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.instance import InstanceKey
from tests.conftest import corpus_files, corpus_id
from tests.dimse_peers import (
    DCMTK,
    HAVE_DCMTK,
    dcmtk,
    received,
    scp,
    split_p10,
    storescp,
    witness,
)
from tests.factory import make_ct, uid, write_series

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
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
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


def _find(port: int, tmp: Path, model: str, *keys: str) -> list[pydicom.Dataset]:
    """findscu's answers (``model``: -P patient root, -S study root) to the keys."""
    out = tmp / f"find-{len(list(tmp.iterdir()))}"
    out.mkdir()
    args = [a for key in keys for a in ("-k", key)]
    result = dcmtk(
        "findscu", model, "-aec", "ARCHIVE", "-X", "-od", str(out), *args, "127.0.0.1", str(port)
    )
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _expected(item: dict[str, object], keyword: str) -> object:
    tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
    value = pydicom.Dataset.from_json({tag: item[tag]})[tag].value if tag in item else None
    return _empty_as_none(value)


def _empty_as_none(value: object) -> object:
    return None if value in ("", None, []) else value


def _values(
    answers: list[pydicom.Dataset], key: str, *others: str
) -> dict[str, tuple[object, ...]]:
    return {str(a[key].value): tuple(_empty_as_none(a[o].value) for o in others) for a in answers}


def test_findscu_at_each_level(sent: Sent, tmp_path: Path) -> None:
    """findscu at PATIENT, STUDY, SERIES and IMAGE level finds what the index holds, with the
    return keys filled from the stored metadata, under both models; wildcards, ranges, UID
    lists and a key the index does not hold match as PS3.4 C.2.2.2 says."""
    with Archive.open(sent.store) as archive, scp(sent.store) as (port, _server):
        index = archive.index
        studies = index.search("study", All())
        keys = ("StudyInstanceUID", "PatientName", "StudyDate", "ModalitiesInStudy")
        answers = _find(port, tmp_path, "-S", "QueryRetrieveLevel=STUDY", *keys)
        assert _values(answers, *keys) == {
            str(_expected(s, keys[0])): tuple(_expected(s, k) for k in keys[1:]) for s in studies
        }
        series = index.search("series", All())
        keys = ("SeriesInstanceUID", "StudyInstanceUID", "Modality", "SeriesNumber")
        answers = _find(port, tmp_path, "-S", "QueryRetrieveLevel=SERIES", *keys)
        assert len(answers) == len(series)
        assert _values(answers, *keys) == {
            str(_expected(s, keys[0])): tuple(_expected(s, k) for k in keys[1:]) for s in series
        }
        instances = index.search("instance", All())
        keys = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber", "PatientName")
        answers = _find(port, tmp_path, "-S", "QueryRetrieveLevel=IMAGE", *keys)
        assert len(answers) == len(instances)
        assert _values(answers, *keys[:3]) == {
            str(_expected(i, keys[0])): tuple(_expected(i, k) for k in keys[1:3]) for i in instances
        }
        assert all(a.PatientName == "" for a in answers)  # not held at the IMAGE level
        # the Patient Root model answers the STUDY, SERIES and IMAGE levels the same way
        for level, key in (("STUDY", "StudyInstanceUID"), ("SERIES", "SeriesInstanceUID")):
            by_study_root = _find(port, tmp_path, "-S", f"QueryRetrieveLevel={level}", key)
            by_patient_root = _find(port, tmp_path, "-P", f"QueryRetrieveLevel={level}", key)
            assert _values(by_patient_root, key) == _values(by_study_root, key)
        by_patient_root = _find(port, tmp_path, "-P", "QueryRetrieveLevel=IMAGE", *keys[:3])
        assert _values(by_patient_root, *keys[:3]) == _values(answers, *keys[:3])
        answers = _find(
            port,
            tmp_path,
            "-P",
            "QueryRetrieveLevel=PATIENT",
            "PatientID",
            "NumberOfPatientRelatedStudies",
        )
        per_patient: dict[str, int] = defaultdict(int)
        for study in studies:
            per_patient[str(_expected(study, "PatientID") or "")] += 1
        assert {
            str(a.PatientID): int(a.NumberOfPatientRelatedStudies) for a in answers
        } == per_patient

        def uids(condition: All) -> set[str]:
            return {str(_expected(s, "StudyInstanceUID")) for s in index.search("study", condition)}

        def found(*keys: str) -> set[str]:
            answers = _find(
                port, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", *keys
            )
            return {str(a.StudyInstanceUID) for a in answers}

        wildcard = uids(All((Match("study", "patient_name", "person", "compressed*"),)))
        assert wildcard and found("PatientName=compressed*") == wildcard
        dated = uids(All((Match("study", "study_date", "date", "-20000101"),)))
        assert dated and found("StudyDate=-20000101") == dated
        two = sorted(str(_expected(s, "StudyInstanceUID")) for s in studies)[:2]
        assert found("StudyInstanceUID=" + "\\".join(two)) == set(two)
        female = {
            str(_expected(s, "StudyInstanceUID"))
            for s in studies
            if _expected(s, "PatientSex") == "F"
        }
        assert female and found("PatientSex=F") == female


def test_movescu_and_getscu_retrieve_the_stored_files(sent: Sent, tmp_path: Path) -> None:
    """movescu to DCMTK's storescp and getscu receive each instance as export gives it, byte
    for byte, where the peer accepts the stored transfer syntax (one instance of each syntax
    the store holds); getscu, which proposes the uncompressed syntaxes in one context, gets the
    others transcoded to Explicit VR Little Endian, and those that cannot be decoded fail."""
    with Archive.open(sent.store) as archive:
        report = export(archive, Selection(every_study=True), out=tmp_path / "export")
        exported = {i.key.sop: split_p10(tmp_path / "export" / i.name) for i in report.items}
        chosen: dict[str, InstanceKey] = {}
        for item in sorted(report.items, key=lambda i: i.size):
            chosen.setdefault(exported[item.key.sop][0]["TransferSyntaxUID"], item.key)
        undecodable = set()
        for key in chosen.values():
            try:
                b"".join(generate_retrieved(archive, key, EXPLICIT_VR_LITTLE_ENDIAN))
            except ArchiveError:
                undecodable.add(key.sop)
    sops = {key.sop for key in chosen.values()}
    exported = {sop: exported[sop] for sop in sops}
    identifier = ["-k", "QueryRetrieveLevel=IMAGE", "-k", "SOPInstanceUID=" + "\\".join(sops)]
    with storescp(tmp_path / "moved") as peer_port:
        peers = {"PEER": Peer("PEER", "127.0.0.1", peer_port)}
        with scp(sent.store, peers=peers) as (port, _server):
            moved = dcmtk(
                "movescu",
                "-S",
                "-aec",
                "ARCHIVE",
                "-aem",
                "PEER",
                *identifier,
                "127.0.0.1",
                str(port),
            )
            assert moved.returncode == 0, moved.stderr
            (tmp_path / "got").mkdir()
            got = dcmtk(
                "getscu",
                "-S",
                "+B",
                "-aec",
                "ARCHIVE",
                "-od",
                str(tmp_path / "got"),
                *identifier,
                "127.0.0.1",
                str(port),
            )
    moved_files = received(tmp_path / "moved")
    assert set(moved_files) == set(exported)
    for sop, (meta, body) in moved_files.items():
        assert (meta["TransferSyntaxUID"], body) == (
            exported[sop][0]["TransferSyntaxUID"],
            exported[sop][1],
        )
    got_files = received(tmp_path / "got")
    assert set(got_files) == set(exported) - undecodable, got.stderr
    for sop, (meta, body) in got_files.items():
        if meta["TransferSyntaxUID"] == exported[sop][0]["TransferSyntaxUID"]:
            assert body == exported[sop][1]
        else:  # transcoded: getscu's contexts took Explicit VR Little Endian instead
            assert meta["TransferSyntaxUID"] == EXPLICIT_VR_LITTLE_ENDIAN
    assert (len(undecodable) > 0) == ("Failures" in got.stderr)


def test_a_calling_ae_title_not_allowed_is_rejected(
    store: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With --allow-aet, an association from another calling AE title is rejected (and
    logged); one from an allowed title is accepted."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    Archive.create(store).close()
    with scp(store, allowed_calling=("MODALITY",)) as (port, _server):
        refused = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "ARCHIVE", "127.0.0.1", str(port))
        accepted = dcmtk("echoscu", "-aet", "MODALITY", "-aec", "ARCHIVE", "127.0.0.1", str(port))
    assert refused.returncode != 0
    assert "Rejected" in refused.stderr or "rejected" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr
    assert any("INTRUDER" in r.message and "rejected" in r.message for r in caplog.records)


def test_another_called_ae_title_is_rejected(store: str) -> None:
    """An association addressed to another Called AE Title than --aet is rejected (PS3.8
    9.3.4, "called AE title not recognized"): a modality configured for another archive does
    not store into this one by mistake."""
    Archive.create(store).close()
    with scp(store) as (port, _server):
        wrong = dcmtk("echoscu", "-aet", "CT1", "-aec", "OTHERPACS", "127.0.0.1", str(port))
        right = dcmtk("echoscu", "-aet", "CT1", "-aec", "ARCHIVE", "127.0.0.1", str(port))
    assert wrong.returncode != 0
    assert right.returncode == 0, right.stderr


def test_four_storescu_at_once(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Four storescu associations at once, each with a series of its own and one series all
    four send: every instance is stored once, nothing is lost, verify is clean."""
    caplog.set_level("INFO", logger="dicomweb_archive.dimse")
    shared = write_series(tmp_path / "shared", count=5, prefix="SH")
    own = [write_series(tmp_path / f"s{n}", count=10, patient_id=f"P{n}") for n in range(4)]
    tool = DCMTK["storescu"]
    assert tool is not None
    Archive.create(store).close()
    with scp(store) as (port, _server):
        processes = [
            subprocess.Popen(
                [
                    tool,
                    "-nh",
                    "-R",
                    "-xe",
                    "-aec",
                    "ARCHIVE",
                    "127.0.0.1",
                    str(port),
                    *map(str, files + shared),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for files in own
        ]
        for process in processes:
            _, errors = process.communicate(timeout=300)
            assert process.returncode == 0, errors
    with Archive.open(store) as archive:
        assert archive.index.counts()["instances"] == 45
        assert verify(archive).ok
        assert len(export(archive, Selection(every_study=True), out=tmp_path / "out").items) == 45
    ended = [r.message for r in caplog.records if "released" in r.message]
    assert len(ended) == 4
    counted = [
        re.search(r"(\d+) stored, (\d+) unchanged \(stored already\), (\d+) failed", line)
        for line in ended
    ]
    assert all(counted), ended
    # the shared series is stored once: by one association, unchanged for the others
    stored, unchanged, failed = (sum(int(m.group(g)) for m in counted if m) for g in (1, 2, 3))
    assert (stored, unchanged, failed) == (45, 15, 0), ended


def _with_request(number: int, *requests: tuple[str, str]) -> pydicom.Dataset:
    """A CT slice of a series of its own whose Request Attributes Sequence has an item per
    (Requested Procedure ID, Scheduled Procedure Step ID)."""
    ds = make_ct(study=uid("7.1"), series=uid(f"7.1.{number}"), sop=uid(f"7.1.{number}.1"))
    items = []
    for requested, scheduled in requests:
        item = pydicom.Dataset()
        item.RequestedProcedureID = requested
        item.ScheduledProcedureStepID = scheduled
        items.append(item)
    ds.RequestAttributesSequence = items
    return ds


def test_findscu_sequence_matching(store: str, tmp_path: Path) -> None:
    """A sequence key's item is matched against each stored item (PS3.4 C.2.2.2.6): a series
    matches when one of its items matches every item key, wildcards included; the answer holds
    the matching items with the item's keys; an empty sequence key returns every item."""
    files = []
    for number, requests in enumerate(
        [(("RP1", "SPS1"), ("RP2", "SPS2")), (("RP3", "SPS1"),), ()], start=1
    ):
        ds = _with_request(number, *requests)
        files.append(tmp_path / f"{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    with Archive.create(store) as archive:
        assert ingest(archive, files).ok
    series = "QueryRetrieveLevel=SERIES"
    request = "RequestAttributesSequence[0]"
    with scp(store) as (port, _server):

        def found(*keys: str) -> dict[str, list[tuple[str, str]]]:
            answers = _find(port, tmp_path, "-S", series, "SeriesInstanceUID", *keys)
            return {
                str(a.SeriesInstanceUID): [
                    (
                        str(i.get("RequestedProcedureID", "")),
                        str(i.get("ScheduledProcedureStepID", "")),
                    )
                    for i in a.RequestAttributesSequence
                ]
                for a in answers
            }

        one = found(f"{request}.RequestedProcedureID=RP2", f"{request}.ScheduledProcedureStepID")
        assert one == {uid("7.1.1"): [("RP2", "SPS2")]}
        two = found(f"{request}.ScheduledProcedureStepID=SPS1", f"{request}.RequestedProcedureID")
        assert two == {uid("7.1.1"): [("RP1", "SPS1")], uid("7.1.2"): [("RP3", "SPS1")]}
        none = found(
            f"{request}.RequestedProcedureID=RP3", f"{request}.ScheduledProcedureStepID=SPS2"
        )
        assert none == {}
        wildcard = found(f"{request}.RequestedProcedureID=RP*")
        assert wildcard == {
            uid("7.1.1"): [("RP1", ""), ("RP2", "")],
            uid("7.1.2"): [("RP3", "")],
        }
        every = found("RequestAttributesSequence")
        assert every == {
            uid("7.1.1"): [("RP1", "SPS1"), ("RP2", "SPS2")],
            uid("7.1.2"): [("RP3", "SPS1")],
            uid("7.1.3"): [],
        }

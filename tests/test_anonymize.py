"""De-identification (PS3.15 E.1) into a new store: actions, no original value left, UIDs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

from dicomweb_archive import Archive, PipelineOptions, Recompression
from dicomweb_archive.cli.main import UPDATE_APP
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.errors import NotAStoreError
from dicomweb_archive.model.deid import DUMMY, Profile
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.model.standard_tables import CONFIDENTIALITY_PROFILE
from dicomweb_archive.ops.anonymize import anonymize
from dicomweb_archive.ops.export import Selection
from dicomweb_archive.ops.history import audit_log
from dicomweb_archive.ops.purge import purge
from dicomweb_archive.ops.verify import VerifyReport, verify
from dicomweb_archive.store.keys import STUDIES, STUDIES_INDEX
from dicomweb_archive.store.secrets import KEY as STORE_KEY
from tests import stores
from tests.deid_helpers import store_texts
from tests.factory import make_ct, uid
from tests.stores import (
    exists,
    index_dump,
    ingested,
    keys_under,
    objects,
    read_json,
    served_metadata,
    tree_hashes,
)

KEY = b"test-key"
runner = CliRunner()
Source = tuple[str, list[Path]]


def _identifying(path: Path, *, sop: str, referenced: str | None = None) -> Path:
    ds = make_ct(
        study=uid("77.1"),
        series=uid("77.2"),
        sop=sop,
        patient_id="SECRET-ID-77",
        patient_name="SMITHERSON^ALICIA",
    )
    ds.InstitutionName = "Saint Example Hospital"
    ds.StationName = "SCANNER-ROOM-9"
    ds.OperatorsName = "TECHNICIAN^TOBIAS"
    ds.DeviceSerialNumber = "SN-99-887766"
    ds.PatientBirthDate = "19610307"
    ds.PatientAge = "063Y"
    ds.OtherPatientIDs = "OTHER-ID-4455"
    ds.AccessionNumber = "ACC-31337"
    ds.StudyID = "STUDY-4242"
    ds.FrameOfReferenceUID = uid("77.99")
    ds.BurnedInAnnotation = "NO"
    ds.add_new(0x00090010, "LO", "ACME PRIVATE")
    ds.add_new(0x00091001, "LO", "PRIVATE-SECRET-VALUE")
    if referenced is not None:
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = referenced
        ds.ReferencedImageSequence = Sequence([item])
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def source(tmp_path: Path, store: str) -> Source:
    (tmp_path / "in").mkdir()
    files = [
        _identifying(tmp_path / "in" / "a.dcm", sop=uid("77.3")),
        _identifying(tmp_path / "in" / "b.dcm", sop=uid("77.4"), referenced=uid("77.3")),
    ]
    assert ingested(store, files).ok
    return store, files


def _anonymize(store: str, selection: Selection, out: str, **kwargs: Any) -> Any:
    with Archive.open(store) as archive:
        return anonymize(archive, selection, out, **kwargs)


def _verify(store: str) -> VerifyReport:
    with Archive.open(store) as archive:
        return verify(archive)


def _instance_metadata(store: str, sop: str = "") -> dict[str, Any]:
    """The served metadata of instance ``sop`` (of the first instance when not given)."""
    (key,) = [k for k in keys_under(store, STUDIES) if _is_instance_info(k, sop)][:1]
    study, series, instance = key.split("/")[1:6:2]
    metadata: dict[str, Any] = served_metadata(store, study, series, instance)
    return metadata


def _is_instance_info(key: str, sop: str = "") -> bool:
    """``studies/<study>/series/<series>/instances/<sop>/info.json.gz``."""
    parts = key.split("/")
    return (
        len(parts) == 7
        and parts[4] == "instances"
        and parts[6] == "info.json.gz"
        and (not sop or parts[5] == sop)
    )


def _first_info(store: str) -> InfoRecord:
    key = next(k for k in keys_under(store, STUDIES) if k.endswith("/info.json.gz"))
    return InfoRecord.from_json(read_json(store, key))


def test_each_table_attribute_handled(source: Source, new_store: Callable[[str], str]) -> None:
    """Every Table E.1-1 attribute present is removed, emptied, dummied or remapped."""
    store, files = source
    out = new_store("out")
    report = _anonymize(store, Selection(study=uid("77.1")), out, key=KEY)
    assert report.ok and len(report.results) == 2
    profile = Profile(KEY)
    original = pydicom.dcmread(files[1])
    new_sop = profile.uid(uid("77.4"))
    out_meta = _instance_metadata(out, new_sop)
    handled = 0
    for element in original:
        key = f"{element.tag:08X}"
        if key not in CONFIDENTIALITY_PROFILE and not element.tag.is_private:
            continue
        action = profile.action(element.tag, element.VR)
        handled += 1
        got = out_meta.get(key)
        if key in ("00100010", "00100020"):  # keyed pseudonyms (test_anonymize_patients.py)
            assert got is not None and got["Value"], key
        elif action == "X":
            assert got is None, key
        elif action == "Z":
            assert got is not None and "Value" not in got, key
        elif action == "D":
            assert got is not None and got.get("Value"), key
            assert got["vr"] != "PN" or got["Value"][0]["Alphabetic"] == DUMMY["PN"]
        elif action == "U" and element.VR == "SQ":
            assert got is not None  # its UIDs are remapped (test_uids_consistent_...)
        elif action == "U":
            assert got is not None and got["Value"] == [profile.uid(str(element.value))], key
    assert handled >= 15
    assert out_meta["00120062"]["Value"] == ["YES"]
    codes = [item["00080100"]["Value"][0] for item in out_meta["00120064"]["Value"]]
    assert codes == ["113100"]


SECRETS = [
    "SMITHERSON",
    "ALICIA",
    "SECRET-ID-77",
    "Saint Example Hospital",
    "SCANNER-ROOM-9",
    "TECHNICIAN",
    "SN-99-887766",
    "19610307",
    "OTHER-ID-4455",
    "ACC-31337",
    "STUDY-4242",
    "PRIVATE-SECRET-VALUE",
    uid("77.1"),
    uid("77.2"),
    uid("77.3"),
    uid("77.4"),
    uid("77.99"),
]


def _found(haystack: list[bytes]) -> list[str]:
    """The secrets (UTF-8 or UTF-16) found anywhere in ``haystack``."""
    return [
        secret
        for secret in SECRETS
        if any(
            encoded in text
            for encoded in {secret.encode(), secret.encode("utf-16-le")}
            for text in haystack
        )
    ]


def test_no_original_value_remains(source: Source, new_store: Callable[[str], str]) -> None:
    """Search the whole output store for each removed or replaced original value."""
    store, _files = source
    out = new_store("out")
    _anonymize(store, Selection(patient_id="SECRET-ID-77"), out, key=KEY)
    assert _found(store_texts(out)) == []
    assert _verify(out).ok


def test_uids_consistent_and_references_resolve(
    source: Source, new_store: Callable[[str], str]
) -> None:
    """The same key maps the same UIDs in two runs; a reference points at the new instance."""
    store, _ = source
    one, two, other = new_store("one"), new_store("two"), new_store("other")
    for out in (one, two):
        _anonymize(store, Selection(study=uid("77.1")), out, key=KEY)
    index = read_json(one, STUDIES_INDEX)
    assert index == read_json(two, STUDIES_INDEX)
    _anonymize(store, Selection(study=uid("77.1")), other, key=b"another key")
    assert read_json(other, STUDIES_INDEX) != index
    profile = Profile(KEY)
    meta = _instance_metadata(one, profile.uid(uid("77.4")))
    referenced = meta["00081140"]["Value"][0]["00081155"]["Value"][0]
    assert referenced == profile.uid(uid("77.3"))
    assert [k for k in keys_under(one, STUDIES) if _is_instance_info(k, referenced)]


def test_options_retain_and_shift(source: Source, new_store: Callable[[str], str]) -> None:
    """Retain Patient Characteristics keeps PatientAge; Modified Dates shifts StudyDate."""
    store, _ = source
    out = new_store("out")
    options = frozenset({"retain-patient-characteristics", "retain-modified-dates"})
    _anonymize(store, Selection(study=uid("77.1")), out, key=KEY, options=options)
    meta = _instance_metadata(out)
    assert meta["00101010"]["Value"] == ["063Y"]
    days = Profile(KEY).date_offset("SECRET-ID-77")
    assert meta["00080020"]["Value"] == [Profile(KEY).shift("DA", "20240101", days)]
    assert meta["00080020"]["Value"] != ["20240101"]
    codes = {item["00080100"]["Value"][0] for item in meta["00120064"]["Value"]}
    assert codes == {"113100", "113107", "113108"}


def test_cli_anonymize_all(source: Source, new_store: Callable[[str], str]) -> None:
    """mkdicomwebupdate -anonymize --all --out DIR; --out is required."""
    store, _ = source
    args = ["-o", store, "-anonymize", "--all", "--out", new_store("deid")]
    result = runner.invoke(UPDATE_APP, normalise_argv(args))
    assert result.exit_code == 0, result.output
    assert "2 instances de-identified" in result.stdout
    missing = runner.invoke(UPDATE_APP, normalise_argv(["-o", store, "-anonymize", "--all"]))
    assert missing.exit_code == 2


@pytest.mark.local
def test_frames_shared_by_hard_link(source: Source, new_store: Callable[[str], str]) -> None:
    """Unchanged frames of the output store are hard links to the source's frame files."""
    store, _ = source
    out = new_store("out")
    report = _anonymize(store, Selection(study=uid("77.1")), out, key=KEY)
    assert report.linked == 2
    frame = next(k for k in keys_under(out, STUDIES) if k.endswith("/1.mht"))
    assert (Path(out) / frame).stat().st_nlink == 2


def test_dry_run_and_in_place(source: Source) -> None:
    """--dry-run writes nothing; --all --in-place leaves only the de-identified instances (the
    originals are kept aside, revertible, until the change is purged: then nothing of them is
    left in the store)."""
    store, _ = source
    before = tree_hashes(store, private=True), index_dump(store)
    args = ["-o", store, "-anonymize", "--all", "--in-place"]
    dry = runner.invoke(UPDATE_APP, normalise_argv([*args, "--dry-run"]))
    assert dry.exit_code == 0 and "2 instances would be de-identified" in dry.stdout
    assert (tree_hashes(store, private=True), index_dump(store)) == before
    with pytest.raises(NotAStoreError):
        Archive.open(f"{store}.dry-run")
    done = runner.invoke(UPDATE_APP, normalise_argv(args))
    assert done.exit_code == 0, done.output
    if stores.BACKEND == "local":  # no copy of the store beside it
        assert sorted(p.name for p in Path(store).parent.iterdir()) == ["in", "store"]
    assert _found([k.encode() + v for k, v in objects(store).items()]) == []  # served
    assert _verify(store).ok
    with Archive.open(store) as archive:
        (change_id,) = {r["change_id"] for r in audit_log(archive) if r["operation"] == "anonymize"}
        assert f"change {change_id}" in done.stdout
        assert "SMITHERSON" in _found(store_texts(store))  # kept aside for revert until purged
        purge(archive, change_id)
    assert _found(store_texts(store)) == []
    assert exists(store, STORE_KEY)
    assert _verify(store).ok


@pytest.mark.parametrize(
    ("name", "keep"),
    [
        ("MR_small_jp2klossless.dcm", False),
        ("MR_small_jp2klossless.dcm", True),
        ("SC_rgb_rle_2frame.dcm", False),
    ],
)
def test_recompressed_and_kept_frames_are_shared(
    name: str, keep: bool, new_store: Callable[[str], str]
) -> None:
    """De-identifying a JPEG 2000 original stored as JPEG-LS (its codestreams gone, or kept
    with --keep-originals) and an RLE one kept as received gives the same stored frames,
    shared by hard link (on a local disk); the de-identified store keeps the codestreams where
    the source did."""
    source = get_testdata_file(name, download=False)
    assert isinstance(source, str)
    store, out = new_store("store"), new_store("out")
    options = PipelineOptions(recompression=Recompression(keep_originals=keep))
    (result,) = ingested(store, [source], options=options).results
    assert result.key is not None
    report = _anonymize(store, Selection(study=result.key.study), out, key=KEY)
    assert report.ok, [r.error for r in report.results]
    frames = int(pydicom.dcmread(source).get("NumberOfFrames") or 1)
    # frames are shared where both stores are directories on one file system
    assert report.linked == (frames if stores.BACKEND == "local" else None)
    before, after = _first_info(store), _first_info(out)
    assert [f.sha256 for f in after.frames] == [f.sha256 for f in before.frames]
    checked = _verify(out)
    assert checked.ok, checked.findings
    assert [v.equivalence for v in checked.instances] == ["bytes"]  # as it was received
    kept = any(f.source is not None and f.source.bulk is not None for f in after.frames)
    assert kept == keep

"""De-identification (PS3.15 E.1) into a new store: actions, no original value left, UIDs."""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

from dicomweb_archive import PipelineOptions, Recompression, ingest
from dicomweb_archive.cli.main import UPDATE_APP
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.model.deid import DUMMY, Profile
from dicomweb_archive.model.standard_tables import CONFIDENTIALITY_PROFILE
from dicomweb_archive.ops.anonymize import anonymize
from dicomweb_archive.ops.export import Selection
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.files import read_json_gz
from tests.factory import make_ct, uid

KEY = b"test-key"
runner = CliRunner()


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
def source(tmp_path: Path) -> tuple[Path, list[Path]]:
    (tmp_path / "in").mkdir()
    files = [
        _identifying(tmp_path / "in" / "a.dcm", sop=uid("77.3")),
        _identifying(tmp_path / "in" / "b.dcm", sop=uid("77.4"), referenced=uid("77.3")),
    ]
    store = tmp_path / "store"
    assert ingest(files, store).ok
    return store, files


def test_each_table_attribute_handled(source: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """Every Table E.1-1 attribute present is removed, emptied, dummied or remapped."""
    store, files = source
    report = anonymize(store, Selection(study=uid("77.1")), tmp_path / "out", key=KEY)
    assert report.ok and len(report.results) == 2
    profile = Profile(KEY)
    original = pydicom.dcmread(files[1])
    new_sop = profile.uid(uid("77.4"))
    out_meta = read_json_gz(
        next((tmp_path / "out").glob(f"studies/*/series/*/instances/{new_sop}/metadata.gz"))
    )[0]
    handled = 0
    for element in original:
        key = f"{element.tag:08X}"
        if key not in CONFIDENTIALITY_PROFILE and not element.tag.is_private:
            continue
        action = profile.action(element.tag)
        handled += 1
        got = out_meta.get(key)
        if action == "X":
            assert got is None, key
        elif action == "Z":
            assert got is not None and "Value" not in got, key
        elif action == "D":
            assert got is not None and got.get("Value"), key
            assert got["vr"] != "PN" or got["Value"][0]["Alphabetic"] == DUMMY["PN"]
        elif action == "U" and element.VR == "SQ":
            assert got is not None  # its UIDs are remapped (test_uids_consistent_...)
        elif action == "U":
            assert got["Value"] == [profile.uid(str(element.value))], key
    assert handled >= 15
    assert out_meta["00120062"]["Value"] == ["YES"]
    codes = [item["00080100"]["Value"][0] for item in out_meta["00120064"]["Value"]]
    assert codes == ["113100"]


def _texts(root: Path) -> list[bytes]:
    """Every byte of the store as it can be read: files (gz opened, info literals decoded),
    file names, and the index rows."""
    out: list[bytes] = []
    for path in root.rglob("*"):
        out.append(str(path.relative_to(root)).encode())
        if not path.is_file() or path.name.startswith("index.sqlite"):
            continue
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
            out.extend(_literals(json.loads(data)))
        out.append(data)
    with sqlite3.connect(root / ".dicomweb-archive" / "index.sqlite") as db:
        for table in ("patients", "studies", "series", "instances"):
            out.extend(repr(row).encode() for row in db.execute(f"SELECT * FROM {table}"))
    return out


def _literals(value: object) -> list[bytes]:
    if isinstance(value, dict):
        found = [base64.b64decode(value["literal"])] if "literal" in value else []
        return found + [b for v in value.values() for b in _literals(v)]
    if isinstance(value, list):
        return [b for v in value for b in _literals(v)]
    return []


def test_no_original_value_remains(source: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """Search the whole output store for each removed or replaced original value."""
    store, _files = source
    anonymize(store, Selection(patient_id="SECRET-ID-77"), tmp_path / "out", key=KEY)
    secrets = [
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
    haystack = _texts(tmp_path / "out")
    for secret in secrets:
        for encoded in {secret.encode(), secret.encode("utf-16-le")}:
            assert not any(encoded in text for text in haystack), secret
    assert verify(tmp_path / "out").ok


def test_uids_consistent_and_references_resolve(
    source: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """The same key maps the same UIDs in two runs; a reference points at the new instance."""
    store, _ = source
    for name in ("one", "two"):
        anonymize(store, Selection(study=uid("77.1")), tmp_path / name, key=KEY)
    index = read_json_gz(tmp_path / "one" / "studies" / "index.json.gz")
    assert index == read_json_gz(tmp_path / "two" / "studies" / "index.json.gz")
    anonymize(store, Selection(study=uid("77.1")), tmp_path / "other", key=b"another key")
    assert read_json_gz(tmp_path / "other" / "studies" / "index.json.gz") != index
    profile = Profile(KEY)
    meta = read_json_gz(
        next(
            (tmp_path / "one").glob(
                f"studies/*/series/*/instances/{profile.uid(uid('77.4'))}/metadata.gz"
            )
        )
    )[0]
    referenced = meta["00081140"]["Value"][0]["00081155"]["Value"][0]
    assert referenced == profile.uid(uid("77.3"))
    assert list((tmp_path / "one").glob(f"studies/*/series/*/instances/{referenced}"))


def test_options_retain_and_shift(source: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """Retain Patient Characteristics keeps PatientAge; Modified Dates shifts StudyDate."""
    store, _ = source
    options = frozenset({"retain-patient-characteristics", "retain-modified-dates"})
    anonymize(store, Selection(study=uid("77.1")), tmp_path / "out", key=KEY, options=options)
    meta = read_json_gz(
        next((tmp_path / "out").glob("studies/*/series/*/instances/*/metadata.gz"))
    )[0]
    assert meta["00101010"]["Value"] == ["063Y"]
    days = Profile(KEY).date_offset("SECRET-ID-77")
    assert meta["00080020"]["Value"] == [Profile(KEY).shift("DA", "20240101", days)]
    assert meta["00080020"]["Value"] != ["20240101"]
    codes = {item["00080100"]["Value"][0] for item in meta["00120064"]["Value"]}
    assert codes == {"113100", "113107", "113108"}


def test_cli_anonymize_all(source: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """mkdicomwebupdate -anonymize --all --out DIR; --out is required."""
    store, _ = source
    args = ["-o", str(store), "-anonymize", "--all", "--out", str(tmp_path / "deid")]
    result = runner.invoke(UPDATE_APP, normalise_argv(args))
    assert result.exit_code == 0, result.output
    assert "2 instances de-identified" in result.stdout
    missing = runner.invoke(UPDATE_APP, normalise_argv(["-o", str(store), "-anonymize", "--all"]))
    assert missing.exit_code == 2


def test_frames_shared_by_hard_link(source: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """Unchanged frames of the output store are hard links to the source's frame files."""
    store, _ = source
    report = anonymize(store, Selection(study=uid("77.1")), tmp_path / "out", key=KEY)
    assert report.linked == 2
    frame = next((tmp_path / "out").rglob("1.mht"))
    assert frame.stat().st_nlink == 2


def test_dry_run_and_in_place(source: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """--dry-run writes nothing; --all --in-place leaves only the de-identified store."""
    store, _ = source
    args = ["-o", str(store), "-anonymize", "--all", "--in-place"]
    dry = runner.invoke(UPDATE_APP, normalise_argv([*args, "--dry-run"]))
    assert dry.exit_code == 0 and "2 instances would be de-identified" in dry.stdout
    assert not list(tmp_path.glob(".store.*"))
    done = runner.invoke(UPDATE_APP, normalise_argv(args))
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "store"]
    haystack = _texts(store)
    assert not any(b"SMITHERSON" in text for text in haystack)
    assert (store / ".dicomweb-archive" / "deidentification.key").exists()
    assert verify(store).ok


@pytest.mark.parametrize(
    ("name", "keep"),
    [
        ("MR_small_jp2klossless.dcm", False),
        ("MR_small_jp2klossless.dcm", True),
        ("SC_rgb_rle_2frame.dcm", False),
    ],
)
def test_recompressed_and_kept_frames_are_shared(name: str, keep: bool, tmp_path: Path) -> None:
    """De-identifying a JPEG 2000 original stored as JPEG-LS (its codestreams gone, or kept
    with --keep-originals) and an RLE one kept as received gives the same stored frames,
    shared by hard link; the de-identified store keeps the codestreams where the source did."""
    source = get_testdata_file(name, download=False)
    assert isinstance(source, str)
    store = tmp_path / "store"
    options = PipelineOptions(recompression=Recompression(keep_originals=keep))
    (result,) = ingest([source], store, options=options).results
    assert result.key is not None
    report = anonymize(store, Selection(study=result.key.study), tmp_path / "out", key=KEY)
    assert report.ok, [r.error for r in report.results]
    frames = int(pydicom.dcmread(source).get("NumberOfFrames") or 1)
    assert report.linked == frames
    before = read_json_gz(next(store.rglob("info.json.gz")))
    after = read_json_gz(next((tmp_path / "out").rglob("info.json.gz")))
    assert [f["sha256"] for f in after["frames"]] == [f["sha256"] for f in before["frames"]]
    checked = verify(tmp_path / "out")
    assert checked.ok, checked.findings
    assert [v.equivalence for v in checked.instances] == ["bytes"]  # as it was received
    assert any("bulk" in f.get("source", {}) for f in after["frames"]) == keep

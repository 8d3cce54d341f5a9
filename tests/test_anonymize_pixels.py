"""Pixel cleaning by rule (``--clean-pixels``, PS3.15 E.3.1): only the frames a rectangle
touches are rewritten, blanked pixels are 0, Burned In Annotation becomes NO and Clean Pixel
Data Option (113101) is recorded; unchanged frames pass through as stored, never decoded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLSLossless
from typer.testing import CliRunner

from dicomweb_archive import Archive, PipelineOptions
from dicomweb_archive.cli.main import UPDATE_APP
from dicomweb_archive.cli.update import normalise_argv
from dicomweb_archive.dicom import codecs, recompress
from dicomweb_archive.errors import UsageError
from dicomweb_archive.model.deid import Profile
from dicomweb_archive.model.pixel_rules import read_pixel_rules
from dicomweb_archive.ops.anonymize import anonymize, anonymize_in_place
from dicomweb_archive.ops.revert import revert_change
from dicomweb_archive.store.instance import InstanceKey, read_frame, read_info
from tests.deid_helpers import EVERYTHING, exported, read_all
from tests.factory import make_ct, uid
from tests.stores import ingested, objects, tree_hashes

KEY = b"pixel-key"
RULES = """\
# Modality | Manufacturer | Manufacturer's Model Name | Rows x Columns : rectangles
US | acme* | * | 64x48 : 2,3,10,5@2  40,40,100,100@2-2
MR | * | * | * : 0,0,4,4
"""


def _file(tmp_path: Path, name: str, *, manufacturer: str, seed: int) -> Path:
    """A 3-frame 64 x 48 ultrasound-like image of noise (Burned In Annotation absent)."""
    ds = make_ct(
        study=uid("55.1"),
        series=uid("55.2"),
        sop=uid(f"55.3.{seed}"),
        rows=64,
        columns=48,
        frames=3,
        seed=seed,
        modality="US",
    )
    ds.Manufacturer = manufacturer
    ds.NumberOfFrames = 3
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _frame_files(store: str, key: InstanceKey) -> list[bytes]:
    """The payloads of the instance's 3 stored frame files."""
    with Archive.open(store) as archive:
        assert len(read_info(archive.storage, archive.keys, key).frames) == 3
        return [bytes(read_frame(archive.storage, archive.keys, key, n)) for n in (1, 2, 3)]


def _passed_through(after: bytes, before: bytes) -> bool:
    """The stored frame as it was; an odd-length codestream is stored with the pad byte its
    encapsulated item needs (PS3.5 A.4), the source store's recompressed frame without."""
    return after == before or (len(before) % 2 == 1 and after == before + b"\0")


def _new_key(key: InstanceKey) -> InstanceKey:
    profile = Profile(KEY)
    return InstanceKey(profile.uid(key.study), profile.uid(key.series), profile.uid(key.sop))


def _report(store: str) -> dict[str, object]:
    (found,) = [
        json.loads(data)
        for key, data in objects(store, private=True).items()
        if "deidentification/" in key and key.endswith(".json")
    ]
    assert isinstance(found, dict)
    return found


def test_rectangles_blank_only_touched_frames(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """A matching rule blanks its rectangles (clipped to the image) to 0 on frame 2 only,
    re-encoded in the stored JPEG-LS; frames 1 and 3 keep their stored files byte for byte;
    Burned In Annotation is NO and 113101 is recorded; the report lists the cleaned instance
    and the flagged one no rule matched."""
    source, out = new_store("source"), new_store("out")
    matched = _file(tmp_path, "a.dcm", manufacturer="ACME Medical", seed=1)
    other = _file(tmp_path, "b.dcm", manufacturer="Other Corp", seed=2)
    results = ingested(source, [matched, other]).results
    rules = read_pixel_rules(RULES, name="rules.txt")
    with Archive.open(source) as archive:
        report = anonymize(archive, EVERYTHING, out, key=KEY, pixel_rules=rules)
    assert report.ok, [r.error for r in report.results]
    assert report.cleaned == {uid("55.3.1"): 2}
    assert report.review[uid("55.3.2")][-1] == "no pixel cleaning rule matched"
    old = results[0].key
    assert old is not None
    before, after = _frame_files(source, old), _frame_files(out, _new_key(old))
    assert _passed_through(after[0], before[0]) and _passed_through(after[2], before[2])
    assert not _passed_through(after[1], before[1])
    original = pydicom.dcmread(matched).pixel_array
    (ds,) = [d for d in read_all(exported(out, tmp_path / "x")) if d.Manufacturer[0] == "A"]
    assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless
    pixels = ds.pixel_array
    expected = original.copy()
    expected[1, 3:8, 2:12] = 0
    expected[1, 40:64, 40:48] = 0
    assert (pixels == expected).all() and (pixels[1, 3:8, 2:12] == 0).all()
    assert ds.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101"]
    content = _report(out)
    profile = Profile(KEY)
    cleaned = [{"sop_instance_uid": profile.uid(uid("55.3.1")), "rule_line": 2}]
    assert content["instances_pixels_cleaned"] == cleaned
    assert content["pixel_rules"] == "rules.txt"


def test_native_in_place_cleaning_is_revertible(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """In place, native frames are blanked in their bytes on every frame, as one change that
    revert undoes (the original pixels and files come back)."""
    store = new_store("store")
    path = _file(tmp_path, "a.dcm", manufacturer="ACME", seed=3)
    ds = pydicom.dcmread(path)
    ds.Modality = "MR"
    ds.save_as(path, enforce_file_format=True)
    assert ingested(store, [path], options=PipelineOptions(recompression=None)).ok
    before = tree_hashes(store)
    rules = read_pixel_rules(RULES, name="rules.txt")
    with Archive.open(store) as archive:
        report = anonymize_in_place(archive, key=KEY, pixel_rules=rules)
    assert report.ok and report.cleaned == {uid("55.3.3"): 3}
    (cleaned,) = read_all(exported(store, tmp_path / "x"))
    assert cleaned.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    expected = ds.pixel_array.copy()
    expected[:, 0:4, 0:4] = 0
    assert (cleaned.pixel_array == expected).all()
    with Archive.open(store) as archive:
        revert_change(archive, report.change_id)
    (back,) = read_all(exported(store, tmp_path / "y"))
    assert (back.pixel_array == ds.pixel_array).all()
    assert tree_hashes(store).keys() >= before.keys()


def test_unchanged_frames_never_decoded(
    tmp_path: Path, new_store: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pixel cleaning, frames the source stores recompressed (JPEG-LS) pass through
    as stored: nothing is decoded or encoded, and the frames are the source's."""
    source, out = new_store("source"), new_store("out")
    (result,) = ingested(source, [_file(tmp_path, "a.dcm", manufacturer="X", seed=4)]).results
    assert result.key is not None

    def refuse(*_args: object, **_kwargs: object) -> object:
        raise AssertionError("a frame was decoded or encoded")

    for module in (codecs, recompress):
        monkeypatch.setattr(module, "decode_frame", refuse)
        monkeypatch.setattr(module, "encode", refuse)
    with Archive.open(source) as archive:
        report = anonymize(archive, EVERYTHING, out, key=KEY)
    assert report.ok, [r.error for r in report.results]
    after, before = _frame_files(out, _new_key(result.key)), _frame_files(source, result.key)
    assert all(_passed_through(a, b) for a, b in zip(after, before, strict=True))


def test_lossy_or_rle_frames_not_cleaned_but_reported(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """Frames a rule matches in a syntax that cannot be encoded again losslessly here (RLE
    kept as received) are not released uncleaned: the instance is reported, left out."""
    source = new_store("source")
    rle = get_testdata_file("SC_rgb_rle_2frame.dcm", download=False)
    assert isinstance(rle, str)
    assert ingested(source, [rle]).ok
    rules = read_pixel_rules("* | * | * | * : 0,0,5,5", name="all.txt")
    with Archive.open(source) as archive:
        report = anonymize(archive, EVERYTHING, new_store("out"), key=KEY, pixel_rules=rules)
    (result,) = report.results
    assert result.status == "failed" and result.error is not None
    assert "1.2.840.10008.1.2.5, which cannot be cleaned" in result.error


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("US | * | * : 0,0,1,1", 1, "give Modality | Manufacturer"),
        ("# ok\nUS | * | * | 480 : 0,0,1,1", 2, "the size is ROWSxCOLUMNS"),
        ("US | * | * | * : 0,0,1", 1, "is not a rectangle"),
        ("US | * | * | * : 0,0,0,4", 1, "has no area"),
        ("US | * | * | * : 0,0,1,1@3-2", 1, "frames are numbered from 1"),
        ("US | * | * | * :", 1, "no rectangle"),
    ],
    ids=["fields", "size", "rectangle", "area", "frames", "empty"],
)
def test_malformed_rules_named_by_line(text: str, line: int, says: str) -> None:
    """A malformed rule is refused with one worded line naming the file and line."""
    with pytest.raises(UsageError) as raised:
        read_pixel_rules(text, name="rules.txt")
    assert str(raised.value).startswith(f"rules.txt, line {line}: ")
    assert says in str(raised.value)


def test_cli_malformed_rules_change_nothing(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """mkdicomwebupdate -anonymize --clean-pixels with a malformed file exits 2 with one line
    naming file and line, before anything is written; a good file cleans and says so."""
    store = new_store("store")
    assert ingested(store, [_file(tmp_path, "a.dcm", manufacturer="ACME", seed=5)]).ok
    bad, good = tmp_path / "bad.txt", tmp_path / "good.txt"
    bad.write_text("US | * | * | 64x48 : 1,2,3\n")
    good.write_text(RULES)
    before = tree_hashes(store, private=True)
    args = ["-o", store, "-anonymize", "--all", "--in-place", "--clean-pixels"]
    failed = CliRunner().invoke(UPDATE_APP, normalise_argv([*args, str(bad)]))
    assert failed.exit_code == 2
    assert failed.stderr.strip().splitlines() == [
        f"error: {bad}, line 1: '1,2,3' is not a rectangle x,y,width,height[@FRAME[-FRAME]] "
        "in pixels"
    ]
    assert tree_hashes(store, private=True) == before
    done = CliRunner().invoke(UPDATE_APP, normalise_argv([*args, str(good)]))
    assert done.exit_code == 0, done.output
    assert "1 instance with pixels cleaned" in done.stdout

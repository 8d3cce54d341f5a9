"""Thumbnails (PS3.18 thumbnail resources): at each level from the server, and as derived
files written by ``mkdicomweb --thumbnails``, dropped by a change of their series."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import SEED_APPS
from dicomweb_archive.ops.delete import apply_delete, plan_delete
from dicomweb_archive.ops.revert import revert_change
from dicomweb_archive.ops.update import update
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store.keys import StoreKeys
from tests.factory import write_series
from tests.serving import Http, serving
from tests.stores import exists, keys_under, read

KEYS = StoreKeys()
runner = CliRunner()


def _files(tmp_path: Path) -> list[Path]:
    """A series of three 64 x 64 CT slices and a 2-frame 100 x 100 RGB image (each its own
    study), and an RT Plan (no Pixel Data)."""
    files = write_series(tmp_path / "in", count=3)
    for name in ("SC_rgb_rle_2frame.dcm", "rtplan.dcm"):
        source = get_testdata_file(name, download=False)
        assert isinstance(source, str)
        files.append(Path(shutil.copy(source, tmp_path / "in" / name)))
    return files


def _levels(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path)
    study = f"/dicomweb/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    return study, series, f"{series}/instances/{ds.SOPInstanceUID}"


def _mkdicomweb(store: str, *args: str) -> str:
    result = runner.invoke(SEED_APPS["mkdicomweb"], ["-o", store, *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_thumbnails_at_each_level(tmp_path: Path, store: str) -> None:
    """Study, series, instance and frame thumbnails are JPEG within 128 x 128 keeping the
    aspect ratio; PNG on request; a viewport sets the size; no image, no thumbnail (404)."""
    files = _files(tmp_path)
    _mkdicomweb(store, str(tmp_path / "in"))
    study, series, instance = _levels(files[3])
    with serving(store) as url:
        http = Http(url)
        for path in (study, series, instance, f"{instance}/frames/2"):
            reply = http.get(f"{path}/thumbnail")
            assert reply.status_code == 200, path
            assert reply.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(reply.content)).size == (128, 128)
        png = http.get(f"{instance}/thumbnail", {"Accept": "image/png"})
        assert png.headers["content-type"] == "image/png"
        small = http.get(f"{instance}/thumbnail?viewport=50,20&accept=image/png")
        assert Image.open(io.BytesIO(small.content)).size == (20, 20)
        assert http.get(f"{_levels(files[4])[2]}/thumbnail").status_code == 404
        assert http.get(f"{instance}/thumbnail", {"Accept": "image/gif"}).status_code == 406


def test_mkdicomweb_writes_thumbnails_that_are_served(tmp_path: Path, store: str) -> None:
    """--thumbnails writes thumbnail.jpg in each study, series and instance folder holding an
    image (none for the RT Plan); the server answers them; verify knows them; a second run
    writes none."""
    files = _files(tmp_path)
    assert "8 thumbnails written" in _mkdicomweb(store, "--thumbnails", str(tmp_path / "in"))
    ct = [pydicom.dcmread(f) for f in files[:3]]
    study, series = str(ct[0].StudyInstanceUID), str(ct[0].SeriesInstanceUID)
    middle = KEYS.instance_thumbnail(study, series, str(ct[1].SOPInstanceUID))
    assert read(store, KEYS.series_thumbnail(study, series)) == read(store, middle)
    assert read(store, KEYS.study_thumbnail(study)) == read(store, middle)
    plan = pydicom.dcmread(files[4])
    assert not [
        k for k in keys_under(store, KEYS.study(str(plan.StudyInstanceUID))) if "thumb" in k
    ]
    with serving(store) as url:
        reply = Http(url).get(f"{_levels(files[1])[2]}/thumbnail")
    assert reply.content == read(store, middle)
    with Archive.open(store) as archive:
        assert verify(archive).ok
    assert "0 thumbnails written" in _mkdicomweb(store, "--thumbnails", str(tmp_path / "in"))


def test_an_edit_drops_stale_thumbnails(tmp_path: Path, store: str) -> None:
    """An edit of an instance drops its series' thumbnails and its study's (the middle
    instance's was made with the old window); mkdicomwebstudy --thumbnails writes them again
    with the new window; a revert drops those, and the next run writes the old ones again."""
    files = _files(tmp_path)
    _mkdicomweb(store, "--thumbnails", str(tmp_path / "in"))
    ds = pydicom.dcmread(files[1])
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    names = [
        KEYS.study_thumbnail(study),
        KEYS.series_thumbnail(study, series),
        KEYS.instance_thumbnail(study, series, str(ds.SOPInstanceUID)),
    ]
    before = read(store, names[2])
    other = pydicom.dcmread(files[3])
    kept = KEYS.instance_thumbnail(
        str(other.StudyInstanceUID), str(other.SeriesInstanceUID), str(other.SOPInstanceUID)
    )
    with Archive.open(store) as archive:
        change = update(
            archive, "instance", str(ds.SOPInstanceUID), ["WindowCenter=0", "WindowWidth=1"]
        ).change_id
    assert not any(exists(store, name) for name in names)
    assert exists(store, kept)  # another study's are untouched
    result = runner.invoke(SEED_APPS["mkdicomwebstudy"], ["-o", store, "--thumbnails", study])
    assert result.exit_code == 0, result.output
    assert "5 thumbnails written" in result.stdout
    with serving(store) as url:  # the same thumbnail as one rendered with the new window
        windowed = Http(url).get(f"{_levels(files[1])[2]}/rendered?window=0,1&viewport=128,128")
    assert read(store, names[2]) == windowed.content != before
    with Archive.open(store) as archive:
        assert verify(archive).ok
        revert_change(archive, change)
    assert not any(exists(store, name) for name in names)
    runner.invoke(SEED_APPS["mkdicomwebstudy"], ["-o", store, "--thumbnails", study])
    assert read(store, names[2]) == before


def test_thumbnails_need_the_study_stage(tmp_path: Path, store: str) -> None:
    """--thumbnails with a command that does not run the study stage is a usage error."""
    write_series(tmp_path / "in", count=1)
    for command, args in (("mkdicomwebinstances", []), ("mkdicomweb", ["--no-study"])):
        result = runner.invoke(
            SEED_APPS[command], ["-o", store, "--thumbnails", *args, str(tmp_path / "in")]
        )
        assert result.exit_code == 2
        assert "--thumbnails follows the study stage" in result.stderr


def test_a_delete_drops_the_series_thumbnails(tmp_path: Path, store: str) -> None:
    """Deleting an instance removes its thumbnail with its folder, and drops its series' and
    study's (the middle instance may be another now); nothing else of the store is touched."""
    files = _files(tmp_path)
    _mkdicomweb(store, "--thumbnails", str(tmp_path / "in"))
    ds = pydicom.dcmread(files[0])
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    with Archive.open(store) as archive:
        apply_delete(archive, plan_delete(archive, "instance", str(ds.SOPInstanceUID)))
    left = [k for k in keys_under(store, KEYS.study(study)) if k.endswith("thumbnail.jpg")]
    assert left == []
    assert exists(store, KEYS.study_thumbnail(str(pydicom.dcmread(files[3]).StudyInstanceUID)))
    result = runner.invoke(SEED_APPS["mkdicomwebstudy"], ["-o", store, "--thumbnails", study])
    assert "4 thumbnails written" in result.stdout  # two instances, the series, the study
    middle = KEYS.instance_thumbnail(study, series, str(pydicom.dcmread(files[2]).SOPInstanceUID))
    assert read(store, KEYS.series_thumbnail(study, series)) == read(store, middle)


def test_a_replacement_with_new_pixels_drops_the_series_thumbnails(
    tmp_path: Path, store: str
) -> None:
    """--replace of the series' middle instance by a file with the same attributes and other
    pixels (its series metadata does not change) drops the series' and study's thumbnails, which
    were copies of the old instance's; the next --thumbnails run makes them from the new
    pixels."""
    files = _files(tmp_path)
    _mkdicomweb(store, "--thumbnails", str(tmp_path / "in"))
    ds = pydicom.dcmread(files[1])
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    level_names = [KEYS.study_thumbnail(study), KEYS.series_thumbnail(study, series)]
    before = [read(store, name) for name in level_names]
    ds.PixelData = bytes(len(ds.PixelData))  # black: the same attributes, other pixels
    (tmp_path / "new").mkdir()
    ds.save_as(tmp_path / "new" / "middle.dcm")
    out = _mkdicomweb(store, "--replace", str(tmp_path / "new"))
    assert not any(exists(store, name) for name in level_names), out
    result = runner.invoke(SEED_APPS["mkdicomwebstudy"], ["-o", store, "--thumbnails", study])
    assert "3 thumbnails written" in result.stdout, result.output  # the instance, series, study
    middle = KEYS.instance_thumbnail(study, series, str(ds.SOPInstanceUID))
    after = [read(store, name) for name in level_names]
    assert after == [read(store, middle)] * 2
    assert after != before
    with Archive.open(store) as archive:
        assert verify(archive).ok

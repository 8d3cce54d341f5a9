"""The command line: exit codes, stdout, stderr, options."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dicomweb_archive import __version__
from dicomweb_archive.cli.main import SEED_APPS, app
from dicomweb_archive.store.keys import STUDIES_INDEX, StoreKeys
from tests.factory import uid, write_ct, write_series
from tests.stores import exists, keys_under, served_metadata

mkdicomweb_app = SEED_APPS["mkdicomweb"]
KEYS = StoreKeys()

runner = CliRunner()


def test_mkdicomweb_ingests_and_summarises(tmp_path: Path, store: str) -> None:
    """mkdicomweb writes the store and prints one summary line; exit 0."""
    write_series(tmp_path / "in", count=3)
    result = runner.invoke(mkdicomweb_app, ["-o", store, str(tmp_path / "in")])
    assert result.exit_code == 0, result.output
    assert "3 instances stored" in result.stdout
    assert "1 study built" in result.stdout
    assert result.stderr == ""
    assert exists(store, STUDIES_INDEX)


def test_failures_give_exit_1_and_one_line_each(tmp_path: Path, store: str) -> None:
    """Each bad file is one stderr line naming it; good files are stored; exit code 1."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "junk.bin").write_bytes(b"\x00" * 500)
    write_ct(tmp_path / "in" / "ok.dcm", study=uid(1), series=uid(2), sop=uid(3))
    result = runner.invoke(app, ["create", "-o", store, str(tmp_path / "in")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "junk.bin" in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in result.stderr
    assert "1 instance stored" in result.stdout and "1 failed" in result.stdout


def test_no_phi_in_output(tmp_path: Path, store: str) -> None:
    """Neither the summary nor verbose output prints patient names or IDs."""
    write_series(tmp_path / "in", count=2, patient_id="S3CR3T")
    result = runner.invoke(mkdicomweb_app, ["-v", "-o", store, str(tmp_path / "in")])
    assert result.exit_code == 0
    assert "S3CR3T" not in result.output and "DOE" not in result.output
    listing = runner.invoke(app, ["studies", "-o", store])
    assert listing.exit_code == 0, listing.output
    assert "S3CR3T" not in listing.output
    shown = runner.invoke(app, ["studies", "--show-phi", "-o", store])
    assert "S3CR3T" in shown.output


def test_verbose_lists_each_file(tmp_path: Path, store: str) -> None:
    """-v prints one line per file on stderr with its SOP Instance UID."""
    path = write_ct(tmp_path / "one.dcm", study=uid(1), series=uid(2), sop=uid(3))
    result = runner.invoke(mkdicomweb_app, ["-v", "-o", store, str(path)])
    assert f"stored: {path} -> {uid(3)}" in result.stderr


def test_inline_thresholds_options(tmp_path: Path, store: str) -> None:
    """-m moves public binary values above it to bulk data."""
    ds_path = write_ct(tmp_path / "one.dcm", study=uid(1), series=uid(2), sop=uid(3), rows=4)
    result = runner.invoke(mkdicomweb_app, ["-m", "0", "-M", "0", "-o", store, str(ds_path)])
    assert result.exit_code == 0
    assert keys_under(store, KEYS.bulkdata_dir(uid(1))) == []  # only pixel data: frames
    meta = served_metadata(store, uid(1), uid(2), uid(3))
    assert meta["7FE00010"]["BulkDataURI"] == f"instances/{uid(3)}/frames"


def test_version(tmp_path: Path) -> None:
    """-V prints the version for both entry points."""
    for application in (app, mkdicomweb_app):
        result = runner.invoke(application, ["-V"])
        assert result.exit_code == 0
        assert __version__ in result.stdout


def test_reindex_command(tmp_path: Path, store: str) -> None:
    """reindex reports what it rebuilt."""
    write_series(tmp_path / "in", count=2)
    runner.invoke(mkdicomweb_app, ["-o", store, str(tmp_path / "in")])
    result = runner.invoke(app, ["reindex", "-o", store])
    assert result.exit_code == 0
    assert "1 study, 1 series, 2 instances" in result.stdout


def test_usage_error_exit_2(store: str) -> None:
    """A missing input argument is a usage error (exit 2)."""
    result = runner.invoke(mkdicomweb_app, ["-o", store])
    assert result.exit_code == 2


def test_not_a_store_exit_2(tmp_path: Path, store: str) -> None:
    """Commands other than ingest open an existing store only: anything else exits 2."""
    for args in (["studies"], ["reindex"], ["verify"]):
        result = runner.invoke(app, [*args, "-o", store])
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
    (tmp_path / "plain").mkdir()
    result = runner.invoke(app, ["studies", "-o", str(tmp_path / "plain")])
    assert result.exit_code == 2 and "not a dicomweb-archive store" in result.stderr

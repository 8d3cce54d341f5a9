"""Each of the seed's options, through the command line, with its effect."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dicomweb_archive.cli.main import SEED_APPS, app
from dicomweb_archive.store.files import read_json_gz
from dicomweb_archive.store.layout import StoreLayout
from tests.factory import uid, write_ct, write_series

runner = CliRunner()
JLS, HTJ2K = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.201"
EXPLICIT = "1.2.840.10008.1.2.1"


def run(command: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(SEED_APPS[command], list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    write_series(tmp_path / "in", count=2)
    return tmp_path / "in"


def test_stages_by_command(inputs: Path, tmp_path: Path) -> None:
    """deduplicated -> group -> study, run as separate commands, notify each other."""
    store = str(tmp_path / "s")
    assert run("mkdicomwebdeduplicated", "-o", store, str(inputs))[0] == 0
    assert list((tmp_path / "s" / "notifications" / "group").iterdir())
    assert not (tmp_path / "s" / "studies" / "index.json.gz").exists()
    code, out, _ = run("mkdicomwebdeduplicatedgroup", "-o", store)
    assert code == 0 and "1 studies grouped" in out
    code, out, _ = run("mkdicomwebstudy", "-o", store)
    assert code == 0 and "1 studies written" in out
    assert StoreLayout(tmp_path / "s").studies_index.exists()
    assert not any((tmp_path / "s" / "notifications").rglob("*.*"))


def test_instances_command_and_d(inputs: Path, tmp_path: Path) -> None:
    """mkdicomwebinstances writes instance metadata, no deduplicated data unless -d."""
    plain, dedup = tmp_path / "plain", tmp_path / "dedup"
    assert run("mkdicomwebinstances", "-o", str(plain), str(inputs))[0] == 0
    assert list(plain.rglob("metadata.gz")) and not (plain / "instances").exists()
    assert run("mkdicomwebinstances", "-d", "-o", str(dedup), str(inputs))[0] == 0
    assert any((dedup / "instances").iterdir())
    assert run("mkdicomwebstudy", "-o", str(plain))[0] == 0
    assert StoreLayout(plain).studies_index.exists()


def test_i_writes_instance_metadata_in_stage_one(inputs: Path, tmp_path: Path) -> None:
    """-i: instance metadata.gz exists right after mkdicomwebdeduplicated."""
    store = tmp_path / "s"
    assert run("mkdicomwebdeduplicated", "-i", "-o", str(store), str(inputs))[0] == 0
    assert len(list((store / "studies").rglob("metadata.gz"))) == 2


def test_no_group_and_no_study(inputs: Path, tmp_path: Path) -> None:
    """--no-group leaves no group file; --no-study leaves no query files."""
    store = tmp_path / "s"
    assert run("mkdicomweb", "--no-group", "--no-study", "-o", str(store), str(inputs))[0] == 0
    assert not (store / "deduplicated").exists()
    assert not (store / "studies" / "index.json.gz").exists()
    assert run("mkdicomweb", "-g", "-s", "-o", str(store), str(inputs))[0] == 0


def test_paths_options(inputs: Path, tmp_path: Path) -> None:
    """--path-instances and --path-deduplicated name the directories; absolute paths refused."""
    store = tmp_path / "s"
    args = ["--path-instances", "per-instance", "--path-deduplicated", "groups"]
    assert run("mkdicomweb", *args, "-o", str(store), str(inputs))[0] == 0
    assert (store / "per-instance").is_dir() and (store / "groups").is_dir()
    code, _, err = run("mkdicomweb", "--path-instances", "/tmp/x", "-o", str(store), str(inputs))
    assert code == 2 and "relative path" in err


def test_clean_and_remove_deduplicated(tmp_path: Path) -> None:
    """-c drops what the study had; -C removes the per-instance files after grouping."""
    store = tmp_path / "s"
    first = write_ct(tmp_path / "1.dcm", study=uid(1), series=uid(2), sop=uid(3))
    second = write_ct(tmp_path / "2.dcm", study=uid(1), series=uid(2), sop=uid(4))
    assert run("mkdicomweb", "-o", str(store), str(first))[0] == 0
    code = run("mkdicomweb", "-c", "-C", "-o", str(store), str(second))[0]
    assert code == 0
    layout = StoreLayout(store)
    assert not layout.instance(uid(1), uid(2), uid(3)).exists()
    assert layout.instance(uid(1), uid(2), uid(4)).exists()
    assert not layout.instance_records(uid(1)).exists()


def _stored_syntaxes(store: Path) -> set[str]:
    return {
        f.get("transfer_syntax_uid", info["stored"]["transfer_syntax_uid"])
        for info in (read_json_gz(p) for p in store.rglob("info.json.gz"))
        for f in info["frames"]
    }


def test_recompression_options(inputs: Path, tmp_path: Path) -> None:
    """-r/-t/-T/--no-recompress choose what is recompressed to what; bad values exit 2."""
    cases = {
        (): {JLS},
        ("-t", "htj2k"): {HTJ2K},
        ("-t", "1.2.840.10008.1.2.4.90"): {"1.2.840.10008.1.2.4.90"},
        ("--no-recompress",): {EXPLICIT},
        ("-t", "jls", "--no-recompress"): {EXPLICIT},
        ("-r", "jp2,rle"): {EXPLICIT},
        ("-r", "jp2", "-r", "uncompressed"): {JLS},
        ("-t", "none"): {EXPLICIT},
        ("-T", "htj2k"): {JLS},  # grayscale frames follow -t
    }
    for number, (args, expected) in enumerate(cases.items()):
        store = tmp_path / f"s{number}"
        code, out, err = run("mkdicomweb", *args, "-o", str(store), str(inputs))
        assert code == 0, (args, err)
        assert _stored_syntaxes(store) == expected, args
        assert ("2 frames recompressed" in out) == (expected != {EXPLICIT}), (args, out)
    bad = str(tmp_path / "bad")
    for args, message in (
        (("-r", "gif"), "'gif'"),
        (("-T", "png"), "-T/--colour-content-type"),
        (("-t", "jpeg"), "colour frames only"),
        (("-t", "1.2.840.10008.1.2.4.50"), "colour frames only"),
        (("-t", "1.2.840.10008.1.2.4.91"), "cannot be recompressed to"),
    ):
        code, _, err = run("mkdicomweb", *args, "-o", bad, str(inputs))
        assert code == 2 and message in err, (args, err)
    assert not Path(bad).exists()


def test_kept_frames_are_reported(tmp_path: Path) -> None:
    """A frame that cannot be recompressed is kept; the summary counts it, -v says why."""
    source = Path(str(get_testdata_file("SC_ybr_full_422_uncompressed.dcm")))
    code, out, err = run("mkdicomweb", "-v", "-o", str(tmp_path / "s"), str(source))
    assert code == 0
    assert "1 kept as received" in out
    assert "YBR_FULL_422 frames are kept as received" in err


def test_help_forms_and_version() -> None:
    """'help', -h and --help print the help; -V the version; for every seed command."""
    for command in SEED_APPS:
        for args in (["help"], ["-h"], ["--help"]):
            code, out, _ = run(command, *args)
            assert code == 0 and "Usage:" in out and "--clean" in out, (command, args)
        code, out, _ = run(command, "-V")
        assert code == 0 and "dicomweb-archive" in out
    assert runner.invoke(app, ["group", "--help"]).exit_code == 0


def test_file_stage_needs_input(tmp_path: Path) -> None:
    """A file stage without inputs is a usage error."""
    code, _, err = run("mkdicomwebdeduplicated", "-o", str(tmp_path))
    assert code == 2 and "needs at least one input" in err


def test_study_stage_refuses_bad_uid(tmp_path: Path) -> None:
    """Study arguments are UIDs: a path-like argument is refused."""
    result = runner.invoke(SEED_APPS["mkdicomwebstudy"], ["-o", str(tmp_path), "../x"])
    assert result.exit_code == 1 and "not a valid UID" in result.stderr

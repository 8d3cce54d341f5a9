"""Each of the seed's options, through the command line, with its effect."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomweb_archive.cli.main import SEED_APPS, app
from dicomweb_archive.store.layout import StoreLayout
from tests.factory import uid, write_ct, write_series

runner = CliRunner()


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


def test_recompression_options_checked_and_announced(inputs: Path, tmp_path: Path) -> None:
    """-r/-t/-T are validated; when given they warn that they have no effect yet."""
    store = str(tmp_path / "s")
    code, _, err = run(
        "mkdicomweb", "-r", "uncompressed,jp2", "-t", "jls", "-o", store, str(inputs)
    )
    assert code == 0 and "recompression is not available" in err
    code, _, err = run(
        "mkdicomweb", "-r", "uncompressed", "--no-recompress", "-o", store, str(inputs)
    )
    assert code == 0 and "recompression" not in err
    code, _, err = run("mkdicomweb", "-r", "gif", "-o", store, str(inputs))
    assert code == 2 and "'gif'" in err
    code, _, err = run("mkdicomweb", "-T", "png", "-o", store, str(inputs))
    assert code == 2 and "-T/--colour-content-type" in err
    assert run("mkdicomweb", "-T", "1.2.840.10008.1.2.4.80", "-o", store, str(inputs))[0] == 0


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

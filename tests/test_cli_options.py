"""Each of the seed's options, through the command line, with its effect."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import SEED_APPS, app
from dicomweb_archive.errors import NotAStoreError
from dicomweb_archive.model.info import InfoRecord
from dicomweb_archive.store.keys import NOTIFICATIONS, STUDIES, STUDIES_INDEX, StoreKeys
from tests.factory import uid, write_ct, write_series
from tests.stores import exists, keys_under, read_json

runner = CliRunner()
KEYS = StoreKeys()
JLS, HTJ2K = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.201"
EXPLICIT = "1.2.840.10008.1.2.1"


def run(command: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(SEED_APPS[command], list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    write_series(tmp_path / "in", count=2)
    return tmp_path / "in"


def test_stages_by_command(inputs: Path, store: str) -> None:
    """deduplicated -> group -> study, run as separate commands, notify each other."""
    assert run("mkdicomwebdeduplicated", "-o", store, str(inputs))[0] == 0
    assert keys_under(store, KEYS.notifications("group"))
    assert not exists(store, STUDIES_INDEX)
    code, out, _ = run("mkdicomwebdeduplicatedgroup", "-o", store)
    assert code == 0 and "1 study grouped" in out
    code, out, _ = run("mkdicomwebstudy", "-o", store)
    assert code == 0 and "1 study written" in out
    assert exists(store, STUDIES_INDEX)
    assert keys_under(store, NOTIFICATIONS) == []


def _instance_metadata(store: str) -> list[str]:
    return [k for k in keys_under(store, STUDIES) if k.endswith("/metadata.gz")]


def test_instances_command_and_d(inputs: Path, new_store: Callable[[str], str]) -> None:
    """mkdicomwebinstances writes instance metadata, no deduplicated data unless -d."""
    plain, dedup = new_store("plain"), new_store("dedup")
    assert run("mkdicomwebinstances", "-o", plain, str(inputs))[0] == 0
    assert _instance_metadata(plain) and keys_under(plain, f"{KEYS.path_instances}/") == []
    assert run("mkdicomwebinstances", "-d", "-o", dedup, str(inputs))[0] == 0
    assert keys_under(dedup, f"{KEYS.path_instances}/")
    assert run("mkdicomwebstudy", "-o", plain)[0] == 0
    assert exists(plain, STUDIES_INDEX)


def test_i_writes_instance_metadata_in_stage_one(inputs: Path, store: str) -> None:
    """-i: instance metadata.gz exists right after mkdicomwebdeduplicated."""
    assert run("mkdicomwebdeduplicated", "-i", "-o", store, str(inputs))[0] == 0
    assert len(_instance_metadata(store)) == 2


def test_no_group_and_no_study(inputs: Path, store: str) -> None:
    """--no-group leaves no group file; --no-study leaves no query files."""
    assert run("mkdicomweb", "--no-group", "--no-study", "-o", store, str(inputs))[0] == 0
    assert keys_under(store, f"{KEYS.path_deduplicated}/") == []
    assert not exists(store, STUDIES_INDEX)
    assert run("mkdicomweb", "-g", "-s", "-o", store, str(inputs))[0] == 0


def test_paths_options(inputs: Path, store: str) -> None:
    """--path-instances and --path-deduplicated name the directories; absolute paths refused."""
    args = ["--path-instances", "per-instance", "--path-deduplicated", "groups"]
    assert run("mkdicomweb", "-d", *args, "-o", store, str(inputs))[0] == 0
    assert keys_under(store, "per-instance/") and keys_under(store, "groups/")
    code, _, err = run("mkdicomweb", "--path-instances", "/tmp/x", "-o", store, str(inputs))
    assert code == 2 and "relative path" in err
    # new: the paths are the store's recorded configuration; a different one is refused
    code, _, err = run("mkdicomweb", "--path-instances", "other", "-o", store, str(inputs))
    assert code == 2 and "disagrees with the store" in err
    assert keys_under(store, "other/") == []


def test_clean_and_remove_deduplicated(tmp_path: Path, store: str) -> None:
    """-c drops what the study had; -C removes the per-instance files after grouping."""
    first = write_ct(tmp_path / "1.dcm", study=uid(1), series=uid(2), sop=uid(3))
    second = write_ct(tmp_path / "2.dcm", study=uid(1), series=uid(2), sop=uid(4))
    assert run("mkdicomweb", "-o", store, str(first))[0] == 0
    code = run("mkdicomweb", "-c", "-C", "-o", store, str(second))[0]
    assert code == 0
    assert keys_under(store, KEYS.instance(uid(1), uid(2), uid(3))) == []
    assert keys_under(store, KEYS.instance(uid(1), uid(2), uid(4)))
    assert keys_under(store, KEYS.instance_records(uid(1))) == []


def _stored_syntaxes(store: str) -> set[str]:
    infos = [
        InfoRecord.from_json(read_json(store, key))
        for key in keys_under(store, STUDIES)
        if key.endswith("/info.json.gz")
    ]
    return {info.frame_syntax(n) for info in infos for n in range(1, len(info.frames) + 1)}


def test_recompression_options(inputs: Path, new_store: Callable[[str], str]) -> None:
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
        store = new_store(f"s{number}")
        code, out, err = run("mkdicomweb", *args, "-o", store, str(inputs))
        assert code == 0, (args, err)
        assert _stored_syntaxes(store) == expected, args
        assert ("2 frames recompressed" in out) == (expected != {EXPLICIT}), (args, out)
    bad = new_store("bad")
    for args, message in (
        (("-r", "gif"), "'gif'"),
        (("-T", "png"), "-T/--colour-content-type"),
        (("-t", "jpeg"), "colour frames only"),
        (("-t", "1.2.840.10008.1.2.4.50"), "colour frames only"),
        (("-t", "1.2.840.10008.1.2.4.91"), "cannot be recompressed to"),
    ):
        code, _, err = run("mkdicomweb", *args, "-o", bad, str(inputs))
        assert code == 2 and message in err, (args, err)
    with pytest.raises(NotAStoreError):  # nothing was made
        Archive.open(bad)
    assert not Path(bad).exists()  # on local storage: no directory made either


def test_kept_frames_are_reported(store: str) -> None:
    """A frame that cannot be recompressed is kept; the summary counts it, -v says why."""
    source = Path(str(get_testdata_file("SC_ybr_full_422_uncompressed.dcm")))
    code, out, err = run("mkdicomweb", "-v", "-o", store, str(source))
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


def test_file_stage_needs_input(store: str) -> None:
    """A file stage without inputs is a usage error."""
    code, _, err = run("mkdicomwebdeduplicated", "-o", store)
    assert code == 2 and "needs at least one input" in err


def test_study_stage_refuses_bad_uid(store: str) -> None:
    """Study arguments are UIDs: a path-like argument is refused."""
    result = runner.invoke(SEED_APPS["mkdicomwebstudy"], ["-o", store, "../x"])
    assert result.exit_code == 1 and "not a valid UID" in result.stderr

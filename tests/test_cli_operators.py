"""Operators' commands and messages: listings, usage errors, --version, help."""

from __future__ import annotations

import csv
import io
import json
import re
import stat
import zipfile
from pathlib import Path

import pydicom
import pydicom.data
import pydicom.filebase
import pydicom.filewriter
import pytest
import typer
from typer.testing import CliRunner

from dicomweb_archive import __version__
from dicomweb_archive.cli.main import PART10_APP, SEED_APPS, UPDATE_APP, app
from dicomweb_archive.cli.seed_options import TRANSCODE_TARGETS
from dicomweb_archive.dicom.recompression import LOSSLESS_TARGETS, TARGET_NAMES
from dicomweb_archive.ops.export import _umask
from dicomweb_archive.ops.transcode import TARGETS
from tests.factory import write_series

runner = CliRunner()
#: 64 characters, the longest a UID may be (PS3.5 9.1)
STUDY = "1.2.826.0.1.3680043.8.498.1" + "1" * 37
SERIES = "1.2.826.0.1.3680043.8.498.2" + "2" * 37


@pytest.fixture
def listed(tmp_path: Path, store: str) -> str:
    """A store with one study of one series of two instances, with 64-character UIDs."""
    write_series(tmp_path / "in", count=2, study=STUDY, series=SERIES, patient_id="S3CR3T")
    result = runner.invoke(SEED_APPS["mkdicomweb"], ["-o", store, str(tmp_path / "in")])
    assert result.exit_code == 0, result.output
    return store


def test_studies_json_and_csv(listed: str) -> None:
    """studies --json prints a JSON array and --csv a CSV table, without PHI."""
    result = runner.invoke(app, ["studies", "-o", listed, "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    (row,) = json.loads(result.stdout)
    assert row["StudyInstanceUID"] == STUDY and row["NumberOfStudyRelatedInstances"] == 2
    assert "S3CR3T" not in result.stdout
    result = runner.invoke(app, ["studies", "-o", listed, "--csv", "--show-phi"])
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert row["StudyInstanceUID"] == STUDY and row["PatientID"] == "S3CR3T"


def test_piped_tables_never_wrap_uids(listed: str) -> None:
    """Piped with a narrow COLUMNS, each listing's table still holds every UID on one line."""
    narrow = {"COLUMNS": "40"}
    for args, uid in (
        (["studies"], STUDY),
        (["series", STUDY], SERIES),
        (["list-instances", f"{STUDY}/{SERIES}"], SERIES),
    ):
        result = runner.invoke(app, [*args, "-o", listed], env=narrow)
        assert result.exit_code == 0, result.output
        assert uid in result.stdout, (args, result.stdout)


def test_series_and_instances_listings(listed: str) -> None:
    """series STUDY and list-instances STUDY/SERIES list what the index holds."""
    result = runner.invoke(app, ["series", STUDY, "-o", listed, "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["SeriesInstanceUID"] == SERIES and row["NumberOfSeriesRelatedInstances"] == 2
    result = runner.invoke(app, ["list-instances", f"{STUDY}/{SERIES}", "-o", listed, "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["InstanceNumber"] for r in rows] == ["1", "2"]


def test_listings_of_unknown_uids_are_errors(listed: str) -> None:
    """An unknown study or series is one error line and exit 1; a malformed path exit 2."""
    for args in (["series", "1.2.3"], ["list-instances", f"{STUDY}/1.2.3"]):
        result = runner.invoke(app, [*args, "-o", listed])
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert result.stderr.startswith("error: no ") and result.stderr.count("\n") == 1
    result = runner.invoke(app, ["list-instances", STUDY, "-o", listed])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


@pytest.mark.parametrize(
    ("application", "args", "said"),
    [
        (app, ["bogus"], "No such command 'bogus'"),
        (app, ["studies", "--bogus"], "No such option: --bogus"),
        (app, ["history"], "Missing argument"),
        (app, ["revert", "x", "--to", "y"], "'--to'"),
        (SEED_APPS["mkdicomweb"], ["--bogus"], "No such option: --bogus"),
        (PART10_APP, ["--bogus"], "No such option: --bogus"),
        (UPDATE_APP, ["--bogus"], "No such option: --bogus"),
    ],
    ids=["command", "option", "argument", "value", "mkdicomweb", "part10", "update"],
)
def test_usage_errors_are_one_line(application: object, args: list[str], said: str) -> None:
    """A usage error is one 'error:' line on stderr, exit code 2, nothing on stdout."""
    result = runner.invoke(application, args)  # type: ignore[arg-type]
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert said in result.stderr


def test_every_command_has_version() -> None:
    """-V and --version print the version on every subcommand and every seed command."""
    names = sorted(typer.main.get_group(app).commands)
    calls = [(app, [name]) for name in names]
    calls += [(seed, []) for seed in (*SEED_APPS.values(), PART10_APP, UPDATE_APP)]
    for application, args in calls:
        for flag in ("-V", "--version"):
            result = runner.invoke(application, [*args, flag])
            assert result.exit_code == 0, (args, flag, result.output)
            assert result.stdout == f"dicomweb-archive {__version__}\n", (args, flag)


def test_help_command() -> None:
    """dicomweb-archive help lists the commands; help COMMAND prints that command's help."""
    result = runner.invoke(app, ["help"])
    assert result.exit_code == 0
    assert "list-instances" in result.stdout and "Commands" in result.stdout
    result = runner.invoke(app, ["help", "history"])
    assert result.exit_code == 0
    assert "Usage: dicomweb-archive history" in result.stdout
    result = runner.invoke(app, ["help", "nope"])
    assert result.exit_code == 2
    assert result.stderr == "error: no command 'nope': dicomweb-archive help lists them\n"


def test_export_all(tmp_path: Path, store: str) -> None:
    """mkdicomwebpart10 --all exports every instance of every study."""
    write_series(tmp_path / "in" / "a", count=2, patient_id="P1")
    write_series(tmp_path / "in" / "b", count=1, patient_id="P2")
    assert (
        runner.invoke(SEED_APPS["mkdicomweb"], ["-o", store, str(tmp_path / "in")]).exit_code == 0
    )
    result = runner.invoke(PART10_APP, ["-o", store, "--all", "--zip", str(tmp_path / "all.zip")])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "3 instances exported (3 bytes)" in result.stdout
    assert len(zipfile.ZipFile(tmp_path / "all.zip").namelist()) == 3


def test_zip_export_has_the_umask_mode(listed: str, tmp_path: Path) -> None:
    """A zip export is written with the mode the umask gives (0644 under umask 022), not 0600."""
    result = runner.invoke(PART10_APP, ["-o", listed, "--all", "--zip", str(tmp_path / "a.zip")])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "a.zip").stat().st_mode) == 0o666 & ~_umask()


def test_summary_counts_refused_files_as_read(tmp_path: Path, store: str) -> None:
    """The ingest summary's 'MB read' counts the files refused as duplicates too."""
    files = write_series(tmp_path / "in", count=3, rows=512, columns=512)
    assert (
        runner.invoke(SEED_APPS["mkdicomweb"], ["-o", store, str(tmp_path / "in")]).exit_code == 0
    )
    (tmp_path / "again").mkdir()
    for path in files:  # the same SOP Instance UIDs, other bytes: refused without --replace
        ds = pydicom.dcmread(path)
        ds.StudyDescription = "other"
        ds.save_as(tmp_path / "again" / path.name)
    size = sum(p.stat().st_size for p in (tmp_path / "again").iterdir())
    result = runner.invoke(SEED_APPS["mkdicomweb"], ["-o", store, str(tmp_path / "again")])
    assert result.exit_code == 1
    assert result.stderr.count("error: ") == 3
    assert (
        f"0 instances stored, 0 studies built, {size / 1e6:.1f} MB read, 3 failed" in result.stdout
    )


def test_messages_use_singular_and_articles(listed: str) -> None:
    """Counts of one are singular ('1 study'), and 'an instance-level attribute'."""
    result = runner.invoke(app, ["reindex", "-o", listed])
    assert result.stdout == "index rebuilt: 1 study, 1 series, 2 instances\n"
    result = runner.invoke(app, ["edit", "-o", listed, "--study", STUDY, "InstanceNumber=3"])
    assert result.exit_code == 1
    assert "(0020,0013) InstanceNumber is an instance-level attribute" in result.stderr
    result = runner.invoke(app, ["edit", "-o", listed, "--series", SERIES, "Modality=MR"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("2 instances updated in 1 study (change ")


def test_export_and_verify_count_the_same_classes(listed: str, tmp_path: Path) -> None:
    """export and verify name the same equivalence classes with the same counts, and
    verify --against counts an edited instance as edited, not identical."""
    sops = json.loads(
        runner.invoke(app, ["list-instances", f"{STUDY}/{SERIES}", "-o", listed, "--json"]).stdout
    )
    sop = sops[0]["SOPInstanceUID"]
    edited = runner.invoke(app, ["edit", "-o", listed, "--instance", sop, "InstanceNumber=7"])
    assert edited.exit_code == 0, edited.output
    exported = runner.invoke(PART10_APP, ["-o", listed, "--all", "--out", str(tmp_path / "o")])
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.startswith("2 instances exported (1 bytes, 1 edited), ")
    verified = runner.invoke(app, ["verify", "-o", listed, "--against", str(tmp_path / "in")])
    assert verified.exit_code == 0, verified.output
    assert "no differences; 2 instances (1 bytes, 1 edited), " in verified.stdout
    assert "identical: 1, edited: 1, different: 0" in verified.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["edit", "--patient", "S3CR3T", "PatientName=NEW^NAME", "--dry-run"],
        ["update", "--patient", "S3CR3T", "PatientName=NEW^NAME", "--dry-run"],
        ["delete", "--patient", "S3CR3T", "--dry-run"],
        ["update", "--patient", "S3CR3T", "--delete", "--dry-run"],
        ["anonymize", "S3CR3T", "--dry-run"],
    ],
    ids=["edit", "update", "delete", "update-delete", "anonymize"],
)
def test_dry_run_prints_no_patient_data(listed: str, args: list[str], tmp_path: Path) -> None:
    """--dry-run prints a plan without the PatientID it targets or any value; --show-phi
    (where the command has it) shows them."""
    extra = ["--out", str(tmp_path / "deid")] if args[0] == "anonymize" else []
    result = runner.invoke(app, [*args, *extra, "-o", listed])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("plan: ")
    assert "S3CR3T" not in result.output and "DOE" not in result.output
    assert "NEW^NAME" not in result.output
    if args[0] != "anonymize":
        shown = runner.invoke(app, [*args, "--show-phi", "-o", listed])
        assert shown.exit_code == 0, shown.output
        assert "S3CR3T" in shown.stdout


def test_revert_of_a_change_with_dry_run_changes_nothing(listed: str) -> None:
    """revert CHANGE --dry-run lists what the change touched and writes nothing."""
    edited = runner.invoke(app, ["edit", "-o", listed, "--series", SERIES, "Modality=MR"])
    change = edited.stdout.split("(change ")[1].split(",")[0]
    before = runner.invoke(app, ["audit", "-o", listed]).stdout
    result = runner.invoke(app, ["revert", change, "--dry-run", "-o", listed])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"plan: revert change {change}: 2 instances in 1 study;")
    assert runner.invoke(app, ["audit", "-o", listed]).stdout == before


def test_revert_under_a_later_change_warns_and_keeps_it(listed: str) -> None:
    """revert CHANGE undoes the change on every instance it touched though a later change
    edited them again, warning once per instance for the attribute both changed; history
    starts at revision 0 and names the change that produced each revision."""
    first = runner.invoke(
        app, ["edit", "-o", listed, "--series", SERIES, "Modality=MR", "SeriesDescription=FIRST"]
    )
    change = first.stdout.split("(change ")[1].split(",")[0]
    second = runner.invoke(app, ["edit", "-o", listed, "--series", SERIES, "Modality=CT"])
    later = second.stdout.split("(change ")[1].split(",")[0]
    result = runner.invoke(app, ["revert", change, "-o", listed])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("2 instances reverted in 1 study (change ")
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2
    assert all(
        w.startswith("warning: SOPInstanceUID ")
        and w.endswith(
            f"(0008,0060) Modality was changed again by change {later}: "
            "its value from that change stays"
        )
        for w in warnings
    )
    listing = runner.invoke(app, ["series", STUDY, "-o", listed, "--json"])
    (row,) = json.loads(listing.stdout)
    assert (row["Modality"], row["SeriesDescription"]) == ("CT", "Generated series")
    sop = json.loads(
        runner.invoke(app, ["list-instances", f"{STUDY}/{SERIES}", "-o", listed, "--json"]).stdout
    )[0]["SOPInstanceUID"]
    lines = runner.invoke(app, ["history", sop, "-o", listed]).stdout.splitlines()
    assert lines[0] == "revision 0: as ingested"
    assert lines[1].startswith("revision 1: ") and f"(change {change})" in lines[1]
    assert lines[2].startswith("revision 2: ") and f"(change {later})" in lines[2]
    assert lines[3].startswith("revision 3: ") and " revert " in lines[3]


def test_history_and_audit_of_unknown_uids_are_errors(listed: str) -> None:
    """history and audit --sop of a UID the store never had are one error line, exit 1."""
    for args in (["history", "1.2.3.4"], ["audit", "--sop", "1.2.3.4"]):
        result = runner.invoke(app, [*args, "-o", listed])
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert result.stderr == (
            "error: SOPInstanceUID 1.2.3.4 is not in the store and has no history\n"
        )


def test_history_of_a_study_or_series_uid_says_what_it_is(listed: str) -> None:
    """history and audit --sop given a StudyInstanceUID or SeriesInstanceUID of the store: one
    line saying which it is, that history is per instance, and what lists the instances."""
    said = {
        STUDY: (
            f"error: {STUDY} is a StudyInstanceUID of this store, not a SOPInstanceUID: history "
            f"is kept per instance (dicomweb-archive series {STUDY} lists the study's series)\n"
        ),
        SERIES: (
            f"error: {SERIES} is a SeriesInstanceUID of this store, not a SOPInstanceUID: "
            f"history is kept per instance (dicomweb-archive list-instances {STUDY}/{SERIES} "
            "lists the series' instances)\n"
        ),
    }
    for uid_given, line in said.items():
        for args in (["history", uid_given], ["audit", "--sop", uid_given]):
            result = runner.invoke(app, [*args, "-o", listed])
            assert result.exit_code == 1, result.output
            assert result.stderr == line


def test_help_lists_the_transfer_syntaxes_the_code_accepts() -> None:
    """--transfer-syntax lists exactly export's transcode targets, -t and -T every target
    the recompression accepts, each by its full UID."""
    assert TRANSCODE_TARGETS == TARGETS
    uids = re.compile(r"1\.2\.840\.10008[.0-9]*[0-9]")
    export_help = _option_help(PART10_APP, "--transfer-syntax")
    assert set(uids.findall(export_help)) == TARGETS
    assert "until recompression lands" not in _option_help(PART10_APP, "--original-transfer-syntax")
    for option in ("--content-type", "--colour-content-type"):
        text = _option_help(SEED_APPS["mkdicomweb"], option)
        assert set(uids.findall(text)) >= LOSSLESS_TARGETS
        assert all(f"{name} (" in text for name in TARGET_NAMES if name != "jpeg")


def _option_help(application: typer.Typer, option: str) -> str:
    command = typer.main.get_command(application)
    (found,) = [p for p in command.params if option in getattr(p, "opts", ())]
    return str(getattr(found, "help", ""))


def test_pixel_identical_export_keeps_attributes_but_group_lengths(
    tmp_path: Path, store: str
) -> None:
    """A pixel-identical export (a JPEG 2000 original recompressed at ingest) has every
    attribute of the received file, except what docs/spec/recompression.md lists: the
    Transfer Syntax UID and File Meta group length (0002,0000) are the stored syntax's, and
    the retired data-set group lengths (gggg,0000) are left out."""
    source = Path(str(pydicom.data.get_testdata_file("MR_small_jp2klossless.dcm")))
    received = pydicom.dcmread(source)
    group8 = pydicom.Dataset()
    for element in received:
        if element.tag.group == 8:
            group8.add(element)
    encoded = pydicom.filebase.DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(encoded, group8)
    data = source.read_bytes()
    start = 132 + 12 + received.file_meta.FileMetaInformationGroupLength
    length = (0x00080000).to_bytes(4, "little")[2:] + b"\x00\x00UL\x04\x00"
    data = data[:start] + length + len(encoded.getvalue()).to_bytes(4, "little") + data[start:]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "mr.dcm").write_bytes(data)
    assert pydicom.dcmread(tmp_path / "in" / "mr.dcm")[0x00080000].value > 0
    ingest = runner.invoke(SEED_APPS["mkdicomweb"], ["-o", store, str(tmp_path / "in")])
    assert ingest.exit_code == 0, ingest.output
    result = runner.invoke(PART10_APP, ["-o", store, "--all", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "(1 pixels+attributes)" in result.stdout
    (path,) = (tmp_path / "o").rglob("*.dcm")
    exported, original = pydicom.dcmread(path), pydicom.dcmread(tmp_path / "in" / "mr.dcm")
    differ = {
        str(tag)
        for a, b in ((original.file_meta, exported.file_meta), (original, exported))
        for tag in set(a.keys()) | set(b.keys())
        if tag != 0x7FE00010 and (tag not in a or tag not in b or a[tag].value != b[tag].value)
    }
    # (0002,0000) follows the Transfer Syntax UID's length: here .4.90 and .4.80 are as long
    assert differ - {"(0002,0000)"} == {"(0002,0010)", "(0008,0000)"}
    assert 0x00080000 not in exported


def test_summary_counts_studies_a_change_built(tmp_path: Path, store: str) -> None:
    """-c and --replace runs say the study they rebuilt was built, and count a replacement
    once (as stored, 'of them replacing a stored one')."""
    files = write_series(tmp_path / "in", count=2)
    seed = SEED_APPS["mkdicomweb"]
    assert runner.invoke(seed, ["-o", store, str(tmp_path / "in")]).exit_code == 0
    clean = runner.invoke(seed, ["-o", store, "-c", str(tmp_path / "in")])
    assert clean.exit_code == 0, clean.output
    assert clean.stdout.startswith("2 instances stored, 1 study built, ")
    (tmp_path / "again").mkdir()
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyDescription = "other"
        ds.save_as(tmp_path / "again" / path.name)
    replace = runner.invoke(seed, ["-o", store, "--replace", str(tmp_path / "again")])
    assert replace.exit_code == 0, replace.output
    assert replace.stdout.startswith(
        "2 instances stored (2 of them replacing a stored one), 1 study built, "
    )

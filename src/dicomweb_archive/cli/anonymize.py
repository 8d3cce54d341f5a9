"""``dicomweb-archive anonymize``: PS3.15 E.1 de-identification into a new store, or in place
(also reached through ``mkdicomwebupdate -anonymize``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_USAGE,
    StoreOption,
    VerboseOption,
    count,
    error_line,
    handle_errors,
    note,
    open_store,
    say,
    store_path,
)
from dicomweb_archive.cli.targets import DryRun, Patient, Reason, Study, targets_of
from dicomweb_archive.errors import UsageError
from dicomweb_archive.model.deid import OPTIONS, read_patient_map

if TYPE_CHECKING:
    from dicomweb_archive.model.pixel_rules import PixelRules
    from dicomweb_archive.ops.anonymize import AnonymizeReport

AllStudies = Annotated[bool, typer.Option("--all", help="Every study of the store.")]
Out = Annotated[
    str | None,
    typer.Option("--out", help="The new store to write the de-identified copies into."),
]
InPlace = Annotated[
    bool,
    typer.Option(
        "--in-place",
        help="With --all: replace every instance by its de-identified copy, in one change "
        "(revertible; purge the change to remove the originals for good).",
    ),
]
Retain = Annotated[
    list[str] | None,
    typer.Option("--retain", help="Profile options (repeatable): " + ", ".join(OPTIONS) + "."),
]
KeyFile = Annotated[
    str | None,
    typer.Option(
        "--key-file",
        help="The secret that keys UID replacement and date shifts (default: one kept in "
        "the source store).",
    ),
]
PatientMap = Annotated[
    str | None,
    typer.Option(
        "--map",
        help="CSV file: original Patient ID, new Patient ID[, new Patient's Name] per line, "
        "used instead of keyed pseudonyms (a patient not in it is an error).",
    ),
]
CleanPixels = Annotated[
    str | None,
    typer.Option(
        "--clean-pixels",
        help="Rules file: per Modality | Manufacturer | Manufacturer's Model Name | Rows x "
        "Columns, rectangles x,y,width,height of the pixels to blank (see "
        "docs/spec/deidentification.md).",
    ),
]
Target = Annotated[
    str | None,
    typer.Argument(help="A StudyInstanceUID or a PatientID.", show_default=False),
]


def anonymize(  # noqa: PLR0917 - typer passes every option positionally
    target: Target = None,
    store: StoreOption = DEFAULT_STORE,
    patient: Patient = None,
    study: Study = None,
    all_studies: AllStudies = False,
    out: Out = None,
    in_place: InPlace = False,
    retain: Retain = None,
    key_file: KeyFile = None,
    patient_map: PatientMap = None,
    clean_pixels: CleanPixels = None,
    dry_run: DryRun = False,
    reason: Reason = "",
    verbose: VerboseOption = False,
) -> None:
    """De-identify (PS3.15 E.1) a study, a patient, or every study, into a new store or in
    place."""
    run_anonymize(
        store,
        targets_of(patient, study, None, None),
        [target] if target else [],
        all_studies=all_studies,
        out=out,
        in_place=in_place,
        retain=retain or [],
        key_file=key_file,
        patient_map=patient_map,
        clean_pixels=clean_pixels,
        dry_run=dry_run,
        reason=reason,
        verbose=verbose,
    )


def run_anonymize(
    store: Path,
    targets: dict[str, str],
    arguments: list[str],
    *,
    all_studies: bool,
    out: str | None,
    in_place: bool,
    retain: list[str],
    key_file: str | None,
    dry_run: bool,
    reason: str,
    verbose: bool,
    patient_map: str | None = None,
    clean_pixels: str | None = None,
) -> None:
    from dicomweb_archive.ops.anonymize import anonymize as anonymize_op  # noqa: PLC0415
    from dicomweb_archive.ops.anonymize import anonymize_in_place, anonymize_selection  # noqa: PLC0415

    if (out is None) == (not in_place) or (in_place and not all_studies):
        error_line("-anonymize needs --out DIR (a new store), or --all --in-place")
        raise typer.Exit(EXIT_USAGE)
    with handle_errors(verbose=verbose), open_store(store) as archive:
        selection = anonymize_selection(archive, targets, arguments, all_studies=all_studies)
        key = Path(key_file).read_bytes().strip() if key_file else None
        patients = _patients(patient_map)
        rules = _pixel_rules(clean_pixels)
        if in_place and not dry_run:
            report = anonymize_in_place(
                archive,
                options=frozenset(retain),
                key=key,
                patients=patients,
                pixel_rules=rules,
                reason=reason,
            )
        else:
            report = anonymize_op(
                archive,
                selection,
                out or f"{store_path(store)}.dry-run",
                options=frozenset(retain),
                key=key,
                patients=patients,
                pixel_rules=rules,
                dry_run=dry_run,
            )
    _render(report, out or store_path(store), dry_run=dry_run, in_place=in_place)


def _patients(path: str | None) -> dict[str, tuple[str, str]] | None:
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"{path}: the patient map cannot be read: {exc}") from exc
    return read_patient_map(text, name=path)


def _pixel_rules(path: str | None) -> PixelRules | None:
    if path is None:
        return None
    # parsed here only: mkdicomwebupdate, which imports this module, rarely anonymizes
    from dicomweb_archive.model.pixel_rules import read_pixel_rules  # noqa: PLC0415

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"{path}: the pixel cleaning rules cannot be read: {exc}") from exc
    return read_pixel_rules(text, name=path)


def _render(report: AnonymizeReport, target: str, *, dry_run: bool, in_place: bool) -> None:
    if dry_run:  # what the run would do: its failures too (it would exit 1)
        if report.unmapped:
            error_line(
                f"{count(len(report.unmapped), 'instance')} would fail: "
                "their Patient ID is not in the patient map (add their patients to the map)"
            )
        if in_place and report.unmapped:  # in place, one failure changes nothing
            say("plan: nothing would change (in place, any failure leaves the store as it is)")
            raise typer.Exit(1)
        say(
            f"plan: {count(len(report.planned), 'instance')} would be de-identified, "
            + (f"{len(report.unmapped)} would fail, " if report.unmapped else "")
            + f"{len(report.burned_in)} to review for burned-in annotation, "
            f"{count(len(report.cleaned), 'instance')} whose pixels a rule cleans; nothing written"
        )
        for sop in report.burned_in:
            say(f"  review: {sop}")
        if not report.ok:
            raise typer.Exit(1)
        return
    for result in report.results:
        if result.status == "failed":
            error_line(result.error or "failed")
    done = sum(r.status != "failed" for r in report.results)
    if in_place and not report.ok:
        failed = count(len(report.results) - done, "instance")
        say(f"nothing changed: {failed} cannot be de-identified")
        raise typer.Exit(1)
    # only instances written are counted, and reviewed (AnonymizeReport.keep_written)
    for sop in report.burned_in:
        note(f"warning: {sop}: {'; '.join(report.review.get(sop, []))}")
    say(
        f"{count(done, 'instance')} de-identified into {target}, "
        + (
            f"{count(report.linked, 'frame file')} shared by hard link, "
            if report.linked is not None
            else ""
        )
        + f"{len(report.burned_in)} to review for burned-in annotation, "
        f"{count(len(report.cleaned), 'instance')} with pixels cleaned, "
        f"{report.seconds:.2f} s"
    )
    if report.report_path:
        say(f"de-identification report: {report.report_path}")
    if in_place:
        say(
            f"change {report.change_id}: the originals are kept aside (revert undoes it); "
            f"dicomweb-archive purge {report.change_id} removes them for good"
        )
    if not report.ok:
        raise typer.Exit(1)

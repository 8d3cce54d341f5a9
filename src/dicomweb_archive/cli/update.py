"""``mkdicomwebupdate`` / ``dicomweb-archive update``, and ``history``, ``revert``, ``audit``.

The seed's single-dash forms (``-patient``, ``-study``, ``-series``, ``-instance``,
``-delete``) are accepted beside the double-dash ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    EXIT_OK,
    EXIT_USAGE,
    StoreOption,
    VerboseOption,
    error_line,
    handle_errors,
    stderr,
    stdout,
    store_path,
)
from dicomweb_archive.errors import StaleVersionError
from dicomweb_archive.model.deid import OPTIONS
from dicomweb_archive.ops.anonymize import anonymize as anonymize_op
from dicomweb_archive.ops.anonymize import anonymize_in_place, anonymize_selection
from dicomweb_archive.ops.batch import read_batch, run_batch
from dicomweb_archive.ops.delete import (
    apply_delete,
    apply_revert,
    plan_delete,
    plan_revert,
    restore,
)
from dicomweb_archive.ops.update import (
    UpdatePlan,
    apply_update,
    audit_log,
    guess_level,
    history,
    plan_update,
)
from dicomweb_archive.ops.update import update as update_op

SINGLE_DASH = {f"-{name}": f"--{name}" for name in ("patient", "study", "series", "instance")}
SINGLE_DASH["-delete"] = "--delete"
SINGLE_DASH["-anonymize"] = "--anonymize"

Target = Annotated[str | None, typer.Option(show_default=False)]


def normalise_argv(argv: list[str]) -> list[str]:
    """The seed's single-dash long options as typer's double-dash ones."""
    return [SINGLE_DASH.get(arg, arg) for arg in argv]


def update(  # noqa: PLR0917 - typer passes every option positionally
    edits: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[TAG=VALUE | TAG= | -TAG]...",
            help="Edits: keyword, (gggg,eeee) or ggggeeee; Seq[0].Keyword for nested; "
            "'TAG=' empties, '-TAG' removes.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    patient: Annotated[
        str | None, typer.Option("--patient", help="Every study of this PatientID.")
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="A StudyInstanceUID.")] = None,
    series: Annotated[str | None, typer.Option("--series", help="A SeriesInstanceUID.")] = None,
    instance: Annotated[str | None, typer.Option("--instance", help="A SOPInstanceUID.")] = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete the target instead of editing it.")
    ] = False,
    batch_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Apply the edits of a .csv (level,target,edit[,reason]) or .jsonl file; the "
            "whole batch is one change unless --continue-on-error.",
        ),
    ] = None,
    continue_on_error: Annotated[
        bool,
        typer.Option("--continue-on-error", help="With --file: each line is its own change."),
    ] = False,
    original_attributes: Annotated[
        bool,
        typer.Option(
            "--original-attributes",
            help="Also keep the previous values inside each instance, in an Original "
            "Attributes Sequence (0400,0561) item (reason CORRECT).",
        ),
    ] = False,
    reject: Annotated[
        str | None,
        typer.Option(
            "--reject",
            help="With -delete: move aside instead, restorable, with an IOCM reason code: "
            "113001 quality, 113037 patient safety, 113038 incorrect worklist entry, 113039 "
            "retention expired.",
        ),
    ] = None,
    anonymize: Annotated[
        bool,
        typer.Option(
            "--anonymize",
            help="De-identify (PS3.15 E.1) the target (a StudyInstanceUID, a PatientID, or "
            "--all) into the new store --out.",
        ),
    ] = False,
    all_studies: Annotated[
        bool, typer.Option("--all", help="With --anonymize: every study of the store.")
    ] = False,
    out: Annotated[
        str | None, typer.Option("--out", help="With --anonymize: the new store's directory.")
    ] = None,
    in_place: Annotated[
        bool,
        typer.Option(
            "--in-place",
            help="With --anonymize --all: replace the store by its de-identified copy "
            "(history and audit log go too).",
        ),
    ] = False,
    retain: Annotated[
        list[str] | None,
        typer.Option(
            "--retain",
            help="With --anonymize, profile options (repeatable): " + ", ".join(OPTIONS) + ".",
        ),
    ] = None,
    key_file: Annotated[
        str | None,
        typer.Option(
            "--key-file",
            help="With --anonymize: the secret that keys UID replacement and date shifts "
            "(default: one kept in the source store).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (old -> new values); change nothing.")
    ] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why: recorded in the history and the audit log.")
    ] = "",
    verbose: VerboseOption = False,
) -> None:
    """Edit metadata at patient, study, series or instance level, or delete (frames untouched)."""
    targets = {
        level: value
        for level, value in (
            ("patient", patient),
            ("study", study),
            ("series", series),
            ("instance", instance),
        )
        if value is not None
    }
    edits = edits or []
    if batch_file is not None:
        _batch(
            store,
            batch_file,
            continue_on_error=continue_on_error,
            dry_run=dry_run,
            verbose=verbose,
        )
        return
    if anonymize:
        _anonymize(
            store,
            targets,
            edits,
            all_studies=all_studies,
            out=out,
            in_place=in_place,
            retain=retain or [],
            key_file=key_file,
            dry_run=dry_run,
            verbose=verbose,
        )
        return
    if delete and not targets and len(edits) == 1:
        targets = {guess_level(store_path(store), edits[0]): edits[0]}
        edits = []
    if len(targets) != 1:
        error_line("name one target: -patient ID, -study UID, -series UID or -instance UID")
        raise typer.Exit(EXIT_USAGE)
    ((level, identifier),) = targets.items()
    if delete and edits:
        error_line("-delete takes no edits")
        raise typer.Exit(EXIT_USAGE)
    if reject is not None and not delete:
        error_line("--reject goes with -delete")
        raise typer.Exit(EXIT_USAGE)
    if not delete and not edits:
        error_line("give at least one edit (TAG=VALUE, TAG= or -TAG)")
        raise typer.Exit(EXIT_USAGE)
    root = store_path(store)
    with handle_errors(verbose=verbose):
        if delete:
            plan = plan_delete(root, level, identifier)
        else:
            plan = plan_update(root, level, identifier, edits, record_original=original_attributes)
        if dry_run:
            _print_plan(plan)
            raise typer.Exit(EXIT_OK)
        if delete:
            report = apply_delete(root, plan, reason=reason, reject=reject)
        else:
            try:
                report = apply_update(root, plan, reason=reason)
            except StaleVersionError:  # another update came first: plan again on its result
                report = update_op(
                    root,
                    level,
                    identifier,
                    edits,
                    reason=reason,
                    record_original=original_attributes,
                )
        plan = report.plan
    verb = ("rejected" if reject else "deleted") if delete else "updated"
    stdout.print(
        f"{len(plan.instances)} instances {verb} in {len(plan.studies)} studies "
        f"(change {report.change_id}, {report.seconds:.2f} s)",
        markup=False,
        soft_wrap=True,
    )


def _batch(
    store: Path, path: Path, *, continue_on_error: bool, dry_run: bool, verbose: bool
) -> None:
    with handle_errors(verbose=verbose):
        lines = read_batch(path)
        results = run_batch(
            store_path(store),
            lines,
            continue_on_error=continue_on_error,
            dry_run=dry_run,
            name=path.name,
        )
    for result in results:
        where = f"{path.name}:{result.line.number}"
        if result.error is None:
            stdout.print(f"{where}: ok, {result.instances} instances", markup=False)
        else:
            error_line(f"{where}: {result.error}")
    failed = sum(result.error is not None for result in results)
    verb = "checked (--dry-run: nothing written)" if dry_run else "applied"
    stdout.print(f"{len(results) - failed} lines {verb}, {failed} failed", markup=False)
    if failed:
        raise typer.Exit(1)


def _anonymize(
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
    verbose: bool,
) -> None:
    if (out is None) == (not in_place) or (in_place and not all_studies):
        error_line("-anonymize needs --out DIR (a new store), or --all --in-place")
        raise typer.Exit(EXIT_USAGE)
    root = store_path(store)
    with handle_errors(verbose=verbose):
        selection = anonymize_selection(root, targets, arguments, all_studies=all_studies)
        key = Path(key_file).read_bytes().strip() if key_file else None
        if in_place and not dry_run:
            report = anonymize_in_place(root, options=frozenset(retain), key=key)
        else:
            target = Path(out).expanduser() if out else root.with_name(f".{root.name}.dry")
            report = anonymize_op(
                root, selection, target, options=frozenset(retain), key=key, dry_run=dry_run
            )
    if dry_run:
        stdout.print(
            f"plan: {len(report.planned)} instances would be de-identified, "
            f"{len(report.burned_in)} to review for burned-in annotation; nothing written",
            markup=False,
        )
        for sop in report.burned_in:
            stdout.print(f"  review: {sop}", markup=False)
        return
    for result in report.results:
        if result.status == "failed":
            error_line(result.error or "failed")
    for sop in report.burned_in:
        stderr.print(
            f"warning: {sop}: Burned In Annotation is not NO: check the pixels",
            markup=False,
            soft_wrap=True,
        )
    stdout.print(
        f"{sum(r.status != 'failed' for r in report.results)} instances de-identified into "
        f"{out or store}, {report.linked} frame files shared by hard link, "
        f"{len(report.burned_in)} to review for burned-in annotation, {report.seconds:.2f} s",
        markup=False,
        soft_wrap=True,
    )
    if not report.ok:
        raise typer.Exit(1)


def _print_plan(plan: UpdatePlan) -> None:
    stdout.print(
        f"plan: {plan.operation} {plan.level} {plan.target}: {len(plan.instances)} instances "
        f"in {len(plan.studies)} studies; nothing written (--dry-run)",
        markup=False,
        soft_wrap=True,
    )
    for change in plan.instances:
        where = f"{change.key.study}/{change.key.series}/{change.key.sop}"
        if plan.operation == "delete":
            stdout.print(f"  remove {where}", markup=False, soft_wrap=True)
            continue
        stdout.print(f"  {where} -> revision {change.revision}", markup=False, soft_wrap=True)
        for attribute, old, new in change.changes:
            stdout.print(
                f"    {attribute}: {_show(old)} -> {_show(new)}", markup=False, soft_wrap=True
            )


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    values = value.get("Value")
    if values is None:
        return "(empty)"
    return "\\".join(v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in values)


def history_command(
    sop: Annotated[str, typer.Argument(help="A SOPInstanceUID.", show_default=False)],
    store: StoreOption = DEFAULT_STORE,
    verbose: VerboseOption = False,
) -> None:
    """List an instance's earlier revisions: when, who, what changed."""
    with handle_errors(verbose=verbose):
        entries = history(store_path(store), sop)
    if not entries:
        stdout.print(f"{sop}: no earlier revision", markup=False)
    for entry in entries:
        changed = ", ".join(c["attribute"] for c in entry["changes"])
        stdout.print(
            f"revision {entry['revision']}: {entry['time']} {entry['user']} "
            f"{entry['operation']} -> {changed}"
            + (f" ({entry['reason']})" if entry["reason"] else ""),
            markup=False,
            soft_wrap=True,
        )


def revert_command(
    sop: Annotated[str, typer.Argument(help="A SOPInstanceUID.", show_default=False)],
    to: Annotated[int, typer.Option("--to", help="The revision to restore.", min=0)],
    store: StoreOption = DEFAULT_STORE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Restore an instance's metadata as it was at an earlier revision (a new revision)."""
    with handle_errors(verbose=verbose):
        plan = plan_revert(store_path(store), sop, to)
        if dry_run:
            _print_plan(plan)
            raise typer.Exit(EXIT_OK)
        report = apply_revert(store_path(store), plan)
    stdout.print(f"{sop} reverted to revision {to} (change {report.change_id})", markup=False)


def restore_command(
    change: Annotated[
        str, typer.Argument(help="The change id of a rejection (see audit).", show_default=False)
    ],
    store: StoreOption = DEFAULT_STORE,
    verbose: VerboseOption = False,
) -> None:
    """Bring back the instances a rejection (-delete --reject) moved aside."""
    with handle_errors(verbose=verbose):
        report = restore(store_path(store), change)
    stdout.print(
        f"{len(report.plan.instances)} instances restored (change {report.change_id})",
        markup=False,
    )


def audit_command(
    store: StoreOption = DEFAULT_STORE,
    sop: Annotated[
        str | None, typer.Option("--sop", help="Only the records of this SOPInstanceUID.")
    ] = None,
) -> None:
    """Print the append-only audit log (every change, with before/after hashes) as JSON lines."""
    for row in audit_log(store_path(store), sop):
        sys.stdout.write(json.dumps(row, sort_keys=True) + "\n")

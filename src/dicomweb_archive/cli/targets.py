"""What the update commands share: the target options, plans and reports as text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from dicomweb_archive.cli.common import EXIT_USAGE, count, error_line, say

if TYPE_CHECKING:
    from dicomweb_archive.ops.update import UpdatePlan, UpdateReport

Patient = Annotated[str | None, typer.Option("--patient", help="Every study of this PatientID.")]
Study = Annotated[str | None, typer.Option("--study", help="A StudyInstanceUID.")]
Series = Annotated[str | None, typer.Option("--series", help="A SeriesInstanceUID.")]
Instance = Annotated[str | None, typer.Option("--instance", help="A SOPInstanceUID.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
ShowPhi = Annotated[
    bool,
    typer.Option(
        "--show-phi",
        help="With --dry-run: show the patient data the plan names (a PatientID target, the "
        "old and new values).",
    ),
]
Reason = Annotated[
    str, typer.Option("--reason", help="Why: recorded in the history and the audit log.")
]


def targets_of(
    patient: str | None, study: str | None, series: str | None, instance: str | None
) -> dict[str, str]:
    return {
        level: value
        for level, value in (
            ("patient", patient),
            ("study", study),
            ("series", series),
            ("instance", instance),
        )
        if value is not None
    }


def one_target(targets: dict[str, str]) -> tuple[str, str]:
    if len(targets) != 1:
        error_line("name one target: -patient ID, -study UID, -series UID or -instance UID")
        raise typer.Exit(EXIT_USAGE)
    ((level, identifier),) = targets.items()
    return level, identifier


def print_plan(plan: UpdatePlan, *, show_phi: bool) -> None:
    """The plan of a --dry-run; no patient data (a PatientID target, old and new values)
    unless ``show_phi`` (``docs/spec/exit-codes.md``)."""
    target = plan.target
    if plan.level == "patient" and not show_phi:
        target = "(PatientID not shown: --show-phi shows it)"
    say(
        f"plan: {plan.operation} {plan.level} {target}: {count(plan.size, 'instance')} "
        f"in {count(len(plan.studies), 'study', 'studies')}; nothing written (--dry-run)"
    )
    for change in plan.instances:
        where = f"{change.key.study}/{change.key.series}/{change.key.sop}"
        if plan.operation == "delete":
            say(f"  remove {where}")
            continue
        say(f"  {where} -> revision {change.revision}")
        for attribute, old, new in change.changes:
            values = f"{_show(old)} -> {_show(new)}" if show_phi else "changed"
            say(f"    {attribute}: {values}")
    if not show_phi and any(change.changes for change in plan.instances):
        say("  (values are not shown: --show-phi shows them)")


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    values = value.get("Value")
    if values is None:
        return "(empty)"
    return "\\".join(v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in values)


def print_done(report: UpdateReport, verb: str) -> None:
    plan = report.plan
    say(
        f"{count(plan.size, 'instance')} {verb} in {count(len(plan.studies), 'study', 'studies')} "
        f"(change {report.change_id}, {report.seconds:.2f} s)"
    )

"""Batch updates (``mkdicomwebupdate --file edits.csv|edits.jsonl``).

Lines:

- JSON lines: ``{"level": "patient", "target": "PAT001", "edits": ["PatientName=DOE^JANE"],
  "reason": "..."}`` (``reason`` optional);
- CSV with a header row ``level,target,edit[,reason]``: one edit per row.

By default the whole batch is one change: every line is planned (each on top of the lines
before it) and checked, and only if all succeed is everything committed, in one journal; an
instance touched by several lines gets one new revision with all their changes. With
``continue_on_error`` each line is its own change and a failing line does not stop the others.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import ArchiveError, UsageError
from dicomweb_archive.ops.ingest_batch import stop_reason
from dicomweb_archive.ops.update import (
    InstanceChange,
    UpdatePlan,
    apply_update,
    plan_update,
    update,
)


@dataclass(frozen=True, slots=True)
class BatchLine:
    number: int
    level: str
    target: str
    edits: tuple[str, ...]
    reason: str = ""


#: the columns every CSV batch names in its header row (``reason`` may follow)
COLUMNS = {"level", "target", "edit"}


@dataclass(slots=True)
class LineResult:
    line: BatchLine
    instances: int = 0
    error: str | None = None


def parse_batch(text: str, path: Path) -> list[BatchLine]:
    """The lines of a CSV or JSON-lines batch, the text of the file ``path`` (its extension
    says which; the caller reads it: an input the user names, not store data)."""
    lines: list[BatchLine] = []
    if path.suffix.lower() == ".csv":
        rows = csv.DictReader(io.StringIO(text))
        if rows.fieldnames is not None and not COLUMNS.issubset(rows.fieldnames):
            raise UsageError(
                f"{path}:1: the header row is missing or wrong: the first line must name the "
                "columns level,target,edit[,reason]"
            )
        for number, row in enumerate(rows, start=2):
            try:
                lines.append(
                    BatchLine(
                        number,
                        row["level"].strip(),
                        row["target"].strip(),
                        (row["edit"],),
                        (row.get("reason") or "").strip(),
                    )
                )
            except (KeyError, AttributeError) as exc:
                raise UsageError(
                    f"{path}:{number}: columns are level,target,edit[,reason]"
                ) from exc
        return lines
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            lines.append(
                BatchLine(
                    number,
                    str(item["level"]),
                    str(item["target"]),
                    tuple(str(e) for e in item["edits"]),
                    str(item.get("reason", "")),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f'{path}:{number}: expected {{"level", "target", "edits": [...]}}'
            ) from exc
    return lines


def run_batch(
    archive: Archive,
    lines: list[BatchLine],
    *,
    continue_on_error: bool = False,
    dry_run: bool = False,
    name: str = "batch",
) -> list[LineResult]:
    """Apply a batch; returns one result per line (nothing applied if one fails, by default).

    With ``dry_run`` every line is planned and checked as in one change, and nothing written.
    """
    results = [LineResult(line) for line in lines]
    if continue_on_error and not dry_run:
        stopped: str | None = None  # the store cannot take more now: the rest is not tried
        for result in results:
            if stopped is not None:
                result.error = f"not applied: {stopped}"
                continue
            try:
                report = update(
                    archive,
                    result.line.level,
                    result.line.target,
                    list(result.line.edits),
                    reason=result.line.reason,
                )
                result.instances = report.plan.size
            except ArchiveError as exc:
                result.error = str(exc)
                stopped = stop_reason(exc)
        return results
    planned: dict[str, InstanceChange] = {}
    combined = UpdatePlan("edit", "batch", name, [e for line in lines for e in line.edits])
    for result in results:
        try:
            plan = plan_update(
                archive,
                result.line.level,
                result.line.target,
                list(result.line.edits),
                base=planned,
                change_id=combined.change_id,
            )
        except ArchiveError as exc:
            result.error = str(exc)
            for other in results:
                if other is not result and other.error is None:
                    other.error = "not applied: another line of the batch failed"
            return results
        result.instances = plan.size
        for change in plan.instances:
            planned[change.key.sop] = change
        if combined.generation < 0:
            combined.generation = plan.generation
        combined.views.update(plan.views)
    if dry_run:
        return results
    combined.instances = list(planned.values())
    reasons = "; ".join(sorted({line.reason for line in lines if line.reason}))
    apply_update(archive, combined, reason=reasons)
    return results

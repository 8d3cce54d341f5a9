"""The instances stage and the whole pipeline (the seed's ``mkdicomweb``).

Stage 1 (``mkdicomwebinstances``, ``mkdicomwebdeduplicated``) reads P10 files through
:func:`dicomweb_archive.dicom.parts.generate_parts` and writes, per instance: frames and bulk
data, the deduplicated per-instance record (``-d``), the instance's ``metadata.gz`` (``-i``),
and its ``info.json.gz`` last, which commits it (``store/instance.py``); it notifies the group
and study stages before writing anything of a study. A different file with a stored SOP
Instance UID is refused, or with ``--replace`` replaces it in a ``replace`` change (the old
instance set aside, revertible); with ``-c`` the whole run is one ``clean`` change (the studies
the input touches set aside, the new instances written: a killed run changes nothing).
:func:`ingest` runs stage 1, then per options the group and study stages (pipeline.md).
The file-by-file work is ``ops/ingest_batch.py``'s; with ``workers``, new instances are written
by Dask workers (``ops/distributed.py``).

Bad input never raises: each file gets a :class:`FileResult`, the batch goes on; a full store
stops it (every later file would fail too; the rest is reported as not read).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from dicomweb_archive.archive import Archive
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import (
    StoreFullError,
)
from dicomweb_archive.ops import stages
from dicomweb_archive.ops.distributed import DaskBatch, Workers, check_reachable
from dicomweb_archive.ops.ingest_batch import STORE_FULL, Batch
from dicomweb_archive.ops.ingest_types import (
    FileResult,
    IngestReport,
    PipelineOptions,
    ProgressHook,
    iter_input_files,
)
from dicomweb_archive.ops.stages import StageReport
from dicomweb_archive.store import notify
from dicomweb_archive.store.changes import ChangeSet


def ingest(
    archive: Archive,
    inputs: Iterable[str | os.PathLike[str]],
    *,
    options: PipelineOptions | None = None,
    replace: bool | None = None,
    progress: ProgressHook | None = None,
    keep_results: bool = True,
    workers: Workers | None = None,
) -> IngestReport:
    """Run the pipeline (``mkdicomweb``): stage 1, then group and study stages per options.

    ``replace`` overrides the field of ``options``; ``keep_results``: see ``IngestReport``;
    ``workers``: see :func:`write_instances`.
    """
    options = options or PipelineOptions()
    if replace is not None:
        options = replace_options(options, replace=replace)
    return write_instances(
        archive,
        inputs,
        options=options,
        progress=progress,
        run_stages=True,
        keep_results=keep_results,
        workers=workers,
    )


replace_options = replace


def _excluded(archive: Archive) -> Path | None:
    root = getattr(archive.storage, "root", None)
    return root if isinstance(root, Path) else None


def write_instances(
    archive: Archive,
    inputs: Iterable[str | os.PathLike[str]],
    *,
    options: PipelineOptions,
    progress: ProgressHook | None = None,
    run_stages: bool = False,
    keep_results: bool = True,
    workers: Workers | None = None,
) -> IngestReport:
    """Stage 1 on files and directories; with ``run_stages`` also the later stages.
    ``keep_results`` off: the report keeps only the results of files that failed or have
    warnings (memory does not grow with the number of files; see ``IngestReport``).
    With ``workers``, new instances are written by Dask workers (``ops/distributed.py``;
    a ``-c`` run is written here all the same: one change, one writer).

    Raises:
        WorkersError: ``workers`` are given for a store in this process's memory.
    """
    if workers is not None:
        check_reachable(archive)
    started = time.perf_counter()
    report = IngestReport(keep_results=keep_results)
    with archive.writing("ingest"):
        batch = (
            DaskBatch(archive, options, report, progress, workers=workers)
            if workers is not None and not options.clean
            else Batch(archive, options, report, progress)
        )
        paths = iter_input_files(
            (Path(i) for i in inputs),
            exclude=_excluded(archive),
            follow_dicomdir=options.follow_dicomdir,
        )
        try:
            for path in paths:
                if batch.stopped is not None:
                    report.not_read += 1
                    continue
                batch.add(path)
                batch.drain(batch.in_flight_limit)
        finally:
            batch.close()
        report.studies, report.stopped = batch.touched, batch.stopped
        _later_stages(archive, options, report, batch, run_stages=run_stages)
    report.seconds = time.perf_counter() - started
    return report


def write_stream(
    archive: Archive,
    stream: BinaryIO,
    *,
    options: PipelineOptions | None = None,
    name: str = "<stream>",
) -> FileResult:
    """Stage 1 on one P10 byte stream (a pipe will do), then the later stages per options."""
    return write_streams(archive, [(name, stream)], options=options).results[0]


def write_streams(
    archive: Archive,
    streams: Iterable[tuple[str, BinaryIO]],
    *,
    options: PipelineOptions | None = None,
    recompression_for: Callable[[str], Recompression | None] | None = None,
    change: ChangeSet | None = None,
) -> IngestReport:
    """Stage 1 on several named P10 streams, then the later stages once (like a file batch).

    ``recompression_for`` chooses the recompression of each stream by its name (instead of
    ``options.recompression``). A stream whose reading raises is reported and skipped. With
    ``change``, every instance is written into that change (it appears when the change is
    committed, by its caller, who also runs the stages in it).
    """
    options = options or PipelineOptions()
    report = IngestReport()
    started = time.perf_counter()
    with archive.writing("ingest"):
        batch = Batch(archive, options, report, change=change)
        try:
            for name, stream in streams:
                result = FileResult(Path(name), "failed")
                report.results.append(result)
                if batch.stopped is not None:
                    result.error = f"{name}: not read: {batch.stopped}"
                    continue
                if recompression_for is not None:
                    batch.recompression = recompression_for(name)
                finish = batch.begin(stream, result, file_sha256=None)
                if finish is not None:
                    finish()
        finally:
            batch.close()
        report.studies, report.stopped = batch.touched, batch.stopped
        _later_stages(archive, options, report, batch, run_stages=change is None)
    report.seconds = time.perf_counter() - started
    return report


def _later_stages(
    archive: Archive,
    options: PipelineOptions,
    report: IngestReport,
    batch: Batch,
    *,
    run_stages: bool,
) -> None:
    """Group and study stages on every notified study: those this run touched, and any an
    interrupted run left; then what is still pending, and which touched studies hold no
    instance (every file of them failed). Not after the index or the storage stopped
    answering: the stages would fail as the batch did; the next run does them."""
    if batch.stopped not in (None, STORE_FULL):
        return
    if run_stages and (options.group or options.study):
        try:
            report.stages = stages.run_stages(
                archive,
                None,
                group=options.group,
                study=options.study,
                remove_instance_files=options.remove_deduplicated_instances,
            )
        except StoreFullError as exc:
            report.stages = StageReport(failures={"(stages)": str(exc)})
    storage = archive.storage
    report.pending = sorted({s for stage in notify.STAGES for s in notify.pending(storage, stage)})
    unwritten = batch.touched - batch.written
    report.empty_studies = {s for s in unwritten if not archive.index.locate("study", s)}

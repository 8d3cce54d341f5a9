"""The seed's pipeline: stages run separately, in any batches, give the one-run store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from dicomweb_archive import (
    Archive,
    PipelineOptions,
    build_studies,
    group_studies,
    reconstruct_p10,
    write_instances,
)
from dicomweb_archive.model.dedup import combine, split
from dicomweb_archive.store.dedup import read_study_records
from dicomweb_archive.store.instance import (
    InstanceKey,
    read_info,
    read_instance_metadata,
    study_uids,
)
from dicomweb_archive.store.keys import NOTIFICATIONS, StoreKeys
from dicomweb_archive.store.local import CRASH_AFTER_ENV
from tests import stores
from tests.factory import uid, write_ct, write_series
from tests.stores import index_dump, ingested, keys_under, read_json, tree_hashes

STAGE1 = PipelineOptions()  # mkdicomwebdeduplicated: stage 1 only when run_stages is False
KEYS = StoreKeys()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A small mixed corpus: 3 generated studies and two pydicom files."""
    root = tmp_path_factory.mktemp("corpus")
    files = [
        *write_series(root / "a", count=3, patient_id="P1"),
        *write_series(root / "b", count=2, patient_id="P1"),
        write_ct(root / "c.dcm", study=uid(50), series=uid(51), sop=uid(52), frames=3),
    ]
    for name in ("CT_small.dcm", "MR_small.dcm"):
        source = get_testdata_file(name, download=False)
        assert isinstance(source, str)
        files.append(Path(shutil.copy(source, root / name)))
    return sorted(files)


@pytest.fixture(scope="module")
def reference(corpus: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = stores.location(tmp_path_factory.mktemp("reference"))
    assert ingested(store, corpus).ok
    yield store
    stores.forget(store)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_stages_in_any_split_equal_one_run(
    data: st.DataObject,
    corpus: list[Path],
    reference: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Stage 1 in random batches, group and study stages at random moments: same store."""
    order = data.draw(st.permutations(corpus))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1), max_size=3)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    store = stores.location(tmp_path_factory.mktemp("split"))
    try:
        with Archive.open_or_create(store) as archive:
            for batch in batches:
                assert write_instances(archive, batch, options=STAGE1).ok
                if data.draw(st.booleans()):
                    group_studies(archive)
                if data.draw(st.booleans()):
                    build_studies(archive)
            group_studies(archive)
            build_studies(archive)
        assert tree_hashes(store) == tree_hashes(reference)
        assert index_dump(store) == index_dump(reference)
        assert not keys_under(store, NOTIFICATIONS)
    finally:
        stores.forget(store)


def test_dedup_is_lossless(corpus: list[Path], reference: str) -> None:
    """Recombining extracts and remainder gives each instance's metadata and info exactly."""
    checked = 0
    with Archive.open(reference) as archive:
        storage, keys = archive.storage, archive.keys
        for study in study_uids(storage):
            records = read_study_records(storage, keys, study)
            for sop in records.records:
                metadata, info = records.instance(sop)
                key = InstanceKey(study, info.series_instance_uid, sop)
                assert info == read_info(storage, keys, key)
                assert metadata == info.metadata  # as received: no edit here
                assert metadata == read_instance_metadata(storage, keys, key)
                extracts, remainder = split(metadata)
                assert combine(list(extracts.values()), remainder) == metadata
                checked += 1
    assert checked == len(corpus)


def test_clean_touches_only_named_studies(tmp_path: Path, store: str) -> None:
    """-c rebuilds the studies the input touches from that input alone; others stay as were."""
    a = write_series(tmp_path / "a", count=3, patient_id="P1")
    b = write_series(tmp_path / "b", count=2, patient_id="P2")
    ingested(store, [*a, *b])
    before = tree_hashes(store)
    report = ingested(store, [a[0]], options=PipelineOptions(clean=True))
    assert report.ok and report.instances == 1
    after = tree_hashes(store)
    study_a = report.results[0].key.study if report.results[0].key else ""
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert changed and all(study_a in p or p.startswith("studies/index") for p in changed)
    assert read_json(store, KEYS.study_index(study_a))[0]["00201208"]["Value"] == [1]
    # a clean keeps what it removes aside: a revertible change of kind "clean"
    with Archive.open(store) as archive:
        assert {row["operation"] for row in archive.index.audit()} == {"clean"}


def test_remove_deduplicated_instances_keeps_everything(tmp_path: Path, store: str) -> None:
    """-C removes per-instance files after grouping; every instance still rebuilds exactly."""
    files = write_series(tmp_path / "in", count=4)
    options = PipelineOptions(remove_deduplicated_instances=True)
    assert ingested(store, files, options=options).ok
    assert not keys_under(store, KEYS.path_instances + "/")
    more = write_series(tmp_path / "in", count=6, prefix="ZZ")[4:]
    assert ingested(store, more, options=options).ok
    with Archive.open(store) as archive:
        for path in [*files, *more]:
            sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert reconstruct_p10(archive, sop) == path.read_bytes()
        study = archive.storage.children(KEYS.path_deduplicated + "/")[0].rstrip("/")
    group = read_json(store, KEYS.group_index(study))
    assert len(group["groups"]) == 1


def test_group_file_smaller_than_instance_files(tmp_path: Path, store: str) -> None:
    """A 200-instance series: the group file is much smaller than its per-instance files."""
    files = write_series(tmp_path / "in", count=200, rows=8, columns=8)
    ingested(store, files, options=PipelineOptions(deduplicate=True))
    with Archive.open(store) as archive:
        storage = archive.storage
        per_instance = sum(
            info.size
            for info in storage.list_prefix(KEYS.path_instances + "/")
            if info.key.endswith(".gz")
        )
        groups = [
            info
            for info in storage.list_prefix(KEYS.path_deduplicated + "/")
            if info.key.endswith(".gz") and not info.key.endswith("/index.json.gz")
        ]
    assert len(groups) == 1
    assert groups[0].size < 0.5 * per_instance


SCRIPT = """
import sys
from dicomweb_archive import (
    Archive, PipelineOptions, build_studies, group_studies, write_instances
)
stage, inputs, store = sys.argv[1:4]
if stage == "instances":
    with Archive.open_or_create(store) as archive:
        write_instances(archive, [inputs], options=PipelineOptions())
elif stage == "group":
    with Archive.open(store) as archive:
        group_studies(archive)
else:
    with Archive.open(store) as archive:
        build_studies(archive)
"""


def _stage(stage: str, inputs: Path, store: str, crash_after: int | None) -> int:
    env = dict(os.environ)
    if crash_after is not None:
        env[CRASH_AFTER_ENV] = str(crash_after)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, stage, str(inputs), store], env=env, check=False
    ).returncode


@pytest.mark.shared
@pytest.mark.parametrize("stage", ["instances", "group", "study"])
def test_stage_killed_then_rerun(
    stage: str, tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    """A stage killed after its k-th write, then re-run, completes the store (several k)."""
    inputs = tmp_path / "in"
    write_series(inputs / "a", count=2, patient_id="P1")
    write_ct(inputs / "b.dcm", study=uid(5), series=uid(6), sop=uid(7), frames=2)
    reference = new_store("reference")
    assert ingested(reference, [inputs]).ok
    for k in (1, 2, 3, 5, 8):
        store = new_store(f"store{k}")
        for earlier in ("instances", "group", "study"):
            if earlier == stage:
                break
            assert _stage(earlier, inputs, store, None) == 0
        code = _stage(stage, inputs, store, k)
        for later in ("instances", "group", "study"):
            assert _stage(later, inputs, store, None) == 0
        if code == 0:
            break
        assert code == 137
        assert tree_hashes(store) == tree_hashes(reference), f"{stage} killed at write {k}"
        assert index_dump(store) == index_dump(reference)


def test_report_without_results_counts_the_same(tmp_path: Path, store: str) -> None:
    """The commands ingest with ``keep_results=False`` (memory that does not grow with the
    number of files): the report keeps only failed files and counts the rest, and every
    figure of the summary is the same as with every result kept."""
    from dicomweb_archive import Archive, ingest

    files = write_series(tmp_path / "in", count=4, patient_id="P1")
    (tmp_path / "in" / "bad.dcm").write_bytes(b"not dicom")
    with Archive.open_or_create(store) as archive:
        lean = ingest(archive, [tmp_path / "in"], keep_results=False)
        again = ingest(archive, [tmp_path / "in"])
    assert [r.status for r in lean.results] == ["failed"]
    assert (lean.instances, lean.count("failed"), lean.bytes) == (
        4,
        1,
        sum(p.stat().st_size for p in files),
    )
    assert again.count("unchanged") == 4 and len(again.results) == 5


def test_one_sop_in_two_studies_of_one_run_is_refused(tmp_path: Path, store: str) -> None:
    """A SOP Instance UID is stored once: a second file with it in another study, in the same
    run (before the index knows the first), is refused; in a later run, with ``--replace``, it
    replaces the first. The same file twice is unchanged."""
    from dicomweb_archive import Archive, ingest

    first = write_ct(tmp_path / "a" / "1.dcm", study=uid(1), series=uid(2), sop=uid(3))
    write_ct(tmp_path / "a" / "2.dcm", study=uid(4), series=uid(5), sop=uid(3), seed=7)
    (tmp_path / "a" / "3.dcm").write_bytes(first.read_bytes())
    with Archive.open_or_create(store) as archive:
        report = ingest(archive, [tmp_path / "a"], keep_results=False)
        assert report.instances == 1 and report.count("unchanged") == 1
        (failed,) = report.failures
        assert "given twice in this input" in (failed.error or "")
        assert archive.index.counts()["instances"] == 1
        again = ingest(archive, [tmp_path / "a" / "2.dcm"], replace=True)
        assert again.count("replaced") == 1
        row = archive.index.find_instance(uid(3))
        assert row is not None and row["study_instance_uid"] == uid(4)

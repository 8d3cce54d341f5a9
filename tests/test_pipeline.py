"""The seed's pipeline: stages run separately, in any batches, give the one-run store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from dicomweb_archive import (
    PipelineOptions,
    build_studies,
    group_studies,
    ingest,
    reconstruct_p10,
    write_instances,
)
from dicomweb_archive.model.dedup import combine, split
from dicomweb_archive.store.dedup import read_study_records
from dicomweb_archive.store.files import CRASH_AFTER_ENV, read_json_gz
from dicomweb_archive.store.layout import StoreLayout
from tests.factory import uid, write_ct, write_series
from tests.test_ingest import index_dump, tree_hashes

STAGE1 = PipelineOptions()  # mkdicomwebdeduplicated: stage 1 only when run_stages is False


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
def reference(corpus: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("reference") / "store"
    assert ingest(corpus, store).ok
    return store


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_stages_in_any_split_equal_one_run(
    data: st.DataObject,
    corpus: list[Path],
    reference: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Stage 1 in random batches, group and study stages at random moments: same store."""
    order = data.draw(st.permutations(corpus))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1), max_size=3)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    store = tmp_path_factory.mktemp("split") / "store"
    for batch in batches:
        assert write_instances(batch, store, options=STAGE1).ok
        if data.draw(st.booleans()):
            group_studies(store)
        if data.draw(st.booleans()):
            build_studies(store)
    group_studies(store)
    build_studies(store)
    assert tree_hashes(store) == tree_hashes(reference)
    assert index_dump(store) == index_dump(reference)
    assert not any((store / "notifications").rglob("*.*"))


def test_dedup_is_lossless(corpus: list[Path], reference: Path) -> None:
    """Recombining extracts and remainder gives each instance's metadata and info exactly."""
    layout = StoreLayout(reference)
    for study_dir in (reference / "instances").iterdir():
        records = read_study_records(layout, study_dir.name)
        for sop in records.records:
            metadata, info = records.instance(sop)
            key = info["series_instance_uid"]
            stored = read_json_gz(layout.instance_metadata(study_dir.name, key, sop))[0]
            assert metadata == stored
            assert info == read_json_gz(layout.info(study_dir.name, key, sop))
            extracts, remainder = split(metadata)
            assert combine(list(extracts.values()), remainder) == metadata


def test_clean_touches_only_named_studies(tmp_path: Path) -> None:
    """-c rebuilds the studies the input touches from that input alone; others stay as were."""
    a = write_series(tmp_path / "a", count=3, patient_id="P1")
    b = write_series(tmp_path / "b", count=2, patient_id="P2")
    store = tmp_path / "store"
    ingest([*a, *b], store)
    before = tree_hashes(store)
    report = ingest([a[0]], store, options=PipelineOptions(clean=True))
    assert report.ok and report.instances == 1
    after = tree_hashes(store)
    study_a = report.results[0].key.study if report.results[0].key else ""
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert changed and all(study_a in p or p.startswith("studies/index") for p in changed)
    assert read_json_gz(StoreLayout(store).study_index(study_a))[0]["00201208"]["Value"] == [1]


def test_remove_deduplicated_instances_keeps_everything(tmp_path: Path) -> None:
    """-C removes per-instance files after grouping; every instance still rebuilds exactly."""
    files = write_series(tmp_path / "in", count=4)
    store = tmp_path / "store"
    options = PipelineOptions(remove_deduplicated_instances=True)
    assert ingest(files, store, options=options).ok
    assert not (store / "instances").exists() or not any((store / "instances").iterdir())
    more = write_series(tmp_path / "in", count=6, prefix="ZZ")[4:]
    assert ingest(more, store, options=options).ok
    for path in [*files, *more]:
        import pydicom

        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert reconstruct_p10(store, sop) == path.read_bytes()
    study = next(iter((store / "deduplicated").iterdir()))
    group = read_json_gz(StoreLayout(store).group_index(study.name))
    assert len(group["groups"]) == 1


def test_group_file_smaller_than_instance_files(tmp_path: Path) -> None:
    """A 200-instance series: the group file is much smaller than its per-instance files."""
    files = write_series(tmp_path / "in", count=200, rows=8, columns=8)
    store = tmp_path / "store"
    ingest(files, store)
    per_instance = sum(p.stat().st_size for p in (store / "instances").rglob("*.gz"))
    groups = [p for p in (store / "deduplicated").rglob("*.gz") if p.name != "index.json.gz"]
    assert len(groups) == 1
    assert groups[0].stat().st_size < 0.5 * per_instance


SCRIPT = """
import sys
from dicomweb_archive import PipelineOptions, build_studies, group_studies, write_instances
stage, inputs, store = sys.argv[1:4]
if stage == "instances":
    write_instances([inputs], store, options=PipelineOptions())
elif stage == "group":
    group_studies(store)
else:
    build_studies(store)
"""


def _stage(stage: str, inputs: Path, store: Path, crash_after: int | None) -> int:
    env = dict(os.environ)
    if crash_after is not None:
        env[CRASH_AFTER_ENV] = str(crash_after)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, stage, str(inputs), str(store)], env=env, check=False
    ).returncode


@pytest.mark.parametrize("stage", ["instances", "group", "study"])
def test_stage_killed_then_rerun(stage: str, tmp_path: Path) -> None:
    """A stage killed after its k-th write, then re-run, completes the store (several k)."""
    inputs = tmp_path / "in"
    write_series(inputs / "a", count=2, patient_id="P1")
    write_ct(inputs / "b.dcm", study=uid(5), series=uid(6), sop=uid(7), frames=2)
    reference = tmp_path / "reference"
    assert ingest([inputs], reference).ok
    for k in (1, 2, 3, 5, 8):
        store = tmp_path / f"store{k}"
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

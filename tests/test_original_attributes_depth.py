"""--original-attributes nests the previous values two sequence levels deeper (PS3.3 C.12.1):
an edit that would pass the parser's nesting limit is refused before anything changes; one
that stays within it is exported and verified."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive, reconstruct_p10
from dicomweb_archive.cli.main import app
from dicomweb_archive.dicom.elements import MAX_SEQUENCE_DEPTH
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.ops.verify import verify
from tests.factory import uid
from tests.malformed import write_nested
from tests.stores import ingested, tree_hashes

runner = CliRunner()
AS_RECEIVED = PipelineOptions(recompression=None)


def _edit(store: str) -> tuple[int, str]:
    args = ["edit", "-o", store, "--original-attributes", "--instance", uid(3)]
    result = runner.invoke(app, [*args, "ReferencedImageSequence="])
    return result.exit_code, result.output


@pytest.mark.parametrize("depth", [MAX_SEQUENCE_DEPTH - 1, MAX_SEQUENCE_DEPTH])
def test_too_deep_for_original_attributes_is_refused(
    tmp_path: Path, store: str, depth: int
) -> None:
    """One worded line, exit 1, the store unchanged, the instance still verifies."""
    path = write_nested(tmp_path / "deep.dcm", depth)
    assert ingested(store, [path], options=AS_RECEIVED).ok
    before = tree_hashes(store, private=True)
    code, output = _edit(store)
    assert code == 1, output
    assert f"more than the {MAX_SEQUENCE_DEPTH} an instance may have" in output
    assert "without --original-attributes" in output and "Traceback" not in output
    assert tree_hashes(store, private=True) == before
    with Archive.open(store) as archive:
        assert verify(archive, deep=True).ok


def test_within_the_limit_is_recorded_and_verified(tmp_path: Path, store: str) -> None:
    """Two levels below the limit: the edit is made, exported with the Original Attributes
    Sequence holding the old value, and verified."""
    path = write_nested(tmp_path / "deep.dcm", MAX_SEQUENCE_DEPTH - 2)
    assert ingested(store, [path], options=AS_RECEIVED).ok
    code, output = _edit(store)
    assert code == 0, output
    with Archive.open(store) as archive:
        report = verify(archive, deep=True)
        assert report.ok, report.findings
        data = reconstruct_p10(archive, uid(3))
    (tmp_path / "out.dcm").write_bytes(data)
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert (
        "ReferencedImageSequence" in ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    )

"""ModalitiesInStudy (0008,0061) as a matching key with several values (outside tester:
``MR\\CT`` matched nothing): a study matches when one of its modalities matches one of the
key's values, separated by backslashes (DIMSE, QIDO-RS) or commas (QIDO-RS), as Orthanc and
dcm4chee match it; each value may hold wildcards."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomweb_archive import Archive, ingest
from dicomweb_archive.index.queries import study_condition
from tests.factory import uid, write_ct


@pytest.fixture
def archive(store: str, tmp_path: Path) -> Archive:
    """Study 1: CT; study 2: an MR and an OT series."""
    files = [
        write_ct(tmp_path / "a.dcm", study=uid(1), series=uid(11), sop=uid(111), modality="CT"),
        write_ct(tmp_path / "b.dcm", study=uid(2), series=uid(21), sop=uid(211), modality="MR"),
        write_ct(tmp_path / "c.dcm", study=uid(2), series=uid(22), sop=uid(221), modality="OT"),
    ]
    opened = Archive.open_or_create(store)
    assert ingest(opened, files).ok
    return opened


@pytest.mark.parametrize(
    ("value", "studies"),
    [
        ("MR", [2]),
        ("MR\\CT", [1, 2]),
        ("CT\\MR", [1, 2]),
        ("MR,CT", [1, 2]),
        ("OT\\US", [2]),
        ("PT\\US", []),
        ("C?\\X*", [1]),
    ],
)
def test_any_value_of_the_key_matches(archive: Archive, value: str, studies: list[int]) -> None:
    with archive:
        found = archive.index.find_studies(study_condition({"ModalitiesInStudy": value}))
    assert sorted(found) == sorted(uid(n) for n in studies)

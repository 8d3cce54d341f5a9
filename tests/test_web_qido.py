"""web/qido.py and web/includefield.py: QIDO-RS parameters as PS3.18 8.3.4 gives them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from dicomweb_archive import Archive, ingest
from tests import stores
from tests.factory import write_series
from tests.serving import Http, serving

CT_SMALL_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
PATIENT_AGE, SLICE_THICKNESS, PATIENT_POSITION = "00101010", "00180050", "00185100"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("qido")
    files = write_series(root / "in" / "ct", count=2, patient_id="PAT-Q", patient_name="DOE^JANE")
    source = get_testdata_file("CT_small.dcm", download=False)
    assert isinstance(source, str)
    files.append(Path(shutil.copy(source, root / "in" / "ct_small.dcm")))
    location = stores.location(root, "store")
    with Archive.open_or_create(location) as archive:
        assert ingest(archive, files).ok
    with serving(location) as url:
        yield url
    stores.forget(location)


def test_includefield_adds_attributes_of_the_level(base_url: str) -> None:
    """includefield (keywords, tags, all) adds the attributes of the result's level and the
    levels above from the served metadata, never those of a lower level."""
    client = DICOMwebClient(base_url)
    (study,) = client.search_for_studies(
        search_filters={"StudyInstanceUID": CT_SMALL_STUDY},
        fields=["PatientAge", SLICE_THICKNESS],
    )
    assert study[PATIENT_AGE]["Value"] == ["000Y"]
    assert SLICE_THICKNESS not in study
    (instance,) = client.search_for_instances(CT_SMALL_STUDY, fields=["SliceThickness"])
    assert instance[SLICE_THICKNESS]["Value"] == [5.0]
    (series,) = client.search_for_series(CT_SMALL_STUDY, fields=["all"])
    assert series[PATIENT_POSITION]["Value"] == ["FFS"]
    assert PATIENT_AGE in series and SLICE_THICKNESS not in series
    (everything,) = client.search_for_instances(CT_SMALL_STUDY, fields=["all"])
    assert everything["7FE00010"]["BulkDataURI"].startswith(base_url + "/studies/")


def test_fuzzymatching_matches_words_of_names(base_url: str) -> None:
    """fuzzymatching=true: each word of a PatientName value begins a word of the name, in any
    order, case-insensitive; without it the value is matched literally."""
    client = DICOMwebClient(base_url)

    def names(value: str, *, fuzzy: bool) -> list[str]:
        found = client.search_for_studies(
            search_filters={"PatientName": value}, fuzzymatching=fuzzy
        )
        return [s["00100010"]["Value"][0]["Alphabetic"] for s in found]

    assert names("jane", fuzzy=True) == ["DOE^JANE"]
    assert names("j do", fuzzy=True) == ["DOE^JANE"]
    assert names("compressed^ct1", fuzzy=True) == ["CompressedSamples^CT1"]
    assert names("janet", fuzzy=True) == []
    assert names("jane", fuzzy=False) == []
    assert names("doe^jane", fuzzy=False) == ["DOE^JANE"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("studies?StudyDate=2004-01-01", "StudyDate"),
        ("studies?StudyDate=2004", "StudyDate"),
        ("studies?StudyTime=25h", "StudyTime"),
        ("studies?StudyInstanceUID=a..b", "StudyInstanceUID"),
        ("series?SeriesNumber=one", "SeriesNumber"),
        ("studies?limit=" + "1" + "0" * 26, "limit"),
        ("studies?offset=" + "1" + "0" * 26, "offset"),
        ("studies?limit=-1", "limit"),
        ("studies?fuzzymatching=maybe", "fuzzymatching"),
        ("studies?includefield=NoSuchAttribute", "includefield"),
        ("studies?Colour=blue", "Colour"),
    ],
)
def test_invalid_values_are_400_with_a_sentence(base_url: str, query: str, named: str) -> None:
    """A value that is not valid for its key is 400 naming it, not an empty 200 or a 500."""
    reply = Http(base_url).get(f"/dicomweb/{query}")
    assert reply.status_code == 400
    assert named in reply.text and "Error" not in reply.text


def test_valid_values_still_match(base_url: str) -> None:
    """Dates, ranges, times and UID lists in their DICOM forms are taken."""
    raw = Http(base_url)
    for query in (
        "StudyDate=20040119",
        "StudyDate=20040101-20040131",
        "StudyDate=-20040119",
        "StudyTime=0727-0728",
        f"StudyInstanceUID={CT_SMALL_STUDY},1.2.3",
    ):
        reply = raw.get(f"/dicomweb/studies?{query}")
        assert reply.status_code == 200, query
        assert [s["0020000D"]["Value"][0] for s in reply.json()] == [CT_SMALL_STUDY], query


def test_unsupported_matching_key_is_ignored_with_a_warning(base_url: str) -> None:
    """A DICOM attribute that is not a matching key is ignored, and a Warning: 299 says so."""
    reply = Http(base_url).get("/dicomweb/studies?PatientBirthDate=19700101&00100040=F")
    assert reply.status_code == 200 and len(reply.json()) == 2
    warning = reply.headers["warning"]
    assert warning.startswith("299 ") and "PatientBirthDate" in warning and "00100040" in warning
    assert "warning" not in Http(base_url).get("/dicomweb/studies?PatientID=PAT-Q").headers


def test_instances_of_a_study(base_url: str) -> None:
    """/studies/{study}/instances lists the study's instances."""
    assert len(DICOMwebClient(base_url).search_for_instances(CT_SMALL_STUDY)) == 1

"""An instance sent again (STOW-RS, C-STORE) in a file that differs from the stored one only
outside its data set is the stored instance, not a different one (outside tester: a C-STORE of
the same data set from another AE title, or in Implicit VR, was refused 0xC002).

A storage SCP writes the File Meta Information (PS3.10 7.1) itself, with the sender's AE title
in Source Application Entity Title (0002,0016), so two associations sending one data set give
two files; the store keeps the first byte for byte and answers the others "stored already".
A data set that differs in any value stays refused (nothing stored is replaced by a peer).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomweb_archive import Archive, ingest
from dicomweb_archive.dicom.recompression import Recompression
from dicomweb_archive.errors import DuplicateInstanceError
from dicomweb_archive.ops.ingest import write_streams
from dicomweb_archive.ops.ingest_types import PipelineOptions
from dicomweb_archive.ops.receive import receive_instances
from dicomweb_archive.ops.reconstruct import generate_instance
from dicomweb_archive.ops.verify import verify
from dicomweb_archive.store import notify
from dicomweb_archive.store.instance import InstanceKey
from dicomweb_archive.store.keys import GENERATION
from tests import stores
from tests.dimse_peers import DCMTK, dcmtk, scp
from tests.factory import uid, write_ct


def _p10(
    ds: Dataset, *, syntax: str = ExplicitVRLittleEndian, source_ae: str | None = None
) -> bytes:
    """``ds`` as a P10 file in ``syntax``, its File Meta as a storage SCP would write it."""
    copy = Dataset(ds)
    copy.file_meta = FileMetaDataset(ds.file_meta)
    copy.file_meta.TransferSyntaxUID = UID(syntax)
    copy.file_meta.ImplementationVersionName = "OTHER_SCP_1"
    if source_ae is not None:
        copy.file_meta.SourceApplicationEntityTitle = source_ae
    buffer = io.BytesIO()
    copy.save_as(buffer, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
    return buffer.getvalue()


@pytest.fixture
def stored(store: str, tmp_path: Path) -> tuple[str, Path]:
    """A store holding one CT slice, ingested from its file (frames recompressed)."""
    path = write_ct(tmp_path / "ct.dcm", study=uid(1), series=uid(2), sop=uid(3))
    with Archive.open_or_create(store) as archive:
        report = ingest(archive, [path], options=PipelineOptions(recompression=Recompression()))
    assert report.ok
    return store, path


def _objects(store: str) -> dict[str, bytes]:
    """Every object of the store but its generation counter."""
    found = stores.objects(store, private=True)
    del found[GENERATION]
    return found


def _send(store: str, data: bytes) -> tuple[str, BaseException | None]:
    with Archive.open(store) as archive:
        [result] = write_streams(archive, [("sent", io.BytesIO(data))]).results
    return result.status, result.exception


@pytest.mark.parametrize(
    ("syntax", "source_ae"),
    [
        (ExplicitVRLittleEndian, "CT1"),
        (ExplicitVRLittleEndian, "ROUTER"),
        (ImplicitVRLittleEndian, "CT1"),
    ],
)
def test_the_same_data_set_in_another_file_is_stored_already(
    stored: tuple[str, Path], syntax: str, source_ae: str
) -> None:
    """Another File Meta (sender's AE title, implementation), or Implicit VR: unchanged; the
    store keeps what it had, byte for byte (no change recorded either: its private objects
    are the same but for the generation counter, which the stages' commit counts), and
    verifies clean."""
    store, path = stored
    before = _objects(store)
    data = _p10(dcmread(path), syntax=syntax, source_ae=source_ae)
    assert data != path.read_bytes()
    assert _send(store, data) == ("unchanged", None)
    assert _send(store, path.read_bytes()) == ("unchanged", None)  # the very file, too
    assert _objects(store) == before
    with Archive.open(store) as archive:
        assert verify(archive).ok


def test_a_data_set_that_differs_is_still_refused(stored: tuple[str, Path]) -> None:
    """One value changed: a different instance under a stored SOP Instance UID, refused."""
    store, path = stored
    before = stores.objects(store)
    ds = dcmread(path)
    ds.PatientName = "OTHER^NAME"
    status, exception = _send(store, _p10(ds, source_ae="CT1"))
    assert status == "failed" and isinstance(exception, DuplicateInstanceError)
    assert stores.objects(store) == before


def test_other_pixels_are_still_refused(stored: tuple[str, Path]) -> None:
    """The same attributes with other pixel values: refused."""
    store, path = stored
    ds = dcmread(path)
    pixels = bytearray(ds.PixelData)
    pixels[0] ^= 1
    ds.PixelData = bytes(pixels)
    status, exception = _send(store, _p10(ds))
    assert status == "failed" and isinstance(exception, DuplicateInstanceError)


@pytest.mark.local  # DCMTK's storescu sends to a server of this process on loopback
@pytest.mark.skipif(DCMTK["storescu"] is None, reason="DCMTK's storescu is not installed")
def test_storescu_from_two_ae_titles_and_in_implicit_vr(stored: tuple[str, Path]) -> None:
    """The tester's case: the file ingested with mkdicomweb, then sent by storescu from two
    AE titles and in Implicit VR: status 0x0000 each time, the store unchanged."""
    store, path = stored
    before = stores.objects(store)
    with scp(store) as (port, _server):
        for args in (["-aet", "CT1"], ["-aet", "ROUTER"], ["-aet", "CT1", "-xi"]):
            done = dcmtk("storescu", "-aec", "ARCHIVE", *args, "127.0.0.1", str(port), str(path))
            assert done.returncode == 0, done.stderr
            assert "Status" not in done.stderr or "Success" in done.stderr, done.stderr
    assert stores.objects(store) == before


def test_a_refused_part_leaves_no_study_waiting(stored: tuple[str, Path], tmp_path: Path) -> None:
    """A STOW-RS request with a part stored (a new study) and a part refused (another data
    set under the stored SOP Instance UID): the refused part's study was notified when its
    header was read and is finished with the request, not left pending (outside tester:
    verify said 'pending' until a later store)."""
    store, path = stored
    ds = dcmread(path)
    ds.PatientName = "OTHER^NAME"
    new = write_ct(tmp_path / "new.dcm", study=uid(5), series=uid(6), sop=uid(7))
    with Archive.open(store) as archive:
        outcomes = receive_instances(
            archive, [("new", io.BytesIO(new.read_bytes())), ("differs", io.BytesIO(_p10(ds)))]
        )
        assert [o.stored for o in outcomes] == [True, False]
        assert [notify.pending(archive.storage, stage) for stage in notify.STAGES] == [[], []]
        report = verify(archive)
    assert report.ok and report.complete, report.to_json()


@pytest.mark.local  # DCMTK's storescu sends to a server of this process on loopback
@pytest.mark.skipif(DCMTK["storescu"] is None, reason="DCMTK's storescu is not installed")
def test_a_c_store_refused_or_sent_again_leaves_no_study_waiting(stored: tuple[str, Path]) -> None:
    """Associations that only send an instance again, or only a refused one: once they end,
    no study waits for its stages (verify complete)."""
    store, path = stored
    ds = dcmread(path)
    ds.PatientName = "OTHER^NAME"
    differs = path.with_name("differs.dcm")
    differs.write_bytes(_p10(ds))
    with scp(store) as (port, server):
        for sent in (path, differs):
            dcmtk("storescu", "-aec", "ARCHIVE", "127.0.0.1", str(port), str(sent))
        deadline = time.monotonic() + 30  # the stages run in the server's writer thread
        while any(_waiting(server.archive)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _waiting(server.archive) == [[], []]  # while the server runs
    with Archive.open(store) as archive:
        report = verify(archive)
    assert report.ok and report.complete, report.to_json()


def _waiting(archive: Archive) -> list[list[str]]:
    return [notify.pending(archive.storage, stage) for stage in notify.STAGES]


def test_with_replace_the_new_file_is_kept(stored: tuple[str, Path]) -> None:
    """``--replace`` keeps the new file even when it holds the stored data set (its File
    Meta is what the user wants kept): replaced, and export gives its bytes back."""
    store, path = stored
    data = _p10(dcmread(path), source_ae="CT1")
    with Archive.open(store) as archive:
        [result] = write_streams(
            archive, [("sent", io.BytesIO(data))], options=PipelineOptions(replace=True)
        ).results
        assert result.status == "replaced"
        assert result.key is not None
        assert b"".join(generate_instance(archive, result.key)) == data


def _multiframe(tmp_path: Path) -> bytes:
    path = write_ct(tmp_path / "mf.dcm", study=uid(41), series=uid(42), sop=uid(43), frames=3)
    return path.read_bytes()


def test_the_whole_file_completes_an_instance_stored_incomplete(store: str, tmp_path: Path) -> None:
    """A file cut inside Pixel Data is stored incomplete; the whole file sent afterwards (a
    retry, another File Meta) replaces it without --replace, as a change that can be
    reverted (outside tester: it was refused as a different file, for ever)."""
    whole = _multiframe(tmp_path)
    cut = whole[: len(whole) - 64 * 64 - 10]  # inside the third frame
    Archive.create(store).close()
    first, _ = _send(store, cut)
    assert first == "stored"
    again = _p10(dcmread(io.BytesIO(whole)), source_ae="CT1")
    assert _send(store, again) == ("replaced", None)
    with Archive.open(store) as archive:
        [row] = archive.index.find_instances(uid(41))
        assert not row["incomplete"]
        assert b"".join(generate_instance(archive, InstanceKey(uid(41), uid(42), uid(43)))) == again
        report = verify(archive)
        assert report.ok and report.complete, report.to_json()


def test_a_whole_file_with_other_frames_does_not_complete(store: str, tmp_path: Path) -> None:
    """The stored whole frames must be the new file's first frames: another first frame is
    another instance, refused."""
    whole = bytearray(_multiframe(tmp_path))
    cut = bytes(whole[: len(whole) - 64 * 64 - 10])
    Archive.create(store).close()
    assert _send(store, cut)[0] == "stored"
    first_frame = whole.index(b"\xe0\x7f\x10\x00") + 12
    whole[first_frame] ^= 0xFF
    status, exception = _send(store, bytes(whole))
    assert status == "failed" and isinstance(exception, DuplicateInstanceError)

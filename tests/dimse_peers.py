"""DCMTK as the DICOM peer of ``scp`` in tests: finding its tools, our server in a thread, a
DCMTK storescp in a subprocess, and reading P10 files as sent (File Meta set apart)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.filereader import read_dataset, read_preamble

from dicomweb_archive import Archive
from dicomweb_archive.dimse.server import DicomServer
from dicomweb_archive.dimse.settings import ScpSettings

TOOLS = ("storescu", "findscu", "movescu", "getscu", "storescp", "echoscu")


def _system_path() -> str:
    """PATH without Python environments' scripts (pynetdicom installs its own storescu and
    friends in each environment it is in, this one or another activated in the shell; the
    peer is DCMTK's)."""
    ours = Path(sys.prefix, "bin").resolve()
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(
        p for p in parts if p and Path(p).resolve() != ours and not (Path(p) / "activate").is_file()
    )


DCMTK = {name: shutil.which(name, path=_system_path()) for name in TOOLS}
HAVE_DCMTK = all(DCMTK.values())


def dcmtk(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool to its end."""
    tool = DCMTK[name]
    assert tool is not None
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def scp(store: str, **settings: object) -> Iterator[tuple[int, DicomServer]]:
    """Our DICOM server on a free loopback port, in this process; yields its port and the
    server. Leaving the block stops it (every write, the stages too, done)."""
    settings = {"host": "127.0.0.1", "port": 0, "ae_title": "ARCHIVE"} | settings
    with Archive.open(store) as archive:
        server = DicomServer(archive, ScpSettings(**settings))  # type: ignore[arg-type]
        _, port = server.start()
        try:
            yield port, server
        finally:
            server.stop(grace=10)


@contextlib.contextmanager
def storescp(directory: Path, *, ae_title: str = "PEER") -> Iterator[int]:
    """DCMTK's storescp writing what it receives, bit for bit (+B), into ``directory``;
    yields its port."""
    port = free_port()
    tool = DCMTK["storescp"]
    assert tool is not None
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [tool, "+B", "+xa", "-pm", "-aet", ae_title, "-od", str(directory), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def witness() -> Iterator[tuple[int, dict[str, tuple[str, bytes]]]]:
    """A storage SCP that keeps what each C-STORE delivers, undecoded, and accepts the
    transfer syntaxes ``scp`` accepts, in the same order (so that a sender sends it what it
    sends ``scp``); yields its port and SOP Instance UID -> (transfer syntax, data set)."""
    from pynetdicom import AE, AllStoragePresentationContexts, _config, evt

    from dicomweb_archive.dimse.server import ACCEPTED_SYNTAXES

    kept: dict[str, tuple[str, bytes]] = {}

    def keep(event: Any) -> int:
        syntax = str(event.context.transfer_syntax)
        if _config.STORE_RECV_CHUNKED_DATASET:  # as the server in this process set it
            body = split_p10(Path(event.dataset_path))[1]
        else:
            body = event.encoded_dataset(include_meta=False)
        kept[str(event.request.AffectedSOPInstanceUID)] = (syntax, body)
        return 0x0000

    ae = AE(ae_title="WITNESS")
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), ACCEPTED_SYNTAXES)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, keep)])
    assert server is not None
    try:
        yield int(server.server_address[1]), kept
    finally:
        server.shutdown()


def split_p10(path: Path) -> tuple[dict[str, str], bytes]:
    """The File Meta Information (keyword -> value, as text) and the data set's bytes of a
    file, preamble and meta optional."""
    data = path.read_bytes()
    with path.open("rb") as file:
        read_preamble(file, True)
        meta = read_dataset(
            file,
            is_implicit_VR=False,
            is_little_endian=True,
            stop_when=lambda tag, _vr, _length: tag.group != 2,
        )
        offset = file.tell()
    return {e.keyword: str(e.value) for e in meta}, data[offset:]


def received(directory: Path) -> dict[str, tuple[dict[str, str], bytes]]:
    """The files a peer wrote into ``directory``, by Media Storage SOP Instance UID."""
    found = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        meta, body = split_p10(path)
        found[meta["MediaStorageSOPInstanceUID"]] = (meta, body)
    return found

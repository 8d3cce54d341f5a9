"""STOW-RS throughput of `dicomweb-archive serve --allow-write` against `mkdicomweb` of the same
files, in the same run.

Usage: python bench/stow.py [--count 200] [--size 512] [--batch 10] [--clients 1,4]
       [--workdir DIR]

Generates (once, cached in the work directory) a CT series of COUNT slices of SIZE x SIZE
16-bit pixels (tests/factory.py's realistic phantom, as bench/ingest.py), then measures:
- `mkdicomweb -o STORE DIR` in a fresh process into an empty store (the baseline; its time
  includes the process's start, about 0.3 s);
- for each number of CLIENTS: `serve --allow-write` started in its own process on an empty
  store (not timed), then CLIENTS threads on loopback sending the files, BATCH per request
  (multipart/related; type="application/dicom"), from the first request to the last answer.
Both stores use the default recompression (JPEG-LS lossless) and run the group and study stages.
Prints one Markdown table: seconds, instances/s, MB/s and the ratio to mkdicomweb.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factory import write_series  # noqa: E402

from dicomweb_archive import Archive  # noqa: E402

BOUNDARY = "bench-stow"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def body(files: list[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + f + b"\r\n" for f in files) + f"--{BOUNDARY}--\r\n".encode()


def mkdicomweb(inputs: Path, store: Path) -> float:
    started = time.perf_counter()
    # `dicomweb-archive create` is mkdicomweb
    command = [sys.executable, "-m", "dicomweb_archive.cli.main", "create", "-o", str(store)]
    subprocess.run([*command, str(inputs)], check=True, capture_output=True)
    return time.perf_counter() - started


def stow(files: list[bytes], store: Path, *, clients: int, batch: int) -> float:
    """Seconds to send every file with ``clients`` threads; checks every instance was stored."""
    Archive.create(store).close()
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "dicomweb_archive.cli.main", "serve", "-o", str(store)),
            *("--port", str(port), "--allow-write", "--no-access-log"),
        ],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/dicomweb/studies"
    try:
        for _ in range(200):
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        batches = [files[i : i + batch] for i in range(0, len(files), batch)]
        stored: list[int] = []
        errors: list[str] = []

        def client(number: int) -> None:
            with requests.Session() as session:
                for chunk in batches[number::clients]:
                    reply = session.post(
                        url, data=body(chunk), headers={"Content-Type": MULTIPART}, timeout=600
                    )
                    if reply.status_code != 200:
                        errors.append(f"{reply.status_code}: {reply.text[:200]}")
                    stored.append(len(reply.json().get("00081199", {}).get("Value", [])))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not errors and sum(stored) == len(files), errors[:3]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.gettempdir()) / "dicomweb-archive-bench-stow"
    inputs = work / f"ct-{args.count}x{args.size}"
    if not inputs.is_dir():
        write_series(
            inputs, count=args.count, rows=args.size, columns=args.size, realistic=args.size >= 64
        )
    paths = sorted(inputs.iterdir())
    files = [p.read_bytes() for p in paths]
    megabytes = sum(len(f) for f in files) / 1e6
    rows = []
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    baseline = mkdicomweb(inputs, store)
    rows.append(("mkdicomweb (one process)", baseline))
    for clients in (int(c) for c in args.clients.split(",")):
        shutil.rmtree(store, ignore_errors=True)
        seconds = stow(files, store, clients=clients, batch=args.batch)
        rows.append((f"STOW-RS, {clients} client(s), {args.batch} per request", seconds))
    shutil.rmtree(store, ignore_errors=True)
    print(f"{len(files)} CT slices {args.size}x{args.size}, {megabytes:.1f} MB\n")
    print("| run | seconds | instances/s | MB/s | vs mkdicomweb |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.2f} | {len(files) / seconds:.1f} | {megabytes / seconds:.1f} "
            f"| {baseline / seconds:.2f} |"
        )


if __name__ == "__main__":
    main()

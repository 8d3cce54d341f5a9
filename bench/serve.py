"""Load on `dicomweb-archive serve`: requests/s and latency for frames and metadata.

Usage: python bench/serve.py [--clients 8] [--seconds 30] [--count 100]

Ingests a generated CT series (COUNT slices of 512x512), starts the server in a separate process
on 127.0.0.1, and runs CLIENTS concurrent clients (threads with keep-alive connections, loopback
only) for SECONDS, half asking for single frames, half for series metadata. Reports requests/s
and p50/p99 latency per kind; the loop is bounded in time and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factory import write_series  # noqa: E402

from dicomweb_archive import Archive, ingest  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        files = write_series(
            Path(work) / "in", count=args.count, rows=512, columns=512, realistic=True
        )
        store = Path(work) / "store"
        with Archive.open_or_create(store) as archive:
            assert ingest(archive, files).ok
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dicomweb_archive.cli.main",
                "serve",
                "-o",
                str(store),
                "--port",
                str(port),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            run(port, args.clients, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=10)


def run(port: int, clients: int, seconds: float) -> None:
    connection = None
    for _ in range(200):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/dicomweb/instances")
            instances = json.loads(connection.getresponse().read())
            break
        except OSError:
            time.sleep(0.05)
    assert connection is not None
    paths: dict[str, list[str]] = {"frame": [], "metadata": []}
    for item in instances:
        study, series, sop = (item[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
        paths["frame"].append(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1")
        paths["metadata"].append(f"/dicomweb/studies/{study}/series/{series}/metadata")
    latencies: dict[str, list[float]] = {"frame": [], "metadata": []}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(number: int) -> None:
        kind = "frame" if number % 2 == 0 else "metadata"
        headers = (
            {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
            if kind == "frame"
            else {"Accept": "application/dicom+json"}
        )
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        rng = random.Random(number)
        mine = []
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            conn.request("GET", rng.choice(paths[kind]), headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            mine.append(time.perf_counter() - start)
        with lock:
            latencies[kind].extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"{clients} clients, {seconds:.0f} s, loopback")
    print("| request | requests | requests/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, values in latencies.items():
        values.sort()
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(
            f"| {kind} | {len(values)} | {len(values) / seconds:.0f} | "
            f"{statistics.median(values) * 1000:.1f} | {p99 * 1000:.1f} |"
        )


if __name__ == "__main__":
    main()

"""C-STORE throughput of `dicomweb-archive scp` against Orthanc's and DCMTK's storage SCPs.

Usage: python bench/scp.py [--count 200] [--size 512] [--workdir DIR] [--runs 1]

Generates (once, cached in the work directory) a CT series of COUNT slices of SIZE x SIZE
16-bit pixels (tests/factory.py's phantom), then, in the same run, sends it with DCMTK's
storescu (one association, Explicit VR Little Endian, loopback) to:
- `dicomweb-archive scp` on an empty store that keeps frames as received (as Orthanc does),
  and on one with the default recompression (JPEG-LS lossless), each started in its own
  process; "stored" is when storescu has its last response (every instance committed), "built"
  when the server has also run the group and study stages on stop;
- Orthanc (Debian's `orthanc` package, if installed: `apt-get install orthanc`), started on
  loopback ports with a configuration of its own (storage as received, no compression);
- DCMTK's storescp writing each file as received (+B), the floor of a storage SCP.
Prints one Markdown table: seconds, instances/s and MB/s per receiver, and the ratio of each
to Orthanc (or, without Orthanc, to storescp). docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dimse_peers import DCMTK, free_port  # noqa: E402
from tests.factory import write_series  # noqa: E402

from dicomweb_archive import Archive  # noqa: E402
from dicomweb_archive.store.config import StoreConfig  # noqa: E402


def wait_for_port(port: int, *, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def send(port: int, files: list[Path], ae_title: str) -> float:
    """Seconds storescu takes to send ``files`` in one association."""
    tool = DCMTK["storescu"]
    assert tool is not None
    started = time.perf_counter()
    result = subprocess.run(
        [tool, "-xe", "-aec", ae_title, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0 or "E:" in result.stderr:
        raise SystemExit(f"storescu to {ae_title} failed: {result.stderr[-1000:]}")
    return seconds


def ours(files: list[Path], workdir: Path, *, recompress: bool) -> tuple[float, float]:
    """(seconds to store, seconds until the stages are built) into a new store."""
    store = workdir / ("store-recompressed" if recompress else "store")
    shutil.rmtree(store, ignore_errors=True)
    config = None if recompress else StoreConfig(recompression=None)
    Archive.create(store, config).close()
    port = free_port()
    environment = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "dicomweb_archive.cli.main", "scp", "-o", str(store)]
    command += ["--aet", "ARCHIVE", "--host", "127.0.0.1", "--port", str(port)]
    with subprocess.Popen(
        command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=environment
    ) as process:
        wait_for_port(port)
        stored = send(port, files, "ARCHIVE")
        started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=600)
        built = stored + time.perf_counter() - started
    with Archive.open(store) as archive:
        if archive.index.counts()["instances"] != len(files):
            raise SystemExit("the store does not hold every instance sent")
    return stored, built


def orthanc(files: list[Path], workdir: Path) -> float | None:
    """Seconds to store into a new Orthanc, or None when Orthanc is not installed."""
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    if binary is None:
        return None
    home = workdir / "orthanc"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    port = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(home / "storage"),
        "IndexDirectory": str(home / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": free_port(),
        "RemoteAccessAllowed": False,
        "DicomCheckCalledAet": False,
        "StorageCompression": False,
        "Plugins": [],
    }
    (home / "orthanc.json").write_text(json.dumps(config))
    with subprocess.Popen(
        [binary, str(home / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:
        try:
            wait_for_port(port)
            return send(port, files, "ORTHANC")
        finally:
            process.terminate()
            process.wait(timeout=60)


def storescp(files: list[Path], workdir: Path) -> float:
    """Seconds to store into DCMTK's storescp writing files (+B: as received)."""
    tool = DCMTK["storescp"]
    assert tool is not None
    out = workdir / "storescp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    port = free_port()
    with subprocess.Popen(
        [tool, "+B", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            wait_for_port(port)
            return send(port, files, "STORESCP")
        finally:
            process.terminate()
            process.wait(timeout=60)


def best(runs: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=1, help="the best of this many runs")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if not all(DCMTK.values()):
        raise SystemExit("needs DCMTK's storescu and storescp (apt-get install dcmtk)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scp-"))
    series = workdir / f"ct-{args.count}x{args.size}"
    if not series.is_dir() or len(list(series.iterdir())) != args.count:
        shutil.rmtree(series, ignore_errors=True)
        write_series(series, count=args.count, rows=args.size, columns=args.size, realistic=True)
    files = sorted(series.iterdir())
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    rows: list[tuple[str, float]] = []
    plain = [ours(files, workdir, recompress=False) for _ in range(args.runs)]
    rows.append(("scp, frames as received: stored", min(p[0] for p in plain)))
    rows.append(("scp, frames as received: stored and built", min(p[1] for p in plain)))
    packed = [ours(files, workdir, recompress=True) for _ in range(args.runs)]
    rows.append(("scp, JPEG-LS recompression: stored", min(p[0] for p in packed)))
    rows.append(("scp, JPEG-LS recompression: stored and built", min(p[1] for p in packed)))
    other = orthanc(files, workdir)
    if other is not None:
        other = min([other] + [orthanc(files, workdir) or other for _ in range(args.runs - 1)])
        rows.append(("Orthanc 1.10 (Debian), as received", other))
    rows.append(("DCMTK storescp +B, files", best(args.runs, lambda: storescp(files, workdir))))
    base_name, base = rows[4] if other is not None else rows[-1]
    print(f"{args.count} CT slices of {args.size}x{args.size} ({megabytes:.1f} MB), storescu, one")
    print(f"association, loopback; ratio = seconds / seconds of {base_name.split(',')[0]}\n")
    print("| receiver | seconds | instances/s | MB/s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.2f} | {args.count / seconds:.0f} | "
            f"{megabytes / seconds:.1f} | {seconds / base:.2f} |"
        )


if __name__ == "__main__":
    main()

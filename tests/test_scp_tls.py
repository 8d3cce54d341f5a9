"""``scp`` over TLS (PS3.15 B.9) with DCMTK as the peer: with a certificate it accepts TLS
connections only (echoscu and storescu with ``+tla`` checking the server's certificate);
with a CA it accepts only clients presenting a certificate that CA issued; the options'
errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomweb_archive import Archive
from dicomweb_archive.cli.main import app
from tests.dimse_peers import HAVE_DCMTK, dcmtk, scp
from tests.factory import write_series

pytestmark = [
    pytest.mark.local,
    pytest.mark.skipif(not HAVE_DCMTK, reason="DCMTK's network tools are not installed"),
]


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _echo(port: int, *tls: str) -> subprocess.CompletedProcess[str]:
    return dcmtk("echoscu", *tls, "-aec", "ARCHIVE", "127.0.0.1", str(port), timeout=60)


def test_storescu_over_tls(store: str, tmp_path: Path) -> None:
    """With --tls-certfile/--tls-keyfile, echoscu and storescu connect over TLS and verify
    the archive's certificate; the data sets are stored; a plain TCP association is refused;
    a client trusting another certificate refuses the archive."""
    cert, key = _certificate(tmp_path, "archive")
    other, _ = _certificate(tmp_path, "other")
    files = write_series(tmp_path / "series", count=3)
    Archive.create(store).close()
    with scp(store, tls_certfile=cert, tls_keyfile=key) as (port, _server):
        echoed = _echo(port, "+tla", "+cf", str(cert))
        stored = dcmtk(
            *("storescu", "+tla", "+cf", str(cert), "-aec", "ARCHIVE"),
            *("127.0.0.1", str(port), *map(str, files)),
        )
        plain = _echo(port)
        distrusted = _echo(port, "+tla", "+cf", str(other))
    assert echoed.returncode == 0, echoed.stderr
    assert stored.returncode == 0, stored.stderr
    assert plain.returncode != 0
    assert distrusted.returncode != 0
    with Archive.open(store) as archive:
        assert archive.index.counts()["instances"] == 3


def test_client_certificates(store: str, tmp_path: Path) -> None:
    """With --tls-ca too, a client presenting a certificate the CA file holds is accepted;
    one without a certificate, or with another one, is refused."""
    cert, key = _certificate(tmp_path, "archive")
    client, client_key = _certificate(tmp_path, "modality")
    stranger, stranger_key = _certificate(tmp_path, "stranger")
    Archive.create(store).close()
    with scp(store, tls_certfile=cert, tls_keyfile=key, tls_ca=client) as (port, _server):
        known = _echo(port, "+tls", str(client_key), str(client), "+cf", str(cert))
        anonymous = _echo(port, "+tla", "+cf", str(cert))
        unknown = _echo(port, "+tls", str(stranger_key), str(stranger), "+cf", str(cert))
    assert known.returncode == 0, known.stderr
    assert anonymous.returncode != 0
    assert unknown.returncode != 0


def test_tls_option_errors(store: str, tmp_path: Path) -> None:
    """A certificate without its key (or a CA without both) is exit 2; files that are not a
    certificate and its key are exit 6; each with one line on stderr."""
    Archive.create(store).close()
    cert, key = _certificate(tmp_path, "archive")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    runs = {
        "alone": (["--tls-certfile", str(cert)], 2, "--tls-certfile and --tls-keyfile go together"),
        "ca": (["--tls-ca", str(cert)], 2, "--tls-ca needs --tls-certfile and --tls-keyfile"),
        "bad": (
            ["--tls-certfile", str(not_pem), "--tls-keyfile", str(key)],
            6,
            f"cannot use {not_pem}, {key} for TLS:",
        ),
    }
    for name, (args, code, message) in runs.items():
        result = CliRunner().invoke(app, ["scp", "-o", store, "--port", "0", *args])
        assert result.exit_code == code, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (name, lines)

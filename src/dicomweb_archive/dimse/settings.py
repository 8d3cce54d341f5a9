"""The settings of the DICOM server (``dicomweb-archive scp``) and its C-MOVE destinations.

A C-MOVE names its destination by AE title only (PS3.4 C.4.2.1.4.1); where it listens comes from
``--peer AET=HOST:PORT`` (repeatable) or a peers file: one ``AET=HOST:PORT`` a line, ``#``
starting a comment. A destination not known is answered with 0xA801 (Move Destination unknown).

TLS (PS3.15 B.9, the BCP 195 TLS profile: TLS 1.2 or later) is optional: with a certificate
and its key the server accepts TLS connections only; with a CA file too, only clients
presenting a certificate issued by it (PS3.15 B.1: the peers authenticate each other).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dicomweb_archive.errors import UsageError

#: PS3.5 6.2: an AE title is 1 to 16 characters of the default repertoire, no backslash or
#: control characters; leading and trailing spaces are not significant
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")


@dataclass(frozen=True, slots=True)
class Peer:
    """A C-MOVE destination: the application entity ``ae_title`` at ``host``:``port``."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ScpSettings:
    """What the server answers as and accepts (docs/serving.md, "DICOM networking")."""

    ae_title: str = "DICOMWEB"
    host: str = "0.0.0.0"  # noqa: S104 - a DICOM server listens for modalities on the network
    port: int = 11112
    #: calling AE titles accepted; empty: any
    allowed_calling: tuple[str, ...] = ()
    #: largest PDU received (PS3.8 9.3.1), 0: no limit
    max_pdu: int = 131072
    max_associations: int = 10
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    peers: dict[str, Peer] = field(default_factory=dict)
    #: TLS certificate chain and its private key (PEM): accept TLS connections only
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    #: CA certificates (PEM): clients must present a certificate they issued
    tls_ca: Path | None = None


def tls_context(settings: ScpSettings) -> ssl.SSLContext | None:
    """The server side TLS context of ``settings`` (see the module docstring), None without a
    certificate.

    Raises:
        UsageError: a key without a certificate or the other way round, or a CA without both.
        OSError: the files cannot be read or are not a certificate and its key
            (``ssl.SSLError`` is an OSError).
    """
    certfile, keyfile, ca = settings.tls_certfile, settings.tls_keyfile, settings.tls_ca
    if (certfile is None) != (keyfile is None):
        raise UsageError("--tls-certfile and --tls-keyfile go together")
    if certfile is None or keyfile is None:
        if ca is not None:
            raise UsageError("--tls-ca needs --tls-certfile and --tls-keyfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # PS3.15 B.9
    context.load_cert_chain(certfile, keyfile)
    if ca is not None:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def check_ae_title(value: str, what: str = "AE title") -> str:
    """``value`` without its leading and trailing spaces when it is an AE title (PS3.5 6.2),
    else UsageError."""
    title = value.strip()
    if not _AE_TITLE.fullmatch(title):
        raise UsageError(
            f"{what} {value!r}: give 1 to 16 characters, letters, digits, spaces and symbols "
            "but backslash"
        )
    return title


def parse_peer(text: str, *, source: str = "--peer") -> Peer:
    """``AET=HOST:PORT`` (an IPv6 host in brackets) as a :class:`Peer`; UsageError naming
    ``source`` when it is not that."""
    name, sep, address = text.partition("=")
    host, colon, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{source} {text!r}: give AET=HOST:PORT, e.g. PACS=10.0.0.5:104")
    return Peer(check_ae_title(name, f"{source} {text!r}: AE title"), host, int(port))


def parse_peers(lines: Iterable[str], *, source: str) -> dict[str, Peer]:
    """The peers of a peers file's lines (see the module docstring)."""
    peers: dict[str, Peer] = {}
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            peer = parse_peer(text, source=f"{source} line {number}:")
            peers[peer.ae_title] = peer
    return peers

"""What the de-identification tests search: every byte a de-identified store holds (objects,
info-record literals, index rows) and the P10 files it exports."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pydicom

from dicomweb_archive import Archive
from dicomweb_archive.ops.export import Selection, export
from tests.stores import objects

EVERYTHING = Selection(query={"StudyInstanceUID": "*"})


def store_texts(store: str) -> list[bytes]:
    """Every byte of the store as it can be read: every object, private ones included (gz
    opened, info literals decoded), object keys, and the index rows (audit included)."""
    out: list[bytes] = []
    for key, stored in objects(store, private=True).items():
        out.append(key.encode())
        data = stored
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
            out.extend(_literals(json.loads(data)))
        out.append(data)
    with Archive.open(store) as archive:
        rows = [*(r for t in archive.index.dump().values() for r in t), *archive.index.audit()]
    out.extend(repr(row).encode() for row in rows)
    return out


def _literals(value: object) -> list[bytes]:
    if isinstance(value, dict):
        found = [base64.b64decode(value["literal"])] if "literal" in value else []
        return found + [b for v in value.values() for b in _literals(v)]
    if isinstance(value, list):
        return [b for v in value for b in _literals(v)]
    return []


def exported(store: str, where: Path) -> list[Path]:
    """The store's instances exported (mkdicomwebpart10) to P10 files under ``where``."""
    with Archive.open(store) as archive:
        report = export(archive, EVERYTHING, out=where)
    assert not report.failures, [item.error for item in report.failures]
    return sorted(p for p in where.rglob("*") if p.is_file())


def everything(store: str, where: Path) -> list[bytes]:
    """The store's bytes (:func:`store_texts`) and its exported files' bytes."""
    return store_texts(store) + [path.read_bytes() for path in exported(store, where)]


def found(secrets: list[str], haystack: list[bytes]) -> list[str]:
    """The secrets (ASCII/UTF-8 or UTF-16) found anywhere in ``haystack``."""
    return [
        secret
        for secret in secrets
        if any(
            encoded in text
            for encoded in {secret.encode(), secret.encode("utf-16-le")}
            for text in haystack
        )
    ]


def read_all(paths: list[Path]) -> list[pydicom.Dataset]:
    """The exported files as pydicom reads them (File Meta included)."""
    return [pydicom.dcmread(path) for path in paths]

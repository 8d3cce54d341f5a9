"""De-identification reports, kept in the store's private folder:
``.dicomweb-archive/deidentification/<stamp>.json`` and ``<stamp>.txt`` (never served)."""

from __future__ import annotations

from dicomweb_archive.store.storage import PRIVATE, Storage

REPORTS = PRIVATE + "deidentification/"


def put_report(storage: Storage, stamp: str, report: bytes, summary: str) -> tuple[str, str]:
    """Store a report (JSON) and its summary (text) under ``stamp``; their keys."""
    json_key, text_key = f"{REPORTS}{stamp}.json", f"{REPORTS}{stamp}.txt"
    storage.put(json_key, report, content_type="application/json")
    storage.put(text_key, summary.encode("utf-8"), content_type="text/plain")
    return json_key, text_key

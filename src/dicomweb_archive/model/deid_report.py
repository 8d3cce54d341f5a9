"""The de-identification report a curator signs (PS3.15 E.1.1: what the de-identifier did):
per attribute (tag and keyword) each kind of change made and to how many instances, the
instances to review and why, the key's fingerprint, the table's edition and the options.

It never holds an original value: attributes are named by tag and keyword, instances by their
de-identified SOP Instance UID, the key by a hash of it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.datadict import keyword_for_tag

from dicomweb_archive.model.deid import Profile
from dicomweb_archive.model.standard_tables import EDITION, OPTIONS_EDITION, SAFE_PRIVATE_EDITION

REPORT_VERSION = 1


def key_fingerprint(key: bytes) -> str:
    """The SHA-256 of the key, hex (a run's key can be recognised; it cannot be recovered)."""
    return hashlib.sha256(key).hexdigest()


def build_report(
    profile: Profile,
    *,
    applied: Iterable[set[tuple[int, str]]],
    review: Mapping[str, list[str]],
    failed: Mapping[str, str],
    created: str,
    cleaned: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The report as JSON: ``applied`` holds one set of (tag, what was done) per instance
    de-identified; ``review`` and ``failed`` map de-identified SOP Instance UIDs to reasons
    (worded without values), ``cleaned`` those whose pixels were cleaned (PS3.15 E.3.1) to
    the line of the rule that did it."""
    rules = profile.pixel_rules
    counts: Counter[tuple[int, str]] = Counter()
    instances = 0
    for one in applied:
        instances += 1
        counts.update(one)
    attributes = [
        {
            "tag": f"({tag >> 16:04X},{tag & 0xFFFF:04X})",
            "keyword": _keyword(tag),
            "action": action,
            "instances": number,
        }
        for (tag, action), number in sorted(counts.items())
    ]
    return {
        "report_version": REPORT_VERSION,
        "created": created,
        "profile": "PS3.15 E.1 Basic Application Level Confidentiality Profile",
        "table_edition": EDITION,
        "option_columns_edition": OPTIONS_EDITION,
        "safe_private_edition": SAFE_PRIVATE_EDITION,
        "options": sorted(profile.options),
        "method_codes": [list(code) for code in profile.method_codes()],
        "longitudinal_temporal_information_modified": profile.temporal_information(),
        "patient_map": profile.patients is not None,
        "key_sha256": key_fingerprint(profile.key),
        "instances_deidentified": instances,
        "instances_failed": [{"sop_instance_uid": s, "reason": r} for s, r in failed.items()],
        "pixel_rules": rules.name if rules is not None else None,
        "instances_pixels_cleaned": [
            {"sop_instance_uid": sop, "rule_line": line} for sop, line in (cleaned or {}).items()
        ],
        "instances_to_review": [
            {"sop_instance_uid": sop, "reasons": reasons} for sop, reasons in review.items()
        ],
        "attributes": attributes,
    }


def report_summary(report: Mapping[str, Any]) -> str:
    """The report as text a person reads and signs."""
    lines = [
        "De-identification report",
        f"created: {report['created']}",
        f"profile: {report['profile']}",
        f"table: {report['table_edition']}; option columns: {report['option_columns_edition']}",
        f"safe private attributes: {report['safe_private_edition']}",
        "options: " + (", ".join(report["options"]) or "none"),
        "method codes (0012,0064): " + ", ".join(c[0] for c in report["method_codes"]),
        "Longitudinal Temporal Information Modified (0028,0303): "
        + report["longitudinal_temporal_information_modified"],
        "patients: " + ("from the patient map" if report["patient_map"] else "keyed pseudonyms"),
        f"key SHA-256: {report['key_sha256']}",
        f"instances de-identified: {report['instances_deidentified']}",
        f"instances that could not be: {len(report['instances_failed'])}",
    ]
    lines += [f"  {f['sop_instance_uid']}: {f['reason']}" for f in report["instances_failed"]]
    rules = report["pixel_rules"]
    lines.append(f"pixel cleaning rules: {rules}" if rules else "pixel cleaning rules: none")
    lines.append(f"instances with pixels cleaned: {len(report['instances_pixels_cleaned'])}")
    lines += [
        f"  {item['sop_instance_uid']}: rule of line {item['rule_line']}"
        for item in report["instances_pixels_cleaned"]
    ]
    lines.append(f"instances to review: {len(report['instances_to_review'])}")
    lines += [
        f"  {item['sop_instance_uid']}: {'; '.join(item['reasons'])}"
        for item in report["instances_to_review"]
    ]
    lines.append("attributes (tag keyword: action, instances):")
    lines += [
        f"  {a['tag']} {a['keyword']}: {a['action']}, {a['instances']}"
        for a in report["attributes"]
    ]
    lines += ["", "reviewed and approved by: ____________________  date: __________", ""]
    return "\n".join(lines)


def _keyword(tag: int) -> str:
    if tag >> 16 & 1:
        return "(private)"
    if 0x50000000 <= tag < 0x51000000 or 0x60000000 <= tag < 0x61000000:
        return keyword_for_tag(tag & 0xFF00FFFF) or "(unknown)"  # repeating groups
    return keyword_for_tag(tag) or "(unknown)"

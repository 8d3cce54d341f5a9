"""UID checks: what may become a key step (safe), and what PS3.5 9.1 calls a UID (conformant).

Real archives hold UIDs that PS3.5 9.1 does not allow (a hexadecimal hash, components with
leading zeros); pydicom and Orthanc read them, so they are stored, with a warning and a flag
(``docs/spec/store-layout.md``, "UIDs become keys"). What could leave the store, collide with
the layout's own names or break a URL is refused.
"""

from __future__ import annotations

import re

from dicomweb_archive.errors import MissingUidError, UnsafeUidError

#: PS3.5 9.1: components of digits, a component of more than one digit without a leading
#: zero, separated by dots, at most 64 characters.
_CONFORMANT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: safe as a key step and a URL path segment (RFC 3986 unreserved characters but ``~``): it
#: begins and ends with a letter or digit, so it is never ``.``, ``..``, a hidden name or an
#: option
_SAFE = re.compile(r"[0-9A-Za-z]([0-9A-Za-z._-]*[0-9A-Za-z])?")
#: names the layout uses beside UIDs in the same folder (``studies/index.json.gz``)
_LAYOUT_SUFFIX = ".gz"
MAX_UID_LENGTH = 64


def is_conformant_uid(value: str) -> bool:
    """True when ``value`` is a UID as PS3.5 9.1 defines it."""
    return len(value) <= MAX_UID_LENGTH and _CONFORMANT.fullmatch(value) is not None


def is_safe_uid(value: str) -> bool:
    """True when ``value`` can be a key step and a URL path segment: 1 to 64 letters, digits,
    ``.``, ``-`` or ``_``, beginning and ending with a letter or digit, without ``..``, not
    ending in ``.gz`` (the layout's own file names)."""
    return (
        len(value) <= MAX_UID_LENGTH
        and _SAFE.fullmatch(value) is not None
        and ".." not in value
        and not value.endswith(_LAYOUT_SUFFIX)
    )


def check_uid(value: str | None, keyword: str, *, source: str) -> str:
    """Return ``value`` if it is safe to store, else raise naming the attribute and ``source``."""
    if not value:
        raise MissingUidError(f"{source}: {keyword} is missing or empty")
    if not is_safe_uid(value):
        shown = value if value.isprintable() and len(value) <= 80 else repr(value[:80])
        raise UnsafeUidError(
            f"{source}: {keyword} {shown!s} is not a valid UID and cannot be stored: a UID is "
            f"kept when it has 1 to {MAX_UID_LENGTH} letters, digits, '.', '-' or '_', begins "
            "and ends with a letter or digit, has no '..' and does not end in '.gz' (PS3.5 9.1 "
            "allows digits and dots)"
        )
    return value


def nonconformant_uid_warnings(uids: dict[str, str]) -> list[str]:
    """A warning for each of ``uids`` (keyword -> value, all safe) that is not conformant."""
    return [
        f"{keyword} {value} is not a conformant UID (PS3.5 9.1: digits and dots, no leading "
        "zeros, at most 64 characters); stored as received"
        for keyword, value in uids.items()
        if not is_conformant_uid(value)
    ]

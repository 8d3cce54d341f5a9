"""UID checks (PS3.5 9.1): a UID becomes a directory name, so it must be a real UID."""

from __future__ import annotations

import re

from dicomweb_archive.errors import MissingUidError, UnsafeUidError

#: PS3.5 9.1: digits and dots, components without leading zeros, at most 64 characters.
#: Leading zeros are tolerated (many archives hold such UIDs); they cannot form a path.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_LENGTH = 64


def is_safe_uid(value: str) -> bool:
    """True when ``value`` is a syntactically valid UID and therefore a safe path component."""
    return len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None


def check_uid(value: str | None, keyword: str, *, source: str) -> str:
    """Return ``value`` if it is a usable UID, else raise naming the attribute and ``source``."""
    if not value:
        raise MissingUidError(f"{source}: {keyword} is missing or empty")
    if not is_safe_uid(value):
        shown = value if value.isprintable() and len(value) <= 80 else repr(value[:80])
        raise UnsafeUidError(
            f"{source}: {keyword} {shown!s} is not a valid UID (PS3.5 9.1: digits and dots, "
            f"at most {MAX_UID_LENGTH} characters)"
        )
    return value

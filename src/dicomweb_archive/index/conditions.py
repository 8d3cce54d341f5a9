"""Query conditions as a tree without SQL in it (PS3.4 C.2.2.2 matching), for every backend.

A QIDO-RS search or an export ``--query`` becomes an :class:`All` of :class:`Match` nodes,
each naming a level, a column of the index and a kind of matching; a backend renders the tree
in its own dialect (``index/sqlite.py``). Kinds (PS3.4 C.2.2.2):

- ``uid``: list of UID matching, UIDs separated by ``\\`` or ``,`` (C.2.2.2.2);
- ``text``: single value matching with ``*`` and ``?`` wildcards (C.2.2.2.1, C.2.2.2.4);
- ``person``: as ``text``, case-insensitive (PN, C.2.2.2.1.1);
- ``date``: range matching ``from-to``, ``from-`` or ``-to`` (C.2.2.2.5), else as ``text``;
- ``list``: a multi-valued attribute (ModalitiesInStudy) matches when any of its values
  matches any of the key's values (separated by ``\\`` or ``,``);
- ``exact``: one value, no wildcards (the UIDs of a path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LEVELS = ("study", "series", "instance")
KINDS = ("uid", "text", "person", "date", "list", "exact")


@dataclass(frozen=True, slots=True)
class Match:
    """``column`` of ``level``'s table matches ``value`` by ``kind``."""

    level: str
    column: str
    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.level not in LEVELS or self.kind not in KINDS:
            raise ValueError(f"{self.level}/{self.kind}")
        if not re.fullmatch(r"[a-z_]+", self.column):
            raise ValueError(self.column)

    @property
    def universal(self) -> bool:
        """Universal matching (C.2.2.2.3): an empty value or ``*`` matches everything."""
        return self.kind != "exact" and self.value in {"", "*"}

    @property
    def uids(self) -> list[str]:
        return [u for u in re.split(r"[\\,]", self.value) if u]

    @property
    def range(self) -> tuple[str, str] | None:
        """(from, to) of a range match, either possibly empty; None when not a range."""
        if self.kind != "date" or "-" not in self.value:
            return None
        low, _, high = self.value.partition("-")
        return low, high


@dataclass(frozen=True, slots=True)
class All:
    """Every part matches (an empty ``All`` matches everything)."""

    parts: tuple[Match, ...] = ()

    def __and__(self, other: All) -> All:
        return All(self.parts + other.parts)

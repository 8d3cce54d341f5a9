"""Pixel cleaning rules (PS3.15 E.3.1, Clean Pixel Data Option): which instances get which
rectangles of their pixels blanked, as RSNA CTP's DicomPixelAnonymizer scripts say it.

A rules file is text, one rule per line (``docs/spec/deidentification.md``)::

    # Modality | Manufacturer | Manufacturer's Model Name | Rows x Columns : rectangles
    US | ACME Medical | Vivid* | 480x640 : 0,0,640,40  10,450,200,30@2-3

The four fields are matched against Modality (0008,0060), Manufacturer (0008,0070),
Manufacturer's Model Name (0008,1090) and Rows (0028,0010) x Columns (0028,0011); each is a
shell-style pattern (``*`` alone matches anything, an absent attribute included), compared
ignoring case and surrounding spaces. The first rule that matches an instance applies. A
rectangle is ``x,y,width,height`` in pixels (x from the left column, y from the top row, both
from 0), optionally ``@N`` or ``@N-M`` for frames N to M (1-based; default every frame); the
parts of a rectangle outside the image are ignored.

Pure: no filesystem, no pixels. A malformed file raises :class:`UsageError` naming its file and
line, before anything is changed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicomweb_archive.errors import UsageError

MODALITY = "00080060"
MANUFACTURER = "00080070"
MANUFACTURERS_MODEL_NAME = "00081090"
ROWS = "00280010"
COLUMNS = "00280011"
_RECTANGLE = re.compile(r"(\d+),(\d+),(\d+),(\d+)(?:@(\d+)(?:-(\d+))?)?")
_SIZE = re.compile(r"(\d+|\*)\s*[xX]\s*(\d+|\*)")


@dataclass(frozen=True, slots=True)
class Rectangle:
    """Pixels x..x+width-1 of rows y..y+height-1, on frames ``first`` to ``last`` (1-based,
    inclusive; None: every frame)."""

    x: int
    y: int
    width: int
    height: int
    first: int | None = None
    last: int | None = None

    def on_frame(self, number: int) -> bool:
        """Whether the rectangle is blanked on frame ``number`` (1-based)."""
        if self.first is None:
            return True
        return self.first <= number <= (self.last if self.last is not None else self.first)

    def clipped(self, rows: int, columns: int) -> tuple[slice, slice] | None:
        """The (rows, columns) slices of the rectangle inside a ``rows`` x ``columns`` image,
        or None when none of it is inside."""
        top, bottom = min(self.y, rows), min(self.y + self.height, rows)
        left, right = min(self.x, columns), min(self.x + self.width, columns)
        if top >= bottom or left >= right:
            return None
        return slice(top, bottom), slice(left, right)


@dataclass(frozen=True, slots=True)
class PixelRule:
    """One line of a rules file: four patterns and the rectangles they blank."""

    line: int
    modality: str
    manufacturer: str
    model: str
    rows: str
    columns: str
    rectangles: tuple[Rectangle, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Whether an instance (its DICOM JSON, PS3.18 F.2) is one this rule is for."""
        return all(
            _matches(pattern, _first(metadata, key))
            for pattern, key in (
                (self.modality, MODALITY),
                (self.manufacturer, MANUFACTURER),
                (self.model, MANUFACTURERS_MODEL_NAME),
                (self.rows, ROWS),
                (self.columns, COLUMNS),
            )
        )

    def frames(self, count: int, rows: int, columns: int) -> dict[int, list[tuple[slice, slice]]]:
        """Frame number -> the (rows, columns) slices to blank on it, for an image of
        ``count`` frames of ``rows`` x ``columns``: only the frames a rectangle touches."""
        out: dict[int, list[tuple[slice, slice]]] = {}
        for rectangle in self.rectangles:
            area = rectangle.clipped(rows, columns)
            if area is None:
                continue
            for number in range(1, count + 1):
                if rectangle.on_frame(number):
                    out.setdefault(number, []).append(area)
        return out


@dataclass(frozen=True, slots=True)
class PixelRules:
    """The rules of one file, in order, and the file's name (for messages)."""

    name: str
    rules: tuple[PixelRule, ...]

    def match(self, metadata: Mapping[str, Any]) -> PixelRule | None:
        """The first rule that matches an instance, or None."""
        return next((rule for rule in self.rules if rule.matches(metadata)), None)


def read_pixel_rules(text: str, *, name: str) -> PixelRules:
    """The rules of a rules file's text (see the module docstring); raises
    :class:`UsageError` naming ``name`` and the line of the first malformed rule."""
    rules: list[PixelRule] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        rules.append(_rule(line, number, f"{name}, line {number}"))
    if not rules:
        raise UsageError(f"{name}: no pixel cleaning rule in the file")
    return PixelRules(name, tuple(rules))


def _rule(line: str, number: int, where: str) -> PixelRule:
    patterns, colon, rectangles = line.rpartition(":")
    fields = [f.strip() for f in patterns.split("|")]
    if not colon or len(fields) != 4 or not all(fields):
        raise UsageError(
            f"{where}: give Modality | Manufacturer | Manufacturer's Model Name | "
            "Rows x Columns : rectangles"
        )
    size = _SIZE.fullmatch(fields[3])
    if fields[3] == "*":
        rows = columns = "*"
    elif size is not None:
        rows, columns = size.group(1), size.group(2)
    else:
        raise UsageError(f"{where}: the size is ROWSxCOLUMNS (such as 480x640) or *")
    found = [_rectangle(text, where) for text in rectangles.split()]
    if not found:
        raise UsageError(f"{where}: no rectangle after the colon (x,y,width,height)")
    return PixelRule(number, fields[0], fields[1], fields[2], rows, columns, tuple(found))


def _rectangle(text: str, where: str) -> Rectangle:
    found = _RECTANGLE.fullmatch(text)
    if found is None:
        raise UsageError(
            f"{where}: {text!r} is not a rectangle x,y,width,height[@FRAME[-FRAME]] in pixels"
        )
    x, y, width, height = (int(found.group(i)) for i in range(1, 5))
    first = int(found.group(5)) if found.group(5) else None
    last = int(found.group(6)) if found.group(6) else first
    if width == 0 or height == 0:
        raise UsageError(f"{where}: {text!r} has no area (width and height must be at least 1)")
    if first is not None and (first < 1 or last is None or last < first):
        raise UsageError(f"{where}: {text!r}: frames are numbered from 1, first to last")
    return Rectangle(x, y, width, height, first, last)


def _first(metadata: Mapping[str, Any], key: str) -> str:
    values = metadata.get(key, {}).get("Value") or []
    return str(values[0]).strip() if values and values[0] is not None else ""


def _matches(pattern: str, value: str) -> bool:
    return pattern == "*" or fnmatch.fnmatchcase(value.casefold(), pattern.casefold())

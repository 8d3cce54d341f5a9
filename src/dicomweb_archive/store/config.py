"""A store's recorded configuration: ``.dicomweb-archive/config.json`` (format version 2).

Every setting that shapes the store's objects is recorded when the store is created and read
from here by every command (``docs/spec/store-layout.md``): the folders of the deduplicated
data (``--path-instances``, ``--path-deduplicated``), the inline limits of binary values
(``-m``, ``-M``; an edit re-derives metadata with them), the index backend, and the default
recompression of ingest. A command-line value that disagrees with a recorded layout setting
is refused (:class:`~dicomweb_archive.errors.StoreConfigError`); recompression may be chosen
per run (each instance's info record says how its frames are stored).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from dicomweb_archive.errors import StoreConfigError

#: 1: stores written before the configuration existed (no config.json); 2: this format.
FORMAT_VERSION = 2
FORMAT_NAME = "dicomweb-archive store"
DEFAULT_INLINE_PUBLIC = 131074
DEFAULT_INLINE_PRIVATE = 64


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The recorded settings of one store."""

    version: int = FORMAT_VERSION
    path_instances: str = "instances"
    path_deduplicated: str = "deduplicated"
    #: ``-m`` / ``-M``; None in a store upgraded from format 1 until a command records them
    inline_public: int | None = DEFAULT_INLINE_PUBLIC
    inline_private: int | None = DEFAULT_INLINE_PRIVATE
    #: the default recompression of ingest (``Recompression.to_json``), None: frames as
    #: received; :meth:`dicomweb_archive.archive.Archive.create` always records one
    recompression: dict[str, Any] | None = None
    #: the index: ``sqlite`` (the store's own SQLite file, an in-memory database for a
    #: memory store, a cache file of this machine for an S3 store), ``sqlite:///<absolute
    #: path>``, or ``postgresql://...`` (``index/postgres.py``)
    index: str = "sqlite"
    #: False while a store is being built to appear all at once (de-identification into a
    #: new store); such a store is not opened
    complete: bool = True
    created_by: str = ""

    def to_json(self) -> bytes:
        value = {"format": FORMAT_NAME, **asdict(self)}
        return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, location: str) -> StoreConfig:
        try:
            value = json.loads(data)
            if not isinstance(value, dict) or value.pop("format", None) != FORMAT_NAME:
                raise ValueError("not a store configuration")
            version = value.get("version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise StoreConfigError(
                    f"{location}: the store has format version {version}; this dicomweb-archive "
                    f"reads versions up to {FORMAT_VERSION} (upgrade dicomweb-archive)"
                )
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in value.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise StoreConfigError(
                f"{location}: .dicomweb-archive/config.json is unreadable ({exc})"
            ) from exc

    def agreeing(self, **given: Any) -> StoreConfig:
        """The configuration with settings from the command line: a layout setting that
        disagrees with the recorded one is an error; one not yet recorded (None) is recorded.
        Settings given as None were not given."""
        updates = {}
        for name, value in given.items():
            if value is None:
                continue
            recorded = getattr(self, name)
            if recorded is None:
                updates[name] = value
            elif recorded != value:
                option = OPTIONS.get(name, name)
                raise StoreConfigError(
                    f"{option} {value} disagrees with the store, which was created with "
                    f"{option} {recorded} (leave the option out to use the store's)"
                )
        return replace(self, **updates) if updates else self


#: configuration field -> the command-line option that sets it
OPTIONS = {
    "path_instances": "--path-instances",
    "path_deduplicated": "--path-deduplicated",
    "inline_public": "-m/--maximum-inline-public-length",
    "inline_private": "-M/--maximum-inline-private-length",
    "index": "--index-url",
}

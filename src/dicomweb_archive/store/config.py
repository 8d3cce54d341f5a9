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
from urllib.parse import urlsplit, urlunsplit

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
    #: path>``, or ``postgresql://...`` (``index/postgres.py``); recorded without its
    #: password (:func:`without_password`), which a run that was given one keeps in memory
    index: str = "sqlite"
    #: False while a store is being built to appear all at once (de-identification into a
    #: new store); such a store is not opened
    complete: bool = True
    created_by: str = ""

    def to_json(self) -> bytes:
        """The recorded form: the index URL without its password (anyone who reads the
        store's private prefix reads this file)."""
        value = {"format": FORMAT_NAME, **asdict(self), "index": without_password(self.index)}
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
            elif name == "index" and without_password(value) == without_password(recorded):
                if value != recorded:  # the given password, for this run only
                    updates[name] = value
            elif recorded != value:
                option = OPTIONS.get(name, name)
                shown, kept = (
                    (without_password(value), without_password(recorded))
                    if name == "index"
                    else (value, recorded)
                )
                raise StoreConfigError(
                    f"{option} {shown} disagrees with the store, which was created with "
                    f"{option} {kept} (leave the option out to use the store's)"
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


def without_password(url: str) -> str:
    """An index URL without the password of its user (``postgresql://USER:PASSWORD@HOST``
    becomes ``postgresql://USER@HOST``): libpq finds the password in ``PGPASSWORD`` or
    ``~/.pgpass`` instead (PostgreSQL documentation, libpq 34.16 and 34.17)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def has_password(url: str) -> bool:
    """Whether an index URL carries a password (which the store does not record)."""
    return without_password(url) != url

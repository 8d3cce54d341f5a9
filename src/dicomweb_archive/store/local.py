"""The storage protocol on a local directory (``docs/spec/store-layout.md``).

Each object is a file named by its key. A put writes a temporary file under
``.dicomweb-archive/local/tmp/`` and moves it into place with ``os.replace`` (atomic on POSIX), so a
reader sees the old file or the new one; "only if absent" links the temporary file into place
(``link`` fails when the name exists). Copies are hard links where the file system allows:
frames set aside or restored cost no space. The lease is ``flock`` on
``.dicomweb-archive/local/lock``; "only if unchanged" puts rely on it (a directory has no atomic
compare-and-swap), which every writer holds. Out-of-space errors become
:class:`~dicomweb_archive.errors.StoreFullError`, with the temporary file removed. Reads never
follow a link: an object that is a link, or whose path resolves outside the store, is not read
(:class:`~dicomweb_archive.errors.OutsideStoreError`).

``.dicomweb-archive/local/`` belongs to this backend (temporary files, the lock, and the
default place of the SQLite index); it is not part of the store's objects.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from dicomweb_archive.errors import (
    NoSuchObjectError,
    ObjectExistsError,
    OutsideStoreError,
    PreconditionFailedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
)
from dicomweb_archive.store.keys import JOURNAL, STAGING
from dicomweb_archive.store.storage import (
    LEASE_WAIT_NOTICE_SECONDS,
    PRIVATE,
    Data,
    ObjectInfo,
    check_key,
    lease_wait_notice,
)

#: Environment hook for crash tests: after this many completed writes, the process kills itself.
CRASH_AFTER_ENV = "DICOMWEB_ARCHIVE_CRASH_AFTER_WRITES"
_writes = itertools.count(1)
#: this backend's own files, outside the object namespace
LOCAL = PRIVATE + "local"
TMP = LOCAL + "/tmp"  # noqa: S108 - the store's own folder, not the system's /tmp
LOCK = LOCAL + "/lock"
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FOLDER_ATTEMPTS = 8
T = TypeVar("T")


def count_write() -> None:
    """Support the crash-safety tests: stop dead after the N-th write when asked to."""
    limit = os.environ.get(CRASH_AFTER_ENV)
    if limit is not None and next(_writes) >= int(limit):
        os._exit(137)


class LocalStorage:
    """A store in the directory ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._base = str(root)
        self._tmp_dir = str(root / TMP)
        self._resolved = root.resolve()
        self._inside = str(self._resolved).rstrip("/") + "/"  # resolved paths in the store
        #: puts written without fsync since the last barrier
        self._unflushed = False
        self._unsynced: set[str] = set()  # folders with durable objects whose names are not yet

    @property
    def location(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _file(self, key: str) -> str:
        """The path of ``key`` as a string (the hot paths avoid pathlib)."""
        return f"{self._base}/{check_key(key)}"

    def inside(self, key: str) -> Path:
        """The path of ``key``, refused when it resolves outside the store (see
        :meth:`_open_inside`)."""
        os.close(self._open_inside(key))
        return self.path(key)

    def _open_inside(self, key: str) -> int:
        """A read-only descriptor of ``key``'s file: the one place every read opens a file.
        The file itself must not be a link (``O_NOFOLLOW``), and the file opened must lie
        inside the store (its path as the kernel resolved it: a folder replaced by a link out
        of the store is caught too, with no window between the check and the read).

        Raises FileNotFoundError (and the like) when absent, OutsideStoreError when elsewhere.
        """
        name = self._file(key)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise OutsideStoreError(
                f"{self.location}: {key} is a link, which the store never makes (it may lead "
                "outside the store); not read"
            ) from exc
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc: resolve the name instead
            real = os.path.realpath(name)
        if not _is_file(os.fstat(fd).st_mode):
            os.close(fd)
            raise IsADirectoryError(name)
        # a string test (pathlib on every read was a tenth of the CPU export spends beside
        # decoding): the kernel's path is absolute and normalised
        if not real.startswith(self._inside):
            os.close(fd)
            raise OutsideStoreError(
                f"{self.location}: {key} resolves outside the store (a link); not read"
            )
        return fd

    # -- reads -----------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return os.fdopen(self._open_inside(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NoSuchObjectError(f"{self.location}: {key} is missing") from exc

    def head(self, key: str) -> ObjectInfo | None:
        try:
            stat = os.stat(self._file(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not _is_file(stat.st_mode):
            return None
        return ObjectInfo(key, stat.st_size, _etag(stat))

    def list_prefix(self, prefix: str) -> Iterator[ObjectInfo]:
        directory, _, start = prefix.rpartition("/")
        base = self.root / directory if directory else self.root
        if not base.is_dir():
            return
        lead = f"{directory}/" if directory else ""
        for name in sorted(p.name for p in base.iterdir()):
            if not name.startswith(start):
                continue
            key = lead + name
            if key == LOCAL:
                continue
            path = base / name
            if path.is_dir() and not path.is_symlink():
                yield from self.list_prefix(key + "/")
            else:
                info = self.head(key)
                if info is not None:
                    yield info

    def children(self, prefix: str) -> list[str]:
        base = f"{self._base}/{prefix.rstrip('/')}" if prefix else self._base
        try:
            entries = sorted(os.scandir(base), key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for entry in entries:
            if prefix + entry.name == LOCAL:
                continue
            out.append(entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name)
        return out

    # -- writes ----------------------------------------------------------------------------
    def put(
        self,
        key: str,
        data: Data,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        fresh: bool = False,
    ) -> ObjectInfo:
        del content_type, content_encoding  # a directory keeps no headers
        final = self._file(key)
        if if_match is not None:
            current = self.head(key)
            if current is None or current.etag != if_match:
                raise PreconditionFailedError(f"{self.location}: {key} changed meanwhile")
        durable = key.startswith(STAGING) or key == JOURNAL  # a commit depends on them
        stat = None
        if key.startswith(STAGING) or fresh:
            # read by nothing until its journal (or commit marker) exists: no rename
            stat = self._write(final, data, durable=durable)
        if stat is None:  # not fresh after all (a leftover), or an ordinary put
            temp, stat = self._write_temp(data, durable=durable)
            try:
                self._place(temp, final, if_absent=if_absent, key=key)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
            if if_absent:
                os.unlink(temp)  # linked into place
        if durable:
            self._unsynced.add(os.path.dirname(final))
        else:
            self._unflushed = True
        count_write()
        return ObjectInfo(key, stat.st_size, _etag(stat))

    def copy(self, source: str, target: str) -> None:
        """A hard link where the file system allows. A staging object is moved instead: its
        journal is its only user, and applies each once (``store/journal.py``)."""
        origin = self._file(source)
        final = self._file(target)
        if not os.path.isfile(origin):
            raise NoSuchObjectError(f"{self.location}: {source} is missing")
        if source.startswith(STAGING) and not target.startswith(STAGING):
            self._place(origin, final, if_absent=False, key=target)
            count_write()
            return
        os.makedirs(self._tmp_dir, exist_ok=True)
        temp = f"{self._tmp_dir}/{uuid.uuid4().hex}.tmp"
        try:
            try:
                os.link(origin, temp)
            except FileNotFoundError as exc:
                raise NoSuchObjectError(f"{self.location}: {source} is missing") from exc
            except OSError:  # another file system, or links not allowed: copy the bytes
                with self.open(source) as handle:
                    temp, _ = self._write_temp(iter(lambda: handle.read(1 << 20), b""))
            self._place(temp, final, if_absent=False, key=target)
            if target.startswith(STAGING):
                self._unsynced.add(os.path.dirname(final))
            else:
                self._unflushed = True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        count_write()

    def delete(self, key: str) -> None:
        """Delete the object; folders left empty go too (also when the object was missing:
        a failed write may have left its folder), as a prefix without objects does not exist
        on object storage."""
        path = self.path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            self._prune(path.parent)
            return
        except IsADirectoryError as exc:
            raise StoreError(f"{self.location}: {key} is a directory, not an object") from exc
        self._prune(path.parent)
        count_write()

    def delete_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise StoreError(f"not a prefix: {prefix!r}")
        directory = self.path(prefix.rstrip("/"))
        if directory.is_dir() and not directory.is_symlink():
            shutil.rmtree(directory)
            self._prune(directory.parent)
            count_write()

    def barrier(self) -> None:
        """Make every put so far durable. Staged objects and journals are written with
        ``fsync``: the folders that received them are made durable too (their names). Other
        puts (an instance's frames and info record, the objects a journal applies) are written
        without it, for speed; when there were any since the last barrier, ``sync`` flushes
        them, so a caller that answers "stored" after a barrier (``scp``) answers the truth."""
        if self._unflushed:
            self._unflushed = False
            os.sync()
        folders, self._unsynced = self._unsynced, set()
        for folder in folders:
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- the lease -------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self, holder: str, *, wait: bool = True) -> Iterator[None]:
        path = self.root / LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                if not wait:
                    raise StoreLockedError(
                        f"{self.location}: another process is writing ({_read_holder(fd)})"
                    ) from exc
                self._wait_for_lease(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode("utf-8", "replace"), 0)
            self._sweep_tmp()  # temporary files of a killed writer: only writers make them
            yield
        finally:
            os.close(fd)

    def _wait_for_lease(self, fd: int) -> None:
        """Block until the lease is free; once the wait passes a second, say whose it is."""

        def notice() -> None:
            holder = _read_holder(fd) or "another process"
            lease_wait_notice(f"{self.location}: waiting for the store's lease held by {holder}")

        timer = threading.Timer(LEASE_WAIT_NOTICE_SECONDS, notice)
        timer.daemon = True
        timer.start()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            timer.cancel()

    def lease_holder(self) -> str | None:
        path = self.root / LOCK
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd) or "another process"
            return None
        finally:
            os.close(fd)

    # -- helpers ---------------------------------------------------------------------------
    def _write(self, path: str, data: Data, *, durable: bool) -> os.stat_result | None:
        """Create ``path`` and write it in place (no rename): only for objects nothing reads
        yet. None when a file is there already (left by an interrupted writer)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = _in_folder(lambda: os.open(path, flags, 0o644), path)
        except FileExistsError:
            return None
        except OSError as exc:
            self._prune(Path(path).parent)
            _raise_full(exc, self.location)
            raise
        try:
            with os.fdopen(fd, "wb") as handle:
                return _fill(handle, data, durable=durable)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._prune(Path(path).parent)
            if isinstance(exc, OSError):
                _raise_full(exc, self.location)
            raise

    def _write_temp(self, data: Data, *, durable: bool = False) -> tuple[str, os.stat_result]:
        name = f"{self._tmp_dir}/{uuid.uuid4().hex}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            try:
                fd = os.open(name, flags, 0o644)
            except FileNotFoundError:
                os.makedirs(self._tmp_dir, exist_ok=True)
                fd = os.open(name, flags, 0o644)
            with os.fdopen(fd, "wb") as handle:
                stat = _fill(handle, data, durable=durable)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            _raise_full(exc, self.location)
            raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise
        return name, stat

    def _place(self, temp: str, final: str, *, if_absent: bool, key: str) -> None:
        try:
            _in_folder(lambda: self._link_or_replace(temp, final, if_absent=if_absent), final)
        except FileExistsError as exc:
            raise ObjectExistsError(f"{self.location}: {key} exists") from exc
        except OSError as exc:
            self._prune(Path(final).parent)
            _raise_full(exc, self.location)
            raise

    @staticmethod
    def _link_or_replace(temp: str, final: str, *, if_absent: bool) -> None:
        if if_absent:
            os.link(temp, final)
        else:
            os.replace(temp, final)

    def _prune(self, directory: Path) -> None:
        """Remove directories left empty by a delete, up to the store's root."""
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _sweep_tmp(self) -> None:
        """Remove temporary files left by a killed writer (only ever under the lease)."""
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self._tmp_dir):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(entry.path)


def _in_folder(create: Callable[[], T], path: str) -> T:
    """``create()``, making the folder of ``path`` when it is missing. A delete in another
    thread may prune a folder just made and still empty (:meth:`LocalStorage._prune`): then
    make it again."""
    for _attempt in range(_FOLDER_ATTEMPTS):
        try:
            return create()
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
    return create()


def _raise_full(exc: OSError, location: str) -> None:
    if exc.errno in _FULL:
        raise StoreFullError(f"{location}: no space left on the device") from exc


def _fill(handle: BinaryIO, data: Data, *, durable: bool) -> os.stat_result:
    """Write ``data`` to an open file; with ``durable`` make it reach the disk. Returns the
    file's status (size and etag without another ``stat``)."""
    if isinstance(data, bytes | memoryview):
        handle.write(data)
    else:
        for chunk in data:
            handle.write(chunk)
    handle.flush()
    if durable:
        os.fsync(handle.fileno())
    return os.fstat(handle.fileno())


def _etag(stat: os.stat_result) -> str:
    return f"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"


def _is_file(mode: int) -> bool:
    return (mode & 0o170000) == 0o100000


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 400, 0).decode("utf-8", "replace")
    except OSError:
        return ""

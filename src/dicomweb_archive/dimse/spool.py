"""Where pynetdicom writes the data sets ``scp`` receives (``STORE_RECV_CHUNKED_DATASET``).

pynetdicom writes each incoming data set to a temporary file in the system's temporary folder
and leaves it there when the association is aborted mid-transfer (a partial data set: patient
data). The server points those files into a folder of its own, ``dicomweb-archive-scp-<pid>-*``
(mode 0700) in the temporary folder, removed when the last server of the process stops; the
file of a data set an association's end cut short is closed and removed at once; a folder left
by a process that no longer runs (a killed ``scp``) is removed when the next one starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from functools import partial
from pathlib import Path
from typing import Any

from pynetdicom import dimse_messages

PREFIX = "dicomweb-archive-scp-"
_lock = threading.Lock()
_users = 0
_folder: Path | None = None
#: the name pynetdicom's message decoding calls to make each data set's file
_FACTORY = "NamedTemporaryFile"
_original = vars(dimse_messages)[_FACTORY]


def open_spool() -> Path:
    """The process's spool folder (made, and pynetdicom pointed at it, for the first user)."""
    global _users, _folder  # noqa: PLW0603 - one spool per process, as pynetdicom's setting
    with _lock:
        _sweep()
        if _folder is None:
            _folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
            setattr(dimse_messages, _FACTORY, partial(_original, dir=_folder))
        _users += 1
        return _folder


def close_spool() -> None:
    """One user fewer; the last removes the folder with what aborted transfers left in it."""
    global _users, _folder  # noqa: PLW0603
    with _lock:
        _users -= 1
        if _users == 0 and _folder is not None:
            setattr(dimse_messages, _FACTORY, _original)
            shutil.rmtree(_folder, ignore_errors=True)
            _folder = None


def discard_partial(assoc: Any) -> None:
    """Close and remove the file of a data set whose transfer the association's end cut
    short (pynetdicom keeps it open in the message being decoded)."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    with contextlib.suppress(OSError):
        handle.close()
        Path(handle.name).unlink(missing_ok=True)


def _sweep() -> None:
    """Remove the spool folders of processes that no longer run."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        pid = folder.name[len(PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

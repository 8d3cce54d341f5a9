"""Libraries' warnings (pydicom's about the values it reads) never reach a command's stderr
raw (a source path, a line of code, ``UserWarning``): ``mkdicomweb`` and ``scp`` leave them
out, or with -v give each as one ``warning:`` line (``cli/common.py``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import CTImageStorage
from pynetdicom import AE

from dicomweb_archive import Archive
from tests.factory import make_ct, uid

RAW = re.compile(r"UserWarning|\.py:\d+")
SAID = "warning: Unknown encoding 'ISO_IR 999' - using default encoding instead"


def _unknown_charset(number: int) -> Dataset:
    """A CT whose Specific Character Set pydicom does not know (it warns when decoding)."""
    ds = make_ct(study=uid("8.1"), series=uid("8.1.1"), sop=uid(f"8.1.1.{number}"))
    ds.SpecificCharacterSet = "ISO_IR 999"
    ds.PatientName = "M\xfcller".encode("latin-1")
    return ds


def _command(name: str, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / name), *args]


def test_mkdicomweb_shows_library_warnings_only_as_our_lines(tmp_path: Path) -> None:
    """mkdicomweb: no raw warning on stderr; with -v one worded line."""
    (tmp_path / "in").mkdir()
    _unknown_charset(1).save_as(tmp_path / "in" / "a.dcm", enforce_file_format=True)
    for verbose in ((), ("-v",)):
        store = str(tmp_path / f"store{len(verbose)}")
        result = subprocess.run(
            _command("mkdicomweb", *verbose, "-o", store, str(tmp_path / "in")),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert not RAW.search(result.stderr), result.stderr
        assert (SAID in result.stderr.splitlines()) == bool(verbose), result.stderr


def test_scp_shows_no_raw_library_warning(tmp_path: Path) -> None:
    """scp: a received data set pydicom warns about is stored; stderr has no raw warning."""
    store = str(tmp_path / "store")
    Archive.create(store).close()
    with subprocess.Popen(
        _command("dicomweb-archive", "scp", "-o", store, "--host", "127.0.0.1", "--port", "0"),
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    ) as process:
        assert process.stderr is not None
        first = process.stderr.readline()
        port = int(first.strip().rsplit(":", 1)[1])
        try:
            ae = AE(ae_title="TESTSCU")
            ae.add_requested_context(CTImageStorage)
            assoc = ae.associate("127.0.0.1", port, ae_title="DICOMWEB")
            assert assoc.is_established
            assert assoc.send_c_store(_unknown_charset(2)).Status == 0
            assoc.release()
        finally:
            process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        assert process.wait(timeout=60) == 0
    assert not RAW.search(rest), rest
    assert "1 stored, 0 unchanged (stored already), 0 failed" in rest, rest

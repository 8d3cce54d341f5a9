"""store/local.py: every read opens its file in one place, which never leaves the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomweb_archive.errors import NoSuchObjectError, OutsideStoreError
from dicomweb_archive.store.local import LocalStorage


def test_a_folder_linked_out_of_the_store_is_not_read(tmp_path: Path) -> None:
    """A folder replaced by a link to a folder outside the store: its files are not read,
    even after a read of the same folder succeeded before (no remembered answer)."""
    storage = LocalStorage(tmp_path / "store")
    storage.put("studies/a/x", b"mine")
    assert storage.get("studies/a/x") == b"mine"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x").write_bytes(b"not yours")
    folder = tmp_path / "store" / "studies" / "a"
    (folder / "x").unlink()
    folder.rmdir()
    folder.symlink_to(outside)
    with pytest.raises(OutsideStoreError, match="outside the store"):
        storage.get("studies/a/x")
    with pytest.raises(OutsideStoreError):
        storage.open("studies/a/x")


def test_a_link_inside_the_store_is_not_followed_either(tmp_path: Path) -> None:
    """The store never makes links: one to another store file is refused too; a folder where
    an object is expected is not there."""
    storage = LocalStorage(tmp_path / "store")
    storage.put("studies/a", b"mine")
    (tmp_path / "store" / "studies" / "b").symlink_to(tmp_path / "store" / "studies" / "a")
    with pytest.raises(OutsideStoreError, match="is a link"):
        storage.get("studies/b")
    storage.put("studies/c/d", b"x")
    with pytest.raises(NoSuchObjectError, match="missing"):
        storage.get("studies/c")

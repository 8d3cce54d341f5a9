"""``reindex``: rebuild a store's index (the listings are in ``cli/listing.py``)."""

from __future__ import annotations

from dicomweb_archive.cli.common import (
    DEFAULT_STORE,
    StoreOption,
    VerboseOption,
    count,
    handle_errors,
    open_store,
    say,
)


def reindex_command(store: StoreOption = DEFAULT_STORE, verbose: VerboseOption = False) -> None:
    """Rebuild the SQLite index from the store's files alone."""
    from dicomweb_archive.ops.reindex import reindex  # noqa: PLC0415

    with handle_errors(verbose=verbose), open_store(store) as archive:
        report = reindex(archive)
    say(
        f"index rebuilt: {count(report.studies, 'study', 'studies')}, "
        f"{count(report.series, 'series', 'series')}, {count(report.instances, 'instance')}"
    )

"""The one exception hierarchy of dicomweb-archive.

Every error a user can cause is an :class:`ArchiveError`. Messages name the file, UID or tag and
say what to do; they never contain attribute values (PHI). The CLI maps them to exit codes
(``docs/spec/exit-codes.md``).
"""

from __future__ import annotations


class ArchiveError(Exception):
    """Base of every error dicomweb-archive raises on purpose. ``phi`` is what the message
    leaves out because it is patient data (a PatientID or a value as typed); ``detail`` what
    it leaves out because it is a library's internals (a storage client's retries and
    requests): the CLI adds them to the line with ``--verbose`` only."""

    exit_code = 1

    def __init__(self, *args: object, phi: str = "", detail: str = "") -> None:
        super().__init__(*args)
        self.phi = phi
        self.detail = detail

    def add_context(self, text: str) -> None:
        """Append ``text`` to the message (what the caller knows that the raiser did not)."""
        self.args = (f"{self}{text}",)

    def verbose(self) -> str:
        """The message with what ``--verbose`` adds (``phi`` and ``detail``)."""
        extra = "; ".join(part for part in (self.phi, self.detail) if part)
        return f"{self} [{extra}]" if extra else str(self)


class InputError(ArchiveError):
    """An input file cannot be ingested."""


class NotDicomError(InputError):
    """The file is neither a DICOM Part 10 file nor a bare DICOM data set (PS3.10 7.1)."""


class TruncatedError(InputError):
    """The file ends inside a data element header or a required value."""


class MalformedElementError(InputError):
    """A data element's bytes are no valid encoding (PS3.5 7), or its sequences nest deeper
    than the parser follows (``dicom/parse.py``'s ``MAX_SEQUENCE_DEPTH``)."""


class InflationLimitError(InputError):
    """A deflated data set (PS3.5 A.5) inflates beyond the limit ingest accepts (a deflate
    bomb; ``dicom/inflate.py``)."""


class DicomdirError(InputError):
    """The input is a DICOMDIR (a Media Storage Directory, PS3.10 8, PS3.3 F), not an instance,
    or a file it references cannot be followed."""


class UnreadableInputError(InputError):
    """Reading an input failed in a way no other error names (an internal error: the message
    says where; ``--verbose`` shows the cause)."""


class MissingUidError(InputError):
    """A UID that places the instance in the store is absent or empty."""


class UnsafeUidError(InputError):
    """A UID is not a valid UID (PS3.5 9.1) and must not become a path."""


class DuplicateInstanceError(InputError):
    """A different file with an already-stored SOP Instance UID was offered without --replace
    (``stored``; else two files of one input differ under one SOP Instance UID)."""

    stored = True


class InputChangedError(InputError):
    """An input file changed between the reading of its header and the writing of its
    instance (by a Dask worker, which reads the file again)."""


class WorkersError(ArchiveError):
    """The Dask scheduler or its workers cannot be reached, or cannot run the work."""


class StoreError(ArchiveError):
    """The store on disk is not what it should be."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lease."""


class NotAStoreError(StoreError):
    """The location named is not a store (no configuration), or one left incomplete."""

    exit_code = 2


class StoreConfigError(StoreError):
    """A command-line setting disagrees with the store's recorded configuration, or the
    configuration cannot be read."""

    exit_code = 2


class IndexUnavailableError(StoreError):
    """The store's index (a PostgreSQL server) cannot be reached or refuses the connection;
    a writer finds out before it changes anything. The command could not run: exit code 1
    (``docs/spec/exit-codes.md``; 2 is for usage errors)."""


class StorageUnavailableError(StoreError):
    """The storage (an S3 endpoint) did not answer in time, or failed a request in a way a
    later attempt may not (a 5xx, a connection reset): the store may work again later."""


class StoreFullError(StoreError):
    """The storage has no space left (or the backend's quota is used up)."""


class NoSuchObjectError(StoreError):
    """A key of the storage holds no object."""


class ObjectExistsError(StoreError):
    """A put "only if absent" found an object under the key."""


class PreconditionFailedError(StoreError):
    """A put "only if unchanged" found the object changed since it was read."""


class WriteInProgressError(StoreError):
    """A reader could not get a consistent view: a change was being applied meanwhile."""


class NoSuchInstanceError(StoreError):
    """No instance with that SOP Instance UID is in the store."""


class CorruptStoreError(StoreError):
    """A store file is missing, unreadable or does not match its recorded hash."""


class MissingStoreFileError(CorruptStoreError):
    """A file the store's records refer to (frame, bulk data, history) is not there."""


class OutsideStoreError(CorruptStoreError):
    """A store file is a link to a file outside the store (or in a folder that is): not read."""


class UsageError(ArchiveError):
    """The command was asked for something that cannot be done as asked."""

    exit_code = 2


class EditRefusedError(UsageError):
    """An edit cannot be made as asked (unknown tag, wrong level, invalid value, a value the
    instance's character set cannot hold)."""

    exit_code = 1


class BadQueryError(UsageError):
    """A query key or value cannot be used for matching."""


class NoSuchStudyError(StoreError):
    """No study (or series, or instance) of the store matches the selection."""


class ExportError(ArchiveError):
    """An instance could not be exported."""


class CodecError(ArchiveError):
    """A frame could not be decoded or encoded (or did not survive lossless encoding)."""


class StaleVersionError(StoreError):
    """An instance changed between planning an update and applying it."""

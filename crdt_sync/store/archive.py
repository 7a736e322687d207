"""The archive: every document of a store with its whole CRDT state, in one CBOR file (I/O layer).

The format (docs/ARCHIVE.md) is a CBOR sequence (RFC 8742): a header map, one map per document,
then a trailer map holding the document count and the SHA-256 of every byte before it, so a
truncated or damaged file is refused before anything is imported from it. Writing the archive
needs only the Store interface; reading it needs nothing but the file. Importing is the
engine's business (crdt_sync/importing.py): every document goes through the one write path.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import cbor2
import pycrdt

from ..cbor import strict_decoder
from ..errors import ArchiveError, CrdtSyncError
from ..ids import DocId, Origin, Seq, split_doc_id
from .base import DocumentState, JSONObject, Progress, Store

ARCHIVE_FORMAT = "crdt-sync-archive"
ARCHIVE_VERSION = 1
PAGE_SIZE = 100  # documents per read transaction: short, so a running server is never held up


@dataclass(frozen=True, slots=True)
class ArchiveHeader:
    version: int
    created_at: float  # unix seconds when the export began
    cursor: Seq  # the source store's cursor when the export began
    documents: int  # records in the source when the export began (the trailer has the count)
    schema: str | None = None  # the schema the source was served with (JSON), if it recorded one


@dataclass(frozen=True, slots=True)
class ArchivedDocument:
    doc_id: DocId
    state: bytes  # the whole CRDT state as one Yjs update (v1): what an import merges
    is_deleted: bool
    view: JSONObject  # the JSON view that state gives, for tools that do not speak CRDT
    last_seq: Seq
    created_by: Origin
    updated_at: float


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    header: ArchiveHeader
    documents: int
    bytes: int


# Writing


async def export_archive(
    store: Store,
    path: Path,
    *,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.time,
) -> ArchiveSummary:
    """Write every document of `store` (deleted ones too) to an archive at `path`.

    The file appears whole or not at all: it is written beside `path` and renamed into place.
    Every document that existed when the export began is in it, with at least every update
    committed by then; a store written meanwhile is read page by page, never locked.
    `progress(done, total)` is called after each page; total is the record count at the start.

    Raises:
        StoreError: reading the store failed. ArchiveError: the file cannot be written.
    """
    statistics = await store.statistics()
    total = sum(statistics.records.values()) + sum(statistics.deleted.values())
    header = ArchiveHeader(
        ARCHIVE_VERSION, clock(), statistics.cursor, total, await store.served_schema()
    )
    digest = hashlib.sha256()
    with _replacing(path) as file:

        def write(item: dict[str, object]) -> None:
            encoded = cbor2.dumps(item)
            digest.update(encoded)
            file.write(encoded)

        write(_encode_header(header))
        count = 0
        after: DocId | None = None
        while page := await store.documents(after=after, limit=PAGE_SIZE):
            for document in page:
                write(_encode_document(document))
            count += len(page)
            after = page[-1].record.doc_id
            if progress is not None:
                progress(count, max(total, count))
        write({"end": True, "documents": count, "sha256": digest.digest()})
    return ArchiveSummary(header, count, path.stat().st_size)


def _encode_header(header: ArchiveHeader) -> dict[str, object]:
    return {
        "format": ARCHIVE_FORMAT,
        "version": header.version,
        "created_at": header.created_at,
        "cursor": header.cursor,
        "documents": header.documents,
        **({} if header.schema is None else {"schema": header.schema}),
    }


def _encode_document(document: DocumentState) -> dict[str, object]:
    record = document.record
    return {
        "doc_id": record.doc_id,
        "state": document.state,
        "deleted": record.is_deleted,
        "view": record.view,
        "last_seq": record.last_seq,
        "created_by": record.created_by,
        "updated_at": record.updated_at,
    }


@contextmanager
def _replacing(path: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside `path`, fsynced and renamed over it on success, removed otherwise."""
    try:
        descriptor, name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".partial", dir=path.parent
        )
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot write there ({exc.strerror})") from exc
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(name, path)
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot write the archive ({exc.strerror})") from exc
    finally:
        if os.path.exists(name):
            os.unlink(name)


# Reading


class ArchiveReader:
    """Reads an archive in one pass: `header`, then `documents()`, checked as they come.

    Use as a context manager. `documents()` raises ArchiveError on the first thing that is not
    a well-formed document, and at the end if the trailer's count or checksum do not match:
    call `verify_archive` first to learn that before importing anything.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: IO[bytes] = path.open("rb")
        except FileNotFoundError:
            raise ArchiveError(f"no archive at {path}") from None
        except IsADirectoryError:
            raise ArchiveError(f"{path} is a directory, not a crdt-sync archive") from None
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot read it ({exc.strerror})") from exc
        self.size = os.fstat(self._file.fileno()).st_size
        self._reader = _HashingReader(self._file)
        # A RawIOBase is a binary file; typeshed wants IO[bytes].
        self._decoder = strict_decoder(cast(IO[bytes], self._reader), max_depth=8)
        try:
            self.header = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()

    @property
    def position(self) -> int:
        return self._reader.size

    def documents(self) -> Iterator[ArchivedDocument]:
        count = 0
        while True:
            digest = self._reader.digest()
            item = self._next("a document or the trailer")
            if "end" in item:
                self._check_trailer(item, count, digest)
                return
            count += 1
            yield self._document(item, count)

    def _read_header(self) -> ArchiveHeader:
        try:
            item = self._next("the archive header")
        except ArchiveError:
            item = {}
        if item.get("format") != ARCHIVE_FORMAT:
            raise ArchiveError(
                f"{self.path}: not a crdt-sync archive (no {ARCHIVE_FORMAT!r} header)"
            )
        version = item.get("version")
        if version != ARCHIVE_VERSION:
            raise ArchiveError(
                f"{self.path}: archive version {version!r} is not supported"
                f" (this crdt-sync reads version {ARCHIVE_VERSION})"
            )
        return ArchiveHeader(
            ARCHIVE_VERSION,
            _number(self, item, "created_at", float),
            Seq(_number(self, item, "cursor", int)),
            _number(self, item, "documents", int),
            _schema_text(self, item),
        )

    def _next(self, what: str) -> Mapping[str, Any]:
        try:
            item = self._decoder.decode()
        except cbor2.CBORDecodeEOF:
            raise ArchiveError(
                f"{self.path}: the archive ends early, before {what} (truncated?)"
            ) from None
        except cbor2.CBORDecodeError as exc:
            raise ArchiveError(
                f"{self.path}: not a crdt-sync archive, or damaged at byte {self.position} ({exc})"
            ) from None
        if not isinstance(item, dict) or not all(isinstance(key, str) for key in item):
            raise ArchiveError(
                f"{self.path}: damaged at byte {self.position}: expected {what}, a CBOR map"
            )
        return item

    def _document(self, item: Mapping[str, Any], index: int) -> ArchivedDocument:
        where = f"{self.path}: document {index}"
        doc_id = item.get("doc_id")
        state = item.get("state")
        if not isinstance(doc_id, str) or not isinstance(state, bytes):
            raise ArchiveError(f"{where}: expected a doc_id string and a state byte string")
        try:
            split_doc_id(doc_id)
        except CrdtSyncError as exc:
            raise ArchiveError(f"{where}: {exc.message}") from None
        view = item.get("view")
        return ArchivedDocument(
            DocId(doc_id),
            state,
            item.get("deleted") is True,
            view if isinstance(view, dict) else {},
            Seq(_number(self, item, "last_seq", int)),
            Origin(str(item.get("created_by", ""))),
            _number(self, item, "updated_at", float),
        )

    def _check_trailer(self, item: Mapping[str, Any], count: int, digest: bytes) -> None:
        if item.get("documents") != count:
            raise ArchiveError(
                f"{self.path}: the trailer counts {item.get('documents')!r} documents,"
                f" the archive holds {count} (damaged)"
            )
        if item.get("sha256") != digest:
            raise ArchiveError(f"{self.path}: checksum mismatch, the archive is damaged")
        if self._file.read(1):
            raise ArchiveError(f"{self.path}: unexpected bytes after the trailer (damaged)")


def verify_archive(path: Path, *, progress: Progress | None = None) -> ArchiveSummary:
    """Read the whole archive and check every document's state decodes; nothing is imported.

    `progress(bytes_read, file_size)` after each document.

    Raises:
        ArchiveError: not an archive, a newer version, truncated, damaged, or a state that is
            not a Yjs update; the message names the file and the document.
    """
    count = 0
    with ArchiveReader(path) as reader:
        for document in reader.documents():
            count += 1
            try:
                pycrdt.Doc().apply_update(document.state)
            except ValueError as exc:
                raise ArchiveError(
                    f"{path}: {document.doc_id}: its state is not a Yjs update ({exc})"
                ) from None
            if progress is not None:
                progress(reader.position, reader.size)
        if progress is not None:
            progress(reader.size, reader.size)  # the trailer too: the bar ends full
        return ArchiveSummary(reader.header, count, reader.size)


class _HashingReader(io.RawIOBase):
    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def digest(self) -> bytes:
        return self._hash.copy().digest()


def _number(reader: ArchiveReader, item: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    value = item.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArchiveError(f"{reader.path}: {key} must be a number, got {type(value).__name__}")
    return kind(value)


def _schema_text(reader: ArchiveReader, header: Mapping[str, Any]) -> str | None:
    schema = header.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise ArchiveError(f"{reader.path}: the header's schema is not text")
    return schema

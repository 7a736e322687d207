"""The values of `Engine.write_many`: one write of a batch, and what it came to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import CrdtSyncError
from .ids import DocId, Seq
from .record import CheckedUpdate, View


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """One write of `Engine.write_many`: a field patch, a CRDT update, or a delete."""

    doc_id: DocId
    patch: Mapping[str, Any] | None = None
    update: bytes | None = None
    is_delete: bool = False
    creating: bool = False  # the record's required fields must be set after the patch


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one accepted write of a batch did."""

    seq: Seq | None  # None: it changed nothing, so nothing was stored
    view: View
    is_deleted: bool
    changed_fields: tuple[str, ...]
    is_new: bool  # the record had never been written before this batch
    is_ignored: bool  # a change to a deleted record: the delete is final, so it is dropped


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    write: BatchWrite
    result: BatchResult | None  # None when refused
    error: CrdtSyncError | None


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """A write checked and applied to the live record, not yet committed."""

    update: bytes | None  # None: nothing to store
    checked: CheckedUpdate
    is_new: bool

    def result(self, seq: Seq | None) -> BatchResult:
        checked = self.checked
        is_ignored = self.update is None and checked.is_deleted and not self.is_new
        return BatchResult(
            seq,
            checked.view,
            checked.is_deleted,
            checked.changed_fields,
            self.is_new,
            is_ignored,
        )

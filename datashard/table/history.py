"""A table's history as users read it: when each snapshot became current, what it did, and
how many rows and files it added and removed (from the snapshot log and the snapshots the
metadata keeps)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from datashard.iceberg.metadata import TableMetadata


@dataclass(frozen=True)
class HistoryEntry:
    """One change of the current snapshot.

    ``operation`` is the snapshot's (``append``, ``overwrite``, ``delete``, ``replace``) and
    the counts come from its summary; all are ``None`` when the snapshot is no longer kept
    (expired since) or its writer left the count out.
    """

    snapshot_id: int
    #: when it became current, epoch milliseconds (the snapshot log's own field)
    timestamp_ms: int
    #: the same instant as an aware UTC ``datetime``
    made_current_at: datetime
    parent_id: int | None
    #: whether it is the current snapshot or one of its ancestors (``False`` after a rollback
    #: past it)
    is_current_ancestor: bool
    operation: str | None
    added_records: int | None
    deleted_records: int | None
    total_records: int | None
    added_data_files: int | None
    deleted_data_files: int | None
    summary: Mapping[str, str] = field(default_factory=dict)


def history(md: TableMetadata) -> list[HistoryEntry]:
    """The snapshot log of ``md`` as :class:`HistoryEntry` records, oldest first."""
    ancestors = {s.snapshot_id for s in md.ancestors()}
    out = []
    for entry in md.snapshot_log:
        snap = md.snapshot_by_id(entry.snapshot_id)
        summary: Mapping[str, str] = snap.summary if snap is not None else {}
        out.append(
            HistoryEntry(
                snapshot_id=entry.snapshot_id,
                timestamp_ms=entry.timestamp_ms,
                made_current_at=datetime.fromtimestamp(entry.timestamp_ms / 1000, timezone.utc),
                parent_id=snap.parent_snapshot_id if snap is not None else None,
                is_current_ancestor=entry.snapshot_id in ancestors,
                operation=summary.get("operation"),
                added_records=_count(summary, "added-records"),
                deleted_records=_count(summary, "deleted-records"),
                total_records=_count(summary, "total-records"),
                added_data_files=_count(summary, "added-data-files"),
                deleted_data_files=_count(summary, "deleted-data-files"),
                summary=summary,
            )
        )
    return out


def _count(summary: Mapping[str, str], key: str) -> int | None:
    try:
        return int(summary[key])
    except (KeyError, ValueError):
        return None


__all__ = ["HistoryEntry", "history"]

"""Compaction: many small data files rewritten into few, partition by partition, as one
``replace`` snapshot (a :class:`~datashard.table.rewrite.RewriteCommit`).

It removes exactly the files it read: a concurrent append commits (before or after it) and keeps
its rows; a concurrent commit that removed one of those files (a delete, another compaction)
makes it fail with ``CommitConflictError``. Memory stays at about one target file's worth of
rows: each bin of input files is read, written and flushed before the next. On a format
version 3 table every row keeps its ``_row_id`` and ``_last_updated_sequence_number`` (written
into the new files), and deletion vectors are folded in and retired like delete files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from datashard.errors import ValidationError
from datashard.iceberg.manifest import ManifestEntry
from datashard.storage.base import StorageBackend
from datashard.table.deletes import DeleteReader, delete_index
from datashard.table.process import bounded_map
from datashard.table.producer import DEFAULT_TARGET_FILE_SIZE, target_size
from datashard.table.rewrite import RewriteCommit
from datashard.table.versions import Loaded, TablePaths

#: Input files read at once.
_READERS = 8


@dataclass(frozen=True)
class CompactResult:
    """What :func:`compact` did (or would do, for a dry run)."""

    rewritten_files: int
    added_files: int
    rewritten_rows: int
    snapshot_id: int | None


def target_file_size(given: int | None, properties: Mapping[str, str]) -> int:
    """The target size: ``given``, else the table property ``write.target-file-size-bytes``
    (512 MiB by default, as for appends); ``ValidationError`` for a size that is not a positive
    int, ``ConfigError`` for a malformed property."""
    if given is None:
        return target_size(properties)
    if isinstance(given, bool) or not isinstance(given, int) or given <= 0:
        raise ValidationError(f"target_file_size must be a positive number of bytes, got {given!r}")
    return given


def compact(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    target_file_size: int = DEFAULT_TARGET_FILE_SIZE,
    *,
    min_input_files: int = 2,
    dry_run: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[Loaded | None, CompactResult]:
    """Rewrite the small files (under 3/4 of ``target_file_size``) of each partition into
    files of about ``target_file_size`` bytes; one ``replace`` snapshot. A partition with fewer
    than ``min_input_files`` small files is left as it is, unless row-level deletes apply to
    one of its files: files with deletes are always rewritten (whatever their size), which
    folds the deletes into the data and removes the delete files.

    ``progress(files_done, files, "files")`` is called before the first rewrite and after each
    batch of input files is rewritten; an exception it raises cancels the compaction (what it
    wrote is deleted, the table is unchanged)."""
    if (
        isinstance(target_file_size, bool)
        or not isinstance(target_file_size, int)
        or (target_file_size <= 0)
    ):
        raise ValidationError(
            f"target_file_size must be a positive number of bytes, got {target_file_size!r}"
        )
    md = base.metadata
    rewrite = RewriteCommit(
        backend, paths, base, "replace", extra_summary={"datashard.compaction": "true"}
    )
    groups: dict[tuple[int, tuple[Any, ...]], list[ManifestEntry]] = {}
    with_deletes: set[tuple[int, tuple[Any, ...]]] = set()
    small = target_file_size * 3 // 4
    snapshot = md.current_snapshot()
    live = rewrite.reader.live_files(snapshot)
    index = delete_index(md, rewrite.reader.manifests(snapshot), rewrite.reader.entries)
    for m, e in live:
        df = e.data_file
        deleted = bool(index.for_data_file(df, e.sequence_number or 0, m.partition_spec_id))
        if (
            not deleted
            and df.file_size_in_bytes >= small
            and m.partition_spec_id == md.default_spec_id
        ):
            continue
        key = (m.partition_spec_id, tuple(sorted((k, repr(v)) for k, v in df.partition.items())))
        groups.setdefault(key, []).append(e)
        if deleted:
            with_deletes.add(key)
    chosen = [
        (key, g) for key, g in groups.items() if len(g) >= min_input_files or key in with_deletes
    ]
    n_files = sum(len(g) for _, g in chosen)
    n_rows = sum(e.data_file.record_count for _, g in chosen for e in g)
    if dry_run or not chosen:
        return None, CompactResult(n_files, 0, n_rows, None)
    # format version 3: each row keeps its _row_id and _last_updated_sequence_number
    fields = [*md.current_schema().fields, *rewrite.lineage_fields()]
    rows_of = DeleteReader(backend, md)

    def read(item: tuple[int, ManifestEntry]) -> pa.Table:
        spec_id, e = item
        deletes = index.for_data_file(e.data_file, e.sequence_number or 0, spec_id)
        return rows_of.read(e.data_file, deletes, fields, sequence_number=e.sequence_number)

    done = 0
    try:
        if progress is not None:  # what it raises cancels: the except below deletes
            progress(done, n_files, "files")
        for (spec_id, _), group in chosen:
            group.sort(key=lambda e: e.sequence_number or 0)
            for chunk in _bins(group, target_file_size):  # bounds memory to about a target
                tables = list(bounded_map(read, [(spec_id, e) for e in chunk], _READERS))
                for e in chunk:
                    rewrite.remove(e.data_file, e.sequence_number or 0, spec_id)
                rewrite.stage_tables([pa.concat_tables(tables)], target_file_size)
                rewrite.flush()
                done += len(chunk)
                if progress is not None:
                    progress(done, n_files, "files")
        rewrite.retire_unused_deletes(
            index, ((e.data_file, e.sequence_number or 0, m.partition_spec_id) for m, e in live)
        )
    except BaseException:
        rewrite.discard()
        raise
    loaded, _ = rewrite.commit()
    return loaded, CompactResult(n_files, len(rewrite.added), n_rows, rewrite.snapshot_id)


def _bins(entries: list[ManifestEntry], target: int) -> list[list[ManifestEntry]]:
    """Consecutive runs of ``entries`` whose input bytes add up to about ``target``."""
    out: list[list[ManifestEntry]] = [[]]
    size = 0
    for e in entries:
        if out[-1] and size + e.data_file.file_size_in_bytes > target:
            out.append([])
            size = 0
        out[-1].append(e)
        size += e.data_file.file_size_in_bytes
    return out


__all__ = ["DEFAULT_TARGET_FILE_SIZE", "CompactResult", "compact", "target_file_size"]

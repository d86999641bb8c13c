"""Partition specs: building and validating them, routing rows on write, pruning on read.

A spec is given as a list of ``(column, transform)`` pairs, dicts
(``{"source": "ts", "transform": "day", "name": "ts_day"}``), or a
:class:`~datashard.iceberg.metadata.PartitionSpec`. Columns are named or given by field id;
transforms by their spec names (``"identity"``, ``"day"``, ``"bucket[16]"``, ``"truncate[4]"`` ...).

- :func:`build_spec` checks a spec against a schema: the column exists, is a top-level
  primitive, the transform takes its type (``SchemaError`` naming the column, the type and the
  transform otherwise), names are unique and do not shadow another column.
- :func:`evolve_spec` makes the next spec of a table: a new spec id, partition field ids reused
  for fields that were there before, new ids after ``last-partition-id``. Old data files keep
  the spec they were written with; nothing is rewritten.
- :func:`split_by_partition` routes an Arrow table into one table per partition value.
- :class:`PartitionPruner` turns a scan filter into predicates on partition values (by each
  spec's transforms) and skips manifests (by their partition summaries) and data files (by their
  partition values) that cannot hold a matching row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from datashard.errors import SchemaError
from datashard.iceberg.conversions import from_bytes, to_physical
from datashard.iceberg.expressions import (
    Bound,
    BoundAnd,
    BoundFalse,
    BoundOr,
    BoundPredicate,
    BoundTrue,
    might_match,
)
from datashard.iceberg.manifest import (
    DataFile,
    ManifestFile,
)
from datashard.iceberg.metadata import (
    PARTITION_FIELD_ID_START,
    PartitionField,
    PartitionSpec,
    TableMetadata,
)
from datashard.iceberg.schema import Schema
from datashard.iceberg.transforms import Transform, parse_transform
from datashard.iceberg.types import IcebergType

#: What callers may pass as a spec.
SpecLike = PartitionSpec | Sequence[Any] | None


def default_name(column: str, transform: Transform) -> str:
    """The partition field name when none is given: ``ts_day``, ``id_bucket_16``, ``name``."""
    if transform.name == "identity":
        return column
    if transform.name == "truncate":
        return f"{column}_trunc_{transform.param}"
    if transform.param is not None:
        return f"{column}_{transform.name}_{transform.param}"
    return f"{column}_{transform.name}"


def _parse_item(item: Any) -> tuple[str | int, Transform, str | None]:
    if isinstance(item, PartitionField):
        return item.source_id, parse_transform(item.transform), item.name
    if isinstance(item, Mapping):
        source = item.get("source", item.get("source-id", item.get("column")))
        if source is None:
            raise SchemaError(f"partition field {dict(item)!r} names no source column")
        return source, parse_transform(item.get("transform", "identity")), item.get("name")
    if isinstance(item, str):
        return item, Transform("identity"), None
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        name = item[2] if len(item) == 3 else None
        return item[0], parse_transform(item[1]), name
    raise SchemaError(
        f"a partition field is (column, transform), a dict or a column name, got {item!r}"
    )


def build_spec(
    schema: Schema,
    spec: SpecLike,
    *,
    spec_id: int = 0,
    field_ids: Mapping[tuple[int, str], int] | None = None,
    last_partition_id: int = PARTITION_FIELD_ID_START - 1,
) -> PartitionSpec:
    """A validated :class:`PartitionSpec` of ``schema`` from ``spec``.

    ``field_ids`` maps ``(source id, transform)`` to partition field ids already used by the
    table (spec evolution keeps them); other fields get ids after ``last_partition_id``.
    """
    if spec is None:
        return PartitionSpec(spec_id, ())
    if isinstance(spec, PartitionSpec):
        items: Sequence[Any] = spec.fields
    elif isinstance(spec, (str, bytes, Mapping)) or not isinstance(spec, Sequence):
        raise SchemaError(
            "partition_spec must be a list of (column, transform) pairs, dicts or a "
            f"PartitionSpec, got {type(spec).__name__}"
        )
    else:
        items = spec
    top_level = {f.field_id: f for f in schema.fields}
    next_id = last_partition_id
    fields: list[PartitionField] = []
    seen: set[tuple[int, str]] = set()
    names: set[str] = set()
    for item in items:
        source, transform, name = _parse_item(item)
        try:
            src = schema.find_field(source)
        except SchemaError:
            raise SchemaError(
                f"partition source column {source!r} is not in the schema; columns: "
                f"{schema.column_names}"
            ) from None
        if src.field_id not in top_level:
            raise SchemaError(
                f"partition source {source!r} must be a top-level column (it is nested)"
            )
        transform.check_source(src.field_type, src.name)
        key = (src.field_id, str(transform))
        if key in seen:
            raise SchemaError(f"partition field {transform}({src.name}) is given twice")
        seen.add(key)
        pname = name or default_name(src.name, transform)
        if pname in names:
            raise SchemaError(f"partition field name {pname!r} is used twice")
        if pname in schema.column_names and not (
            transform.name == "identity" and pname == src.name
        ):
            raise SchemaError(
                f"partition field name {pname!r} is a column of the schema; only an identity "
                "partition of that column may have its name"
            )
        names.add(pname)
        fid = (field_ids or {}).get(key)
        if fid is None:
            next_id += 1
            fid = next_id
        fields.append(PartitionField(src.field_id, fid, str(transform), pname))
    return PartitionSpec(spec_id, tuple(fields))


def evolve_spec(md: TableMetadata, spec: SpecLike) -> tuple[PartitionSpec, int]:
    """The table's next spec from ``spec`` and the new ``last-partition-id``.

    If an existing spec has exactly these fields it is reused (same id). Raises
    ``SchemaError`` for a bad spec.
    """
    schema = md.current_schema()
    known: dict[tuple[int, str], int] = {}
    for s in md.partition_specs:
        for f in s.fields:
            known.setdefault((f.source_id, f.transform), f.field_id)
    next_spec_id = max(s.spec_id for s in md.partition_specs) + 1
    new = build_spec(
        schema,
        spec,
        spec_id=next_spec_id,
        field_ids=known,
        last_partition_id=md.last_partition_id,
    )
    for s in md.partition_specs:
        if s.fields == new.fields:
            return s, md.last_partition_id
    last = max([md.last_partition_id, *(f.field_id for f in new.fields)])
    return new, last


def source_types(md: TableMetadata) -> dict[int, IcebergType]:
    """Field id -> type over every schema of the table (newest schema wins)."""
    out: dict[int, IcebergType] = {}
    for s in sorted(md.schemas, key=lambda s: s.schema_id == md.current_schema_id):
        for f in s.fields:
            out[f.field_id] = f.field_type
    return out


# --------------------------------------------------------------------------------------------
# routing rows on write


def split_by_partition(
    table: pa.Table, spec: PartitionSpec, schema: Schema
) -> list[tuple[dict[str, Any], pa.Table]]:
    """``table`` split into one table per partition value, with that value by field name.

    An unpartitioned spec gives ``[({}, table)]``. Values are in their Python form (the manifest
    writer serializes them).
    """
    if not spec.fields or table.num_rows == 0:
        return [({}, table)]
    keys: dict[str, pa.Array] = {}
    for i, pf in enumerate(spec.fields):
        src = schema.find_field(pf.source_id)
        keys[f"k{i}"] = parse_transform(pf.transform).apply_arrow(
            src.field_type, table.column(src.name)
        )
    if all(len(k) and k.null_count == 0 and _single(k) for k in keys.values()):
        return [(_values(spec, schema, {n: k[0] for n, k in keys.items()}), table)]
    keyed = pa.table(
        {
            **{n: _groupable(k) for n, k in keys.items()},
            "__row": pa.array(np.arange(table.num_rows, dtype=np.int64)),
        }
    )
    grouped = keyed.group_by(list(keys), use_threads=False).aggregate([("__row", "list")])
    out = []
    originals = {n: k for n, k in keys.items()}
    for g in range(grouped.num_rows):
        rows = grouped.column("__row_list")[g].values
        first = rows[0].as_py()
        scalars = {n: originals[n][first] for n in keys}
        out.append((_values(spec, schema, scalars), table.take(rows)))
    return out


def _single(array: pa.Array) -> bool:
    return bool(len(array) == 1 or array.equals(pa.repeat(array[0], len(array))))


def _groupable(array: pa.Array) -> pa.Array:
    storage = getattr(array, "storage", None)  # extension arrays (uuid) group by storage
    return storage if isinstance(storage, pa.Array) else array


def _values(
    spec: PartitionSpec, schema: Schema, scalars: Mapping[str, pa.Scalar]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, pf in enumerate(spec.fields):
        scalar = scalars[f"k{i}"]
        value = scalar.as_py()
        if isinstance(scalar, pa.ExtensionScalar) and value is not None:  # pragma: no cover
            value = scalar.value.as_py()
        out[pf.name] = value
    return out


# --------------------------------------------------------------------------------------------
# pruning on read


@dataclass(frozen=True)
class _PartPred:
    """A predicate on one partition field: position in the spec, op, physical values."""

    position: int
    op: str
    values: tuple[Any, ...]


_Proj = BoundTrue | BoundFalse | _PartPred | tuple[str, Any, Any]


class PartitionPruner:
    """Skips manifests and data files whose partitions cannot match a bound filter."""

    def __init__(self, metadata: TableMetadata, bound: Bound) -> None:
        self._md = metadata
        self._bound = bound
        self._types = source_types(metadata)
        self._cache: dict[int, Any] = {}

    @property
    def active(self) -> bool:
        return not isinstance(self._bound, BoundTrue)

    def _projection(self, spec_id: int) -> Any:
        if spec_id not in self._cache:
            try:
                spec = self._md.spec(spec_id)
                self._cache[spec_id] = (spec, self._project(self._bound, spec))
            except SchemaError:
                self._cache[spec_id] = None
        return self._cache[spec_id]

    def _project(self, bound: Bound, spec: PartitionSpec) -> Any:
        if isinstance(bound, (BoundTrue, BoundFalse)):
            return bound
        if isinstance(bound, (BoundAnd, BoundOr)):
            kind = "and" if isinstance(bound, BoundAnd) else "or"
            return (kind, self._project(bound.left, spec), self._project(bound.right, spec))
        assert isinstance(bound, BoundPredicate)
        preds: list[Any] = []
        source = self._types.get(bound.field_id)
        if source is None:
            return BoundTrue()
        values = tuple(_phys(source, v) for v in bound.values)
        for i, pf in enumerate(spec.fields):
            if pf.source_id != bound.field_id:
                continue
            transform = parse_transform(pf.transform)
            projected = transform.project(source, bound.op, values)
            if projected is not None:
                result = transform.result_type(source)
                preds.append(
                    _PartPred(i, projected[0], tuple(_phys(result, v) for v in projected[1]))
                )
        out: Any = BoundTrue()
        for p in preds:
            out = p if isinstance(out, BoundTrue) else ("and", out, p)
        return out

    def _result_types(self, spec: PartitionSpec) -> list[IcebergType] | None:
        """The partition value types of ``spec`` (sources looked up in every schema), or
        ``None`` when a source is in no schema (then nothing is pruned by this spec)."""
        out: list[IcebergType] = []
        for pf in spec.fields:
            source = self._types.get(pf.source_id)
            if source is None:
                return None
            out.append(parse_transform(pf.transform).result_type(source))
        return out

    def manifest_might_match(self, m: ManifestFile) -> bool:
        """False when the manifest has no live file (by its counts), or its partition
        summaries prove no file matches."""
        if m.added_files_count == 0 and m.existing_files_count == 0 and m.deleted_files_count:
            return False  # only DELETED entries (what a delete or compaction removed)
        if not self.active or not m.partitions:
            return True
        proj = self._projection(m.partition_spec_id)
        if proj is None:
            return True
        spec, tree = proj
        types = self._result_types(spec)
        if types is None:
            return True
        ranges = []
        for t, s in zip(types, m.partitions, strict=False):
            try:
                lo = None if s.lower_bound is None else from_bytes(t, s.lower_bound)
                hi = None if s.upper_bound is None else from_bytes(t, s.upper_bound)
            except Exception:
                lo = hi = None
            ranges.append((s.contains_null, lo, hi))
        return _eval(tree, lambda p: _range_match(p, ranges))

    def file_might_match(self, spec_id: int, df: DataFile) -> bool:
        """False only when the file's partition values prove none of its rows matches."""
        if not self.active:
            return True
        proj = self._projection(spec_id)
        if proj is None:
            return True
        spec, tree = proj
        if not spec.fields:
            return True
        types = self._result_types(spec)
        if types is None:
            return True
        values = []
        for t, pf in zip(types, spec.fields, strict=True):
            raw = df.partition.get(pf.name)
            values.append(None if raw is None else _phys(t, raw))
        return _eval(tree, lambda p: _value_match(p, values))


def _phys(t: IcebergType, v: Any) -> Any:
    try:
        return to_physical(t, v)
    except Exception:
        return v


def _eval(tree: Any, leaf: Any) -> bool:
    if isinstance(tree, BoundTrue):
        return True
    if isinstance(tree, BoundFalse):
        return False
    if isinstance(tree, tuple):
        kind, left, right = tree
        if kind == "and":
            return _eval(left, leaf) and _eval(right, leaf)
        return _eval(left, leaf) or _eval(right, leaf)
    try:
        return bool(leaf(tree))
    except Exception:  # incomparable values prove nothing
        return True


def _value_match(p: _PartPred, values: list[Any]) -> bool:
    v = values[p.position]
    if p.op == "is null":
        return v is None
    if p.op == "not null":
        return v is not None
    if v is None:
        return False
    if p.op == "==":
        return bool(v == p.values[0])
    if p.op == "in":
        return v in p.values
    if p.op == "<=":
        return bool(v <= p.values[0])
    if p.op == ">=":
        return bool(v >= p.values[0])
    return True


def _range_match(p: _PartPred, ranges: list[tuple[bool, Any, Any]]) -> bool:
    contains_null, lo, hi = ranges[p.position]
    if p.op == "is null":
        return contains_null
    if lo is None or hi is None:
        return True  # no bounds (all null, NaN only, or not recorded) prove nothing here
    if p.op == "not null":
        return True
    if p.op == "==":
        return bool(lo <= p.values[0] <= hi)
    if p.op == "in":
        return any(lo <= v <= hi for v in p.values)
    if p.op == "<=":
        return bool(lo <= p.values[0])
    if p.op == ">=":
        return bool(hi >= p.values[0])
    return True


def file_might_match(bound: Bound, pruner: PartitionPruner, spec_id: int, df: DataFile) -> bool:
    """Whether ``df`` (of partition spec ``spec_id``) might hold a row matching ``bound``: by
    its partition values, then by its column statistics."""
    if isinstance(bound, BoundTrue):
        return True
    if not pruner.file_might_match(spec_id, df):
        return False
    return might_match(bound, df, from_bytes)


__all__ = [
    "PartitionPruner",
    "SpecLike",
    "build_spec",
    "default_name",
    "evolve_spec",
    "file_might_match",
    "source_types",
    "split_by_partition",
]

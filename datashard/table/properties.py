"""Table properties: the ones datashard reads, checked before anything is written, and changed
by a commit without a snapshot (:func:`commit_properties`).

Properties are strings, as in every Iceberg catalog. :func:`check_properties` refuses a value
datashard would read but cannot use (commit retries and bounds, retention, Parquet row groups,
the delete mode) and a ``format-version`` other than 2; unknown keys are kept as they are, since
other engines read their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from datashard.errors import UnsupportedFeatureError, ValidationError
from datashard.iceberg.metadata import FORMAT_VERSION, TableMetadata
from datashard.storage.base import StorageBackend
from datashard.table.commit import CommitSettings, commit_updates
from datashard.table.expire import policy as expiry_policy
from datashard.table.orphans import upkeep_grace_ms
from datashard.table.producer import parquet_options
from datashard.table.row_delta import delete_mode
from datashard.table.updates import COMMIT_ID, RemoveProperties, SetProperties, Update
from datashard.table.versions import Loaded, TablePaths

#: Keys a user may not set or remove: the format version is the metadata's own field, and the
#: commit id is how datashard resolves a commit whose outcome was unknown.
RESERVED = ("format-version", COMMIT_ID)


def check_properties(properties: Mapping[str, str]) -> None:
    """``ConfigError`` naming the first table property datashard reads whose value it cannot
    use (commit retries, bounds and retention, ``write.parquet.row-group-limit``,
    ``write.parquet.row-group-size-bytes``, ``write.target-file-size-bytes``,
    ``write.delete.mode``, the expiry policy, the upkeep), and ``UnsupportedFeatureError``
    for a ``format-version`` other than 2; before anything is written."""
    version = properties.get("format-version", str(FORMAT_VERSION))
    if version != str(FORMAT_VERSION):
        raise UnsupportedFeatureError(
            f"format-version {version!r}: datashard creates Iceberg format version "
            f"{FORMAT_VERSION} tables only (v3 row lineage and deletion vectors are not "
            "written yet)"
        )
    CommitSettings.from_properties(properties)
    expiry_policy(properties)
    upkeep_grace_ms(properties)
    parquet_options(properties)  # the row-group limits and the target file size
    delete_mode(properties)


def property_updates(
    updates: Mapping[str, object], removals: Iterable[str]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """``updates`` as strings and ``removals`` as a tuple; ``ValidationError`` naming a key that
    is not a non-empty string, is reserved, or is both set and removed, or a value that is not a
    string or an int."""
    out: dict[str, str] = {}
    for key, value in updates.items():
        _check_key(key)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError(
                f"table property {key!r}: a value must be a string or an int, got "
                f"{type(value).__name__}: {value!r}"
            )
        out[key] = str(value)
    gone = tuple(removals) if not isinstance(removals, str) else (removals,)
    for key in gone:
        _check_key(key)
        if key in out:
            raise ValidationError(f"table property {key!r} is both set and removed")
    return out, gone


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise ValidationError(f"a table property key must be a non-empty string, got {key!r}")
    if key in RESERVED:
        raise ValidationError(
            f"table property {key!r} is reserved: "
            + (
                "the format version is the metadata's own field"
                if key == "format-version"
                else "datashard records commit ids there"
            )
        )


def commit_properties(
    backend: StorageBackend,
    paths: TablePaths,
    base: Loaded,
    updates: Mapping[str, str],
    removals: tuple[str, ...],
) -> Loaded:
    """Set ``updates`` and remove ``removals`` (checked by :func:`property_updates`) in one
    commit, rebuilt on the newest version after a lost race (other keys keep what concurrent
    commits set). The resulting properties are checked by :func:`check_properties` on every
    base, so a bad value fails with the table unchanged."""

    def make(md: TableMetadata) -> list[Update]:
        result = {k: v for k, v in md.properties.items() if k not in removals}
        result.update(updates)
        check_properties(result)
        return [SetProperties(dict(updates)), RemoveProperties(removals)]

    return commit_updates(backend, paths, base, make)


__all__ = ["RESERVED", "check_properties", "commit_properties", "property_updates"]

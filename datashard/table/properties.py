"""Table properties: the ones datashard reads, checked before anything is written, and changed
by a commit without a snapshot (:func:`commit_properties`).

Properties are strings, as in every Iceberg catalog. :func:`check_properties` refuses a value
datashard would read but cannot use (commit retries and bounds, retention, Parquet row groups,
the delete mode) and a ``format-version`` datashard does not create; unknown keys are kept as
they are, since other engines read their own.

``format-version`` is the metadata's own field, never stored as a property: at create it picks
the format version (2, the default, or 3); afterwards setting it to a higher version upgrades
the table (2 to 3), and a lower one is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from datashard.errors import UnsupportedFeatureError, ValidationError
from datashard.iceberg.metadata import FORMAT_VERSION, WRITE_VERSIONS, TableMetadata
from datashard.storage.base import StorageBackend
from datashard.table.commit import CommitSettings, commit_updates
from datashard.table.expire import policy as expiry_policy
from datashard.table.group import GroupSettings
from datashard.table.orphans import upkeep_grace_ms
from datashard.table.producer import parquet_options
from datashard.table.row_delta import delete_mode
from datashard.table.updates import (
    COMMIT_ID,
    RemoveProperties,
    SetProperties,
    Update,
    UpgradeFormatVersion,
    upgrade_format_version,
)
from datashard.table.versions import Loaded, TablePaths

#: The key naming the format version (the metadata's own field; see the module docstring).
FORMAT_VERSION_KEY = "format-version"
#: Keys a user may not remove (nor set, but for ``format-version``): the format version is the
#: metadata's own field, and the commit id is how datashard resolves a commit whose outcome
#: was unknown.
RESERVED = (FORMAT_VERSION_KEY, COMMIT_ID)
#: The Iceberg format versions a table property may name (version 1 is not created).
_KNOWN_VERSIONS = (1, 2, 3)


def format_version(
    properties: Mapping[str, str], versions: tuple[int, ...] = WRITE_VERSIONS
) -> int:
    """The ``format-version`` a table is created with (default 2): ``ValidationError`` naming
    the property for a value that is not one of the spec's versions, ``UnsupportedFeatureError``
    for one of them that is not in ``versions``."""
    raw = properties.get(FORMAT_VERSION_KEY, str(FORMAT_VERSION))
    try:
        version = int(raw)
    except (TypeError, ValueError):
        version = -1
    if version not in _KNOWN_VERSIONS or str(version) != str(raw).strip():
        raise ValidationError(
            f"table property 'format-version' must be one of {', '.join(map(str, versions))} "
            f"(the Iceberg format version), got {raw!r}"
        )
    if version not in versions:
        raise UnsupportedFeatureError(
            f"table property 'format-version' {raw!r}: datashard creates Iceberg format "
            f"version(s) {', '.join(map(str, versions))} here"
        )
    return version


def check_properties(
    properties: Mapping[str, str], versions: tuple[int, ...] = (FORMAT_VERSION,)
) -> None:
    """``ConfigError`` naming the first table property datashard reads whose value it cannot
    use (commit retries, bounds and retention, ``write.parquet.row-group-limit``,
    ``write.parquet.row-group-size-bytes``, ``write.target-file-size-bytes``,
    ``write.delete.mode``, the expiry policy, the upkeep, group commit), and for
    ``format-version`` the errors of :func:`format_version` (``versions``: the ones accepted);
    before anything is written."""
    format_version(properties, versions)
    CommitSettings.from_properties(properties)
    expiry_policy(properties)
    upkeep_grace_ms(properties)
    parquet_options(properties)  # the row-group limits and the target file size
    delete_mode(properties)
    GroupSettings.from_properties(properties)


def property_updates(
    updates: Mapping[str, object], removals: Iterable[str]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """``updates`` as strings and ``removals`` as a tuple; ``ValidationError`` naming a key that
    is not a non-empty string, is reserved, or is both set and removed, or a value that is not a
    string or an int."""
    out: dict[str, str] = {}
    for key, value in updates.items():
        if key != FORMAT_VERSION_KEY:  # setting it upgrades the table (commit_properties)
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
                "the format version is the metadata's own field (set it to upgrade the table)"
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
    base, so a bad value fails with the table unchanged. ``format-version`` is not stored: a
    higher version upgrades the table (:func:`~datashard.table.updates.upgrade_format_version`),
    a lower one is a ``ValidationError``."""
    updates = dict(updates)
    raw_version = updates.pop(FORMAT_VERSION_KEY, None)
    version = None
    if raw_version is not None:
        version = format_version({FORMAT_VERSION_KEY: raw_version}, _KNOWN_VERSIONS)

    def make(md: TableMetadata) -> list[Update]:
        result = {k: v for k, v in md.properties.items() if k not in removals}
        result.update(updates)
        check_properties(result)
        out: list[Update] = [SetProperties(dict(updates)), RemoveProperties(removals)]
        if version is not None:
            upgrade_format_version(md, version)  # ValidationError for a downgrade, up front
            out.append(UpgradeFormatVersion(version))
        return out

    return commit_updates(backend, paths, base, make)


__all__ = [
    "FORMAT_VERSION_KEY",
    "RESERVED",
    "check_properties",
    "commit_properties",
    "format_version",
    "property_updates",
]

"""datashard: transactional Apache Iceberg v2 tables on object storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datashard.errors import *  # noqa: F403
from datashard.errors import __all__ as _error_names

if TYPE_CHECKING:
    from datashard.iceberg.expressions import col as col
    from datashard.iceberg.schema import Schema as Schema
    from datashard.table.catalog import create_table as create_table
    from datashard.table.catalog import drop_table as drop_table
    from datashard.table.catalog import list_tables as list_tables
    from datashard.table.catalog import load_table as load_table
    from datashard.table.catalog import table_exists as table_exists
    from datashard.table.table import Table as Table

__version__ = "0.1.0"

# The table API is imported on first use, so ``import datashard.storage`` stays light.
_LAZY = {
    "create_table": "datashard.table.catalog",
    "load_table": "datashard.table.catalog",
    "drop_table": "datashard.table.catalog",
    "list_tables": "datashard.table.catalog",
    "table_exists": "datashard.table.catalog",
    "Table": "datashard.table.table",
    "Schema": "datashard.iceberg.schema",
    "col": "datashard.iceberg.expressions",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'datashard' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["__version__", *_LAZY, *_error_names]

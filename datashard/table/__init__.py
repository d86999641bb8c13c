"""Operations on a table: the catalog, ``Table``, versions, the commit loop, updates, scans and
the operations built on one snapshot producer. See docs/format.md for the layout."""

from __future__ import annotations

from datashard.table.table import Table, Transaction

__all__ = ["Table", "Transaction"]

"""Delete rows without rewriting data files (merge-on-read), read them back, then compact.

    python examples/row_deletes.py

Creates a table in the local warehouse (``./datashard-warehouse``, or ``DATASHARD_LOCAL_PATH``).
"""

from __future__ import annotations

import pyarrow as pa

from datashard import Schema, col, create_table, drop_table, load_table
from datashard.errors import TableNotFoundError

schema = Schema(
    schema_id=0,
    fields=[
        {"id": 1, "name": "user_id", "type": "long", "required": True},
        {"id": 2, "name": "event", "type": "string", "required": True},
    ],
)

try:
    drop_table("deletes-demo")
except TableNotFoundError:
    pass
table = create_table("deletes-demo", schema, properties={"write.delete.mode": "merge-on-read"})
table.append(
    pa.table(
        {
            "user_id": pa.array([i % 50 for i in range(1000)], pa.int64()),
            "event": [("login", "click", "logout")[i % 3] for i in range(1000)],
        }
    )
)

snapshot = table.delete(col("user_id") == 42)  # one position delete file; no file rewritten
assert snapshot is not None
print("delete files added:", snapshot.summary["added-delete-files"])
print("position deletes:", snapshot.summary["added-position-deletes"])

reader = load_table("deletes-demo")  # another process would see the same
print("rows left:", reader.count())
assert 42 not in set(reader.to_arrow().column("user_id").to_pylist())

result = table.compact()  # files with deletes are rewritten without the deleted rows
print(
    "after compact:",
    table.count(),
    "rows,",
    result.added_files,
    "file(s),",
    table.current_snapshot().summary["total-delete-files"],
    "delete files",
)

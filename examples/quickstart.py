"""datashard quickstart: create a table, append, load it again, read it into pandas.

Run it as is: tables go to the warehouse the environment configures (``DATASHARD_STORAGE_TYPE``
and ``DATASHARD_*``), or to ``./datashard-warehouse`` when nothing is set. Set
``DATASHARD_LOCAL_PATH=/some/dir`` to put them elsewhere, or ``DATASHARD_STORAGE_TYPE=s3`` with
``DATASHARD_S3_BUCKET`` (and endpoint/keys) for S3.
"""

from datashard import Schema, TableAlreadyExistsError, col, create_table, load_table

schema = Schema(
    schema_id=1,
    fields=[
        {"id": 1, "name": "user_id", "type": "long", "required": True},
        {"id": 2, "name": "event", "type": "string", "required": True},
        {"id": 3, "name": "timestamp", "type": "long", "required": True},
    ],
)

try:
    table = create_table("user-events", schema)  # in the configured warehouse (env or default)
except TableAlreadyExistsError:
    table = load_table("user-events")  # a second run appends to the same table
table.append_records([{"user_id": 1, "event": "login", "timestamp": 1700000000}], schema)

# several appends, one atomic snapshot
with table.transaction() as tx:
    tx.append_records([{"user_id": 2, "event": "login", "timestamp": 1700000060}])
    tx.append_records([{"user_id": 1, "event": "logout", "timestamp": 1700000120}])

table = load_table("user-events")  # another process, another machine
print(table.current_snapshot().snapshot_id)
df = table.to_pandas()  # current snapshot
print(df)

# filters prune data files by their statistics before any is opened
print(table.scan(columns=["user_id"], filter=col("event") == "logout").to_pandas())

# time travel: the table as of its first snapshot
first = table.snapshots()[0]
print(len(table.scan(snapshot_id=first.snapshot_id).to_pandas()), "row(s) in the first snapshot")
for entry in table.history():
    print(entry.timestamp_ms, entry.snapshot_id)

"""The lazy msgpack container in one page: write nested results once, read one value back.

Run it with a directory (default: a new temp dir) or any storage URI root::

    python examples/container.py                      # a temp dir on local disk
    python examples/container.py s3://bucket/prefix   # with DATASHARD_S3_* set for credentials
"""

from __future__ import annotations

import sys
import tempfile

from datashard.errors import EntryNotFoundError
from datashard.io.container import LazyReader, LazyWriter, combine


def main(root: str) -> None:
    uri = f"{root}/experiment.msgc"

    # Write: each entry is encoded and spooled as it is given; the TOC is written on close.
    with LazyWriter(uri) as w:
        w["config"] = {"lr": 3e-4, "layers": 12}
        w["runs"] = [
            {"epoch": i, "loss": 1.0 / (i + 1), "weights": bytes(40_000)} for i in range(50)
        ]
        w["notes"] = "baseline"

    # Read: the reader fetches the footer page; each lookup then reads just what it touches.
    with LazyReader(uri) as r:
        print("keys:", list(r))
        print("runs[7].loss:", r["runs"][7]["loss"])
        print("lr:", r["config"]["lr"], "| runs:", len(r["runs"]))
        try:
            r["missing"]
        except EntryNotFoundError as exc:  # also a KeyError
            print("missing key:", exc)

    # Append: add entries by writing new ones plus a new table of contents.
    with LazyWriter(uri, mode="a") as w:
        w["notes"] = "baseline, checked"

    # Combine: a new container from existing ones, entries copied by range, never decoded.
    with LazyWriter(f"{root}/other.msgc") as w:
        w.write([{"sample": i} for i in range(3)])
    combine(f"{root}/all.msgc", {"experiment": uri, "other": f"{root}/other.msgc"})
    with LazyReader(f"{root}/all.msgc") as r:
        print("combined:", r["experiment"]["notes"], r["other"].to_obj())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else f"file://{tempfile.mkdtemp()}")

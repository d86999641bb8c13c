"""The storage benchmark of issue 2 (and 6), in one run: every section side by side with its peers.

- S3 on Ceph RGW over loopback (bench/storage_s3.py): ``read_into`` of a 256 MiB object against
  boto3 ``get_object().read()``, s3fs ``cat_file`` and obstore with concurrent range GETs into a
  buffer; 1,000 small PUT then GET through our backend against plain boto3.
- Local disk (bench/storage_local.py): a cold 1 GiB read through ``file://`` and ``direct://``
  against a plain O_DIRECT ``preadv`` loop, with CPU seconds per GiB.
- Azure on Azurite and GCS on its emulator (bench/storage_cloud.py): whole reads and
  ``read_into`` against adlfs / gcsfs ``cat_file``.

Each section starts (and stops) the servers it needs on 127.0.0.1. ``--only s3,local,cloud``
picks sections; the peers install with ``pip install -r bench/requirements.txt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import storage_cloud  # noqa: E402
import storage_local  # noqa: E402
import storage_s3  # noqa: E402

MiB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", default="s3,local,cloud", help="comma-separated sections")
    parser.add_argument("--s3-size-mib", type=int, default=256)
    parser.add_argument("--local-size-mib", type=int, default=1024)
    parser.add_argument("--cloud-size-mib", type=int, default=64)
    parser.add_argument("--small", type=int, default=1000, help="small PUT/GET pairs on S3")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sections - {"s3", "local", "cloud"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; expected s3, local, cloud")
    if "s3" in sections:
        print("== S3 on Ceph RGW (loopback)")
        with storage_s3.s3_server() as (endpoint, access, secret):
            rows = storage_s3.run(
                endpoint,
                access,
                secret,
                size_mib=args.s3_size_mib,
                repeats=args.repeats,
                small=args.small,
            )
        storage_s3.print_rows(rows)
    if "local" in sections:
        print("\n== local disk")
        storage_local._print(storage_local.run(args.local_size_mib * MiB, None, args.repeats))
    if "cloud" in sections:
        print("\n== Azure on Azurite, GCS on its emulator")
        storage_cloud.print_rows(
            storage_cloud.run(size_mib=args.cloud_size_mib, repeats=args.repeats)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

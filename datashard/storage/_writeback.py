"""Starting the write-back of a file's dirty pages early, so that the ``fsync`` that makes the
file durable at its end has little left to wait for.

On Linux, ``sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)`` asks the kernel to
start writing a range of a file to disk and returns without waiting: a stream that calls it as
it goes has its disk writes overlap with whatever produces its bytes (Parquet encoding). It
promises nothing about durability (``fsync`` still does that); elsewhere, or where the call is
missing, this is a no-op.

Process-wide state: the libc function handle, looked up once at import.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

#: ``SYNC_FILE_RANGE_WRITE`` from ``<fcntl.h>``: start write-out of dirty pages, do not wait.
_SYNC_FILE_RANGE_WRITE = 2


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    loaded: Callable[[int, int, int, int], int] = function
    return loaded


_SYNC_FILE_RANGE = _load()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing bytes ``[offset, offset + length)`` of ``fd`` to disk,
    without waiting for them; quietly nothing where that is not available or fails."""
    if _SYNC_FILE_RANGE is not None and length > 0:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)

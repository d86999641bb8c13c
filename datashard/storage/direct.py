"""``direct:///abs/path``: the local backend, with every read done through ``O_DIRECT``.

Reads bypass the page cache: the kernel moves bytes from the device straight into user memory,
which costs little CPU and does not evict anything else from the cache. ``O_DIRECT`` needs file
offsets, lengths and memory addresses aligned to the device block; this backend aligns them:

- ``read_into`` reads straight into the caller's buffer wherever the buffer address and the file
  offset are congruent modulo :data:`ALIGN` (the usual case: a page-aligned buffer such as an
  ``mmap`` or a large numpy array, read from offset 0). The unaligned head and tail, and whole
  reads into a buffer that is not congruent (a ``bytearray``), go through a page-aligned bounce
  buffer of ``block_size`` bytes, one per thread, reused across calls.
- ``read`` and ``read_range`` read into a fresh aligned buffer and return its bytes (one copy).

Writes, ``head``, ``list`` and deletes are those of ``file://`` (buffered, then fsynced): an
``O_DIRECT`` write would need the caller's bytes copied into aligned memory first, and the
fsync before the rename already makes the write durable, so it would save nothing.

Where the file system refuses ``O_DIRECT`` (``EINVAL`` at open: ramfs, procfs, tmpfs before Linux
6.6, some FUSE file systems) a read raises ``UnsupportedOperationError`` naming the path and the
file system, unless the config says ``fallback=True``: then reads are buffered and a warning is
logged once per root.
"""

from __future__ import annotations

import builtins
import errno
import logging
import mmap
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datashard.errors import ConfigError, ObjectNotFoundError, UnsupportedOperationError
from datashard.storage._aligned import ALIGN, AlignedReader, file_system_of
from datashard.storage.base import validate_key, validate_range
from datashard.storage.local import LocalBackend, LocalConfig, path_from_uri, pread_into

log = logging.getLogger(__name__)

_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class DirectConfig(LocalConfig):
    """``direct:///abs/path``: ``LocalConfig`` plus the O_DIRECT read settings.

    - ``block_size``: bytes per read through the bounce buffer (a multiple of 4096; default
      4 MiB). Each thread that reads holds one such buffer.
    - ``fallback``: read buffered where the file system refuses O_DIRECT, instead of raising.

    Environment: ``DATASHARD_STORAGE_TYPE=direct``, ``DATASHARD_DIRECT_PATH``,
    ``DATASHARD_DIRECT_BLOCK_SIZE``, ``DATASHARD_DIRECT_FALLBACK``.
    """

    env_name = "DIRECT"

    block_size: int = 4 << 20
    fallback: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size < ALIGN or self.block_size % ALIGN:
            raise ConfigError(
                f"DirectConfig.block_size must be a positive multiple of {ALIGN}, "
                f"got {self.block_size}"
            )

    def root_uri(self) -> str:
        return "direct://" + self.path.rstrip("/")

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> DirectConfig:
        return cls.build({"path": path_from_uri(uri, "direct"), **options})


class DirectBackend(LocalBackend):
    """``file://`` with O_DIRECT reads into aligned, reused buffers."""

    scheme = "direct"
    config_class = DirectConfig
    config: DirectConfig

    def __init__(self, config: DirectConfig) -> None:
        super().__init__(config)
        self._local = threading.local()

    def native_path(self, key: str) -> str | None:
        """``None``: reads go through O_DIRECT here, never a buffered native reader."""
        validate_key(key)
        return None

    def _reader(self) -> AlignedReader:
        reader: AlignedReader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = AlignedReader(self.config.block_size)
            self._local.reader = reader
        return reader

    def _open_direct(self, key: str) -> tuple[int, int, bool]:
        """``(fd, size, direct)``: an O_DIRECT fd, or a buffered one when falling back."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise self._error(exc, key, "open") from exc
            if os.path.isdir(path):  # ext4 refuses O_DIRECT on a directory with EINVAL too
                raise ObjectNotFoundError(
                    f"no object {key!r} in {self.root_uri}: it is a directory", key
                ) from exc
            fs = file_system_of(path)
            if not self.config.fallback:
                raise UnsupportedOperationError(
                    f"direct:// cannot read {key!r}: the file system at {path!r} ({fs}) refuses "
                    "O_DIRECT (EINVAL at open); use file:// for this path, or "
                    "DirectConfig(fallback=True) to read it buffered",
                    key,
                ) from exc
            self._warn_fallback(path, fs)
            fd, size = self._open_read(key)
            return fd, size, False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ObjectNotFoundError(
                    f"no object {key!r} in {self.root_uri}: it is a directory", key
                )
            return fd, st.st_size, True
        except BaseException:
            os.close(fd)
            raise

    def _warn_fallback(self, path: str, fs: str) -> None:
        with _WARNED_LOCK:
            if self.root in _WARNED:
                return
            _WARNED.add(self.root)
        log.warning(
            "direct:// under %s: the file system (%s) refuses O_DIRECT (first seen at %s); "
            "reading buffered because fallback=True",
            self.root,
            fs,
            path,
        )

    # -- reads -----------------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        fd, size, direct = self._open_direct(key)
        try:
            return self._read_bytes(fd, key, 0, size, direct)
        finally:
            os.close(fd)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        validate_key(key)
        validate_range(key, start, end)
        fd, size, direct = self._open_direct(key)
        try:
            return self._read_bytes(fd, key, start, min(end, size), direct)
        finally:
            os.close(fd)

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        """Many ranges through one O_DIRECT file, in the order given."""
        validate_key(key)
        for start, end in ranges:
            validate_range(key, start, end)
        fd, size, direct = self._open_direct(key)
        try:
            return [self._read_bytes(fd, key, s, min(e, size), direct) for s, e in ranges]
        finally:
            os.close(fd)

    def _read_bytes(self, fd: int, key: str, start: int, end: int, direct: bool) -> bytes:
        if end <= start:
            return b""
        if not direct:
            return self._pread(fd, key, start, end)
        n = end - start
        reader = self._reader()
        try:
            if n <= reader.block_size // 2:
                return reader.read_small(fd, start, n)
            # a scratch buffer laid out so that the direct body needs no bounce
            lead = start % ALIGN
            scratch = mmap.mmap(-1, lead + n + ALIGN, flags=mmap.MAP_PRIVATE)
            try:
                with memoryview(scratch) as whole:
                    view = whole[lead : lead + n]
                    got = reader.read_into(fd, view, start)
                    data = bytes(view[:got])
                    view.release()
                return data
            finally:
                scratch.close()
        except OSError as exc:
            raise self._error(exc, key, "read") from exc

    def read_into(self, key: str, buffer: Any, offset: int = 0) -> int:
        """O_DIRECT straight into ``buffer`` where aligned; through the bounce buffer elsewhere."""
        validate_key(key)
        validate_range(key, offset, offset)
        view = memoryview(buffer).cast("B")
        fd, size, direct = self._open_direct(key)
        try:
            want = max(0, min(len(view), size - offset))
            if want == 0:
                return 0
            try:
                if not direct:
                    return pread_into(fd, view[:want], offset)
                return self._reader().read_into(fd, view[:want], offset)
            except OSError as exc:
                raise self._error(exc, key, "read") from exc
        finally:
            os.close(fd)

    def close(self) -> None:
        reader: AlignedReader | None = getattr(self._local, "reader", None)
        if reader is not None:
            reader.close()
            self._local.reader = None

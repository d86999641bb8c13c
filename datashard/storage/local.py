"""``file:///abs/path`` (or a plain path): objects as files under one root directory.

- ``write`` is atomic: the bytes go to a temp file in the target's directory, which is fsynced,
  renamed over the target with ``os.replace`` and the directory fsynced. A reader sees the old
  file or the new one, never a mix. ``write`` streams an iterable of chunks without joining them.
- ``open_output`` streams into such a temp file (written through a 1 MiB buffer); ``close``
  publishes it as ``write`` does, ``abort`` removes it. With ``fsync`` on, every
  :data:`WRITEBACK_EVERY` bytes the kernel is asked to start writing them to disk
  (:mod:`datashard.storage._writeback`), so the disk works while the stream is still being
  produced and the final fsync waits for little.
- ``put_if_absent`` is atomic: a fully written, fsynced temp file is hard-linked to the key with
  ``os.link``, which fails if the key exists. There is no check-then-write.
- Temp files are named ``.datashard-tmp-<hex>``; ``list`` never shows them, and a key with a
  segment starting with ``.datashard-tmp-`` is refused with ``InvalidPathError``.
- ``list`` walks the tree lazily in lexicographic order of the full key, one directory at a time.
- ``delete`` prunes directories it leaves empty (best effort, never above the root).
- The etag is a hash of (device, inode, size, mtime_ns): it changes on every ``write``, even of
  the same bytes, and stays put while the file is untouched. It is not a content hash.

The file system cannot hold both ``a`` and ``a/b``; asking for that raises
``UnsupportedOperationError``.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
import stat
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from datashard.errors import (
    ConfigError,
    InvalidPathError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
    UnsupportedOperationError,
)
from datashard.storage._writeback import start_writeback
from datashard.storage.base import (
    ObjectMeta,
    ObjectWriter,
    StorageBackend,
    WriteData,
    byte_view,
    validate_key,
    validate_prefix,
    validate_range,
)
from datashard.storage.config import BackendConfig, split_scheme

#: Temp files start with this; no key segment may.
TEMP_PREFIX = ".datashard-tmp-"
#: Where tables live when nothing is configured (relative to the cwd when the config is made).
DEFAULT_PATH = "datashard-warehouse"
#: The most one ``pread``/``preadv`` call moves (Linux caps a call just under 2 GiB).
_MAX_IO = 1 << 30
_NOT_FOUND = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
#: Attempts to recreate a directory that a concurrent ``delete`` pruned under a writer.
_MKDIR_ATTEMPTS = 16
#: A stream asks for write-back of what it wrote each time this many more bytes are written.
WRITEBACK_EVERY = 8 << 20


def _default_path() -> str:
    return os.path.abspath(DEFAULT_PATH)


def path_from_uri(uri: str, scheme: str) -> str:
    """The absolute directory of ``scheme:///abs/path``, ``scheme://localhost/abs`` or a path."""
    got, rest = split_scheme(uri)
    if "://" not in uri:
        return os.path.abspath(os.path.expanduser(uri))
    if got != scheme:
        raise ConfigError(f"{scheme}:// backend takes a {scheme}:// URI or a path, got {uri!r}")
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest.startswith("/"):
        raise ConfigError(
            f"{scheme}:// URI must hold an absolute path ({scheme}:///abs/path), got {uri!r}"
        )
    return os.path.abspath(rest)


@dataclass(frozen=True, kw_only=True)
class LocalConfig(BackendConfig):
    """``file:///abs/path``: ``path`` is the root directory, made absolute when the config is made.

    Environment: ``DATASHARD_STORAGE_TYPE=local``, ``DATASHARD_LOCAL_PATH`` (default
    ``./datashard-warehouse`` under the current directory) and ``DATASHARD_LOCAL_FSYNC``.

    ``fsync=False`` skips every fsync (of files and of directories). Writes stay atomic to
    readers and ``put_if_absent`` stays exclusive between processes, so table commits are still
    never lost or doubled while the machine runs; what goes is crash durability: after a power
    loss or kernel crash, objects written shortly before, table versions included, may be
    missing or empty. For scratch and test data; it is what object_store's LocalFileSystem
    (lance, delta-rs) does unless told otherwise.
    """

    env_name = "LOCAL"

    path: str = field(default_factory=_default_path)
    fsync: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.path == "" or "\x00" in self.path:
            raise ConfigError(f"{type(self).__name__}.path must be a directory, got {self.path!r}")
        object.__setattr__(self, "path", os.path.abspath(os.path.expanduser(self.path)))

    def root_uri(self) -> str:
        return "file://" + self.path.rstrip("/")

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> LocalConfig:
        return cls.build({"path": path_from_uri(uri, "file"), **options})


def _stat_meta(key: str, st: os.stat_result) -> ObjectMeta:
    token = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode()
    return ObjectMeta(
        key=key,
        size=st.st_size,
        etag=hashlib.blake2b(token, digest_size=16).hexdigest(),
        last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc),
    )


def _chunks(data: WriteData) -> Iterator[memoryview]:
    """``data`` as byte views, without joining an iterable of chunks."""
    view = byte_view(data)
    if view is not None:
        yield view
        return
    chunks: Iterable[Any] = data  # not bytes-like: byte_view said so
    for chunk in chunks:
        if isinstance(chunk, str):
            raise TypeError("write() chunks must be bytes-like, got a str; encode it first")
        yield memoryview(chunk).cast("B")


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view[:_MAX_IO])
        view = view[n:]


def pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from file position ``offset``; stop early only at end of file."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done : done + _MAX_IO]], offset + done)
        if n == 0:
            break
        done += n
    return done


class LocalBackend(StorageBackend):
    """Objects as files under ``config.path``; see the module docstring for the guarantees."""

    scheme = "file"
    config_class = LocalConfig
    config: LocalConfig

    def __init__(self, config: LocalConfig) -> None:
        super().__init__(config)
        self.root = config.path

    # -- paths and errors ------------------------------------------------------------------

    def _path(self, key: str, writing: bool = False) -> str:
        """The file of ``key``; ``writing`` also refuses names the file system cannot hold
        (reading such a key is simply not found)."""
        validate_key(key)
        for segment in key.split("/"):
            if segment.startswith(TEMP_PREFIX):
                raise InvalidPathError(
                    f"object key {key!r} has a segment starting with {TEMP_PREFIX!r}, which "
                    f"{self.scheme}:// reserves for its temp files",
                    key=key,
                )
            if writing and len(segment.encode("utf-8", "surrogateescape")) > self._name_max:
                raise InvalidPathError(
                    f"object key {key!r} has a segment of {len(segment.encode())} bytes; the file "
                    f"system under {self.root_uri} allows names of at most {self._name_max} bytes",
                    key=key,
                )
        return os.path.join(self.root, *key.split("/"))

    @property
    def _name_max(self) -> int:
        """The longest file name the file system takes (``NAME_MAX``, 255 on most)."""
        limit = getattr(self, "_name_max_cache", None)
        if limit is None:
            try:
                limit = os.pathconf(self.root, "PC_NAME_MAX")
            except OSError:  # the root does not exist yet: the usual POSIX limit
                limit = 255
            self._name_max_cache = limit
        return int(limit)

    def _error(self, exc: OSError, key: str, action: str) -> StorageError:
        """The datashard error for ``exc``, raised while trying to ``action`` ``key``."""
        code = exc.errno or 0
        name = errno.errorcode.get(code, str(code))
        where = f"{key!r} in {self.root_uri}"
        if code in _NOT_FOUND:
            return ObjectNotFoundError(f"no object {where} (could not {action} it: {name})", key)
        if code in _DENIED:
            return StoragePermissionError(
                f"permission denied to {action} {where} ({name}: {exc.strerror})", key
            )
        return StorageError(f"could not {action} {where}: {exc.strerror} ({name})", key)

    def _open_read(self, key: str) -> tuple[int, int]:
        """An fd on the regular file of ``key`` and its size; ``ObjectNotFoundError`` else."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._error(exc, key, "open") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ObjectNotFoundError(
                    f"no object {key!r} in {self.root_uri}: it is a directory", key
                )
            return fd, st.st_size
        except BaseException:
            os.close(fd)
            raise

    # -- reads -----------------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        fd, size = self._open_read(key)
        try:
            return self._pread(fd, key, 0, size)
        finally:
            os.close(fd)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        validate_key(key)
        validate_range(key, start, end)
        fd, size = self._open_read(key)
        try:
            return self._pread(fd, key, start, min(end, size))
        finally:
            os.close(fd)

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        """Many ranges through one open file, in the order given."""
        validate_key(key)
        for start, end in ranges:
            validate_range(key, start, end)
        fd, size = self._open_read(key)
        try:
            return [self._pread(fd, key, start, min(end, size)) for start, end in ranges]
        finally:
            os.close(fd)

    def _pread(self, fd: int, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            if end - start <= _MAX_IO:
                return os.pread(fd, end - start, start)
            out = bytearray(end - start)
            got = pread_into(fd, memoryview(out), start)
            return bytes(out[:got])
        except OSError as exc:
            raise self._error(exc, key, "read") from exc

    def native_path(self, key: str) -> str | None:
        """The file holding ``key``, for a reader that reads it natively (pyarrow's Parquet
        reader, its reads in C++ without the interpreter); ``None`` where reads must go through
        this backend (``direct://``). Raises ``InvalidPathError`` for an invalid key; the file
        may not exist."""
        return self._path(key)

    def read_into(self, key: str, buffer: Any, offset: int = 0) -> int:
        """``preadv`` straight into ``buffer``: no intermediate copy."""
        validate_key(key)
        validate_range(key, offset, offset)
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError(
                f"read_into needs a writable buffer, got a read-only {type(buffer).__name__}"
            )
        fd, size = self._open_read(key)
        try:
            want = max(0, min(len(view), size - offset))
            try:
                return pread_into(fd, view[:want], offset)
            except OSError as exc:
                raise self._error(exc, key, "read") from exc
        finally:
            os.close(fd)

    def head(self, key: str) -> ObjectMeta:
        path = self._path(key)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise self._error(exc, key, "stat") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFoundError(
                f"no object {key!r} in {self.root_uri}: it is a directory", key
            )
        return _stat_meta(key, st)

    # -- writes ----------------------------------------------------------------------------

    def _fsync_dir(self, directory: str) -> None:
        if not self.config.fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _makedirs(self, directory: str, key: str) -> None:
        """Create ``directory`` and its missing parents, fsyncing each parent that gained one."""
        missing: builtins.list[str] = []
        probe = directory
        while not os.path.isdir(probe):
            missing.append(probe)
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise UnsupportedOperationError(
                        f"cannot write {key!r} in {self.root_uri}: "
                        f"{os.path.relpath(path, self.root)!r} is an object, and a file system "
                        "cannot hold both 'a' and 'a/b'",
                        key,
                    ) from None
                continue
            self._fsync_dir(os.path.dirname(path))

    def _open_temp(self, key: str, path: str, flags: int) -> tuple[int, str]:
        """A new, empty temp file beside ``path`` (parents made as needed): ``(fd, temp)``."""
        directory = os.path.dirname(path)
        temp = os.path.join(directory, f"{TEMP_PREFIX}{uuid.uuid4().hex}")
        for attempt in range(_MKDIR_ATTEMPTS):
            try:
                self._makedirs(directory, key)
                return os.open(temp, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), temp
            except FileNotFoundError:  # a concurrent delete pruned a directory: recreate it
                if attempt == _MKDIR_ATTEMPTS - 1:
                    raise
            except NotADirectoryError:
                raise UnsupportedOperationError(
                    f"cannot write {key!r} in {self.root_uri}: a parent of it is an object, and "
                    "a file system cannot hold both 'a' and 'a/b'",
                    key,
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_temp(self, key: str, path: str, data: WriteData) -> str:
        """Write ``data`` to a fsynced temp file beside ``path``; return the temp path."""
        fd, temp = self._open_temp(key, path, os.O_WRONLY)
        try:
            for view in _chunks(data):
                _write_all(fd, view)
            if self.config.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(temp)
            raise
        os.close(fd)
        return temp

    def write(self, key: str, data: WriteData) -> None:
        path = self._path(key, writing=True)
        try:
            temp = self._write_temp(key, path, data)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise self._error(exc, key, "write") from exc
        self._replace(temp, path, key)

    def _replace(self, temp: str, path: str, key: str, fd: int | None = None) -> None:
        """Rename the finished temp file over ``path`` (fsyncing ``fd`` first, if given) and
        fsync the directory; on failure remove ``temp`` and leave the object as it was."""
        try:
            if fd is not None and self.config.fsync:
                os.fsync(fd)
            os.replace(temp, path)
        except OSError as exc:
            _unlink_quietly(temp)
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise self._is_directory(key) from exc
            raise self._error(exc, key, "write") from exc
        self._sync_parent(path, key)

    # -- a file written in place, then published ---------------------------------------------

    def open_spool(self, key: str) -> tuple[int, str]:
        """A new temp file in ``key``'s directory, open for reading and writing: ``(fd, path)``.

        For a caller that writes an object's bytes itself (the container writer) and then makes
        them the object with :meth:`publish_spool`, with no second copy. Like every temp file it
        is never listed; the caller closes ``fd`` and removes the file if it does not publish.
        """
        path = self._path(key, writing=True)
        try:
            return self._open_temp(key, path, os.O_RDWR)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise self._error(exc, key, "write") from exc

    def publish_spool(self, fd: int, temp: str, key: str) -> None:
        """Make the file ``temp`` (from :meth:`open_spool`, its data written through ``fd``) the
        object ``key``, atomically and durably as :meth:`write` does: fsync, rename over the
        key, fsync the directory. On failure the object is unchanged and ``temp`` is removed."""
        path = self._path(key, writing=True)
        if os.path.dirname(temp) != os.path.dirname(path):
            raise ValueError(f"{temp!r} is not a spool file of {key!r} (open_spool makes one)")
        self._replace(temp, path, key, fd)

    def open_output(self, key: str) -> ObjectWriter:
        fd, temp = self.open_spool(key)
        return _LocalWriter(self, key, fd, temp)

    def put_if_absent(self, key: str, data: bytes) -> None:
        path = self._path(key, writing=True)
        try:
            temp = self._write_temp(key, path, data)
        except OSError as exc:
            if isinstance(exc, StorageError):
                raise
            raise self._error(exc, key, "create") from exc
        try:
            os.link(temp, path)
        except FileExistsError as exc:
            if os.path.isdir(path):
                raise self._is_directory(key) from exc
            raise ObjectExistsError(
                f"object {key!r} already exists in {self.root_uri}", key
            ) from exc
        except OSError as exc:
            raise self._error(exc, key, "create") from exc
        finally:
            _unlink_quietly(temp)
        self._sync_parent(path, key)

    def _is_directory(self, key: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"cannot write {key!r} in {self.root_uri}: objects exist under {key + '/'!r}, and a "
            "file system cannot hold both 'a' and 'a/b'",
            key,
        )

    def _sync_parent(self, path: str, key: str) -> None:
        try:
            self._fsync_dir(os.path.dirname(path))
        except OSError as exc:
            raise self._error(exc, key, "sync the directory of") from exc

    # -- listing and deletes ---------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        validate_prefix(prefix)
        directory, _, start = prefix.rpartition("/")
        base = os.path.join(self.root, *directory.split("/")) if directory else self.root
        return self._walk(base, directory + "/" if directory else "", start)

    def _walk(self, directory: str, key_prefix: str, name_prefix: str) -> Iterator[ObjectMeta]:
        """Objects under ``directory`` whose names start with ``name_prefix``, in key order.

        Sorting a directory's entries by name, with ``/`` appended to subdirectories, puts every
        key under a subdirectory exactly where it belongs among its siblings (``a.txt`` <
        ``a/b``), so the walk is lexicographic by full key while holding one directory at a time.
        """
        try:
            with os.scandir(directory) as it:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e)
                    for e in it
                    if e.name.startswith(name_prefix) and not e.name.startswith(TEMP_PREFIX)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._error(exc, key_prefix or "(root)", "list") from exc
        entries.sort(key=lambda pair: pair[0])
        for sort_name, entry in entries:
            if sort_name.endswith("/"):
                yield from self._walk(entry.path, key_prefix + sort_name, "")
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:  # deleted while we walked
                continue
            except OSError as exc:
                raise self._error(exc, key_prefix + entry.name, "stat") from exc
            if stat.S_ISREG(st.st_mode):
                yield _stat_meta(key_prefix + entry.name, st)

    def remove_abandoned(
        self, prefix: str, modified_before: datetime, *, dry_run: bool = False
    ) -> builtins.list[str]:
        """Remove the temp files (``.datashard-tmp-*``) under ``prefix`` that a writer killed
        mid-write left behind, last modified before ``modified_before``; their ``file://``
        URIs. A temp file in use is younger than any sane cutoff (it lives for one write)."""
        validate_prefix(prefix)
        directory = prefix.rpartition("/")[0]
        base = os.path.join(self.root, *directory.split("/")) if directory else self.root
        cutoff = modified_before.timestamp()
        found: builtins.list[str] = []
        for parent, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = os.path.join(parent, name)
                key = os.path.relpath(path, self.root).replace(os.sep, "/")
                if not key.startswith(prefix):
                    continue
                try:
                    if os.lstat(path).st_mtime >= cutoff:
                        continue
                    if not dry_run:
                        os.unlink(path)
                except FileNotFoundError:  # gone meanwhile (its write finished or failed)
                    continue
                except OSError as exc:
                    raise self._error(exc, key, "remove the abandoned temp file") from exc
                found.append(f"{self.root_uri.rstrip('/')}/{key}")
        return found

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        """Unlink each file, then fsync and prune each directory touched once."""
        paths = [(key, self._path(key)) for key in [validate_key(k) for k in keys]]
        touched: dict[str, str] = {}
        for key, path in paths:
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as exc:
                if exc.errno == errno.EPERM and os.path.isdir(path):
                    continue  # a directory is not an object: nothing to delete
                raise self._error(exc, key, "delete") from exc
            touched.setdefault(os.path.dirname(path), key)
        for directory, key in sorted(touched.items(), reverse=True):
            try:
                self._fsync_dir(directory)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._error(exc, key, "sync the directory of") from exc
            self._prune(directory)

    def _prune(self, directory: str) -> None:
        """Remove ``directory`` and its parents while empty, never the root (best effort)."""
        root = self.root.rstrip("/") or "/"
        while directory != root and directory.startswith(root):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)


class _LocalWriter(ObjectWriter):
    """A spool file (:meth:`LocalBackend.open_spool`) written through a buffer, published on
    ``close`` by :meth:`LocalBackend.publish_spool`."""

    buffer_size = 1 << 20

    def __init__(self, backend: LocalBackend, key: str, fd: int, temp: str) -> None:
        super().__init__(key)
        self._backend = backend
        self._fd = fd
        self._temp = temp
        self._buffer = bytearray()
        self._written = 0  # bytes written to the file
        self._written_back = 0 if backend.config.fsync else -1  # write-back asked up to here

    def _put(self, view: memoryview) -> None:
        try:
            _write_all(self._fd, view)  # large writes free the GIL
        except OSError as exc:
            raise self._backend._error(exc, self.key, "write") from exc
        self._written += len(view)
        if self._written_back >= 0 and self._written - self._written_back >= WRITEBACK_EVERY:
            start_writeback(self._fd, self._written_back, self._written - self._written_back)
            self._written_back = self._written

    def _drain(self) -> None:
        self._put(memoryview(self._buffer))
        self._buffer = bytearray()

    def _write(self, view: memoryview) -> None:
        if len(view) >= self.buffer_size:
            if self._buffer:
                self._drain()
            self._put(view)  # large writes skip the buffer
            return
        self._buffer += view
        if len(self._buffer) >= self.buffer_size:
            self._drain()

    def _commit(self) -> None:
        if self._buffer:
            self._drain()
        fd, self._fd = self._fd, -1
        try:
            self._backend.publish_spool(fd, self._temp, self.key)
        finally:
            os.close(fd)

    def _discard(self) -> None:
        self._buffer = bytearray()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        _unlink_quietly(self._temp)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

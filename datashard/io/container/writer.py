"""``LazyWriter``: write a container through a local spool file, publish it on a clean close.

Every writer spools to a local temp file (a table of contents can only be written once every
entry is known), then on ``close`` writes the TOC and footer and publishes the file. To an object
store (and any backend but ``file://``/``direct://``) it hands the whole file, mapped in memory,
to the backend's atomic ``write`` (object stores upload large ones in parts); the local disk
(``spool_dir``, default the system temp dir) must hold the whole container. To ``file://`` and
``direct://`` it spools in the target's own directory, as a hidden temp file, and publishes by
fsync and rename: no second copy. Either way the temp file is gone after ``close``, whether
publishing succeeded or failed; a writer left by an exception publishes nothing.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Iterable
from types import TracebackType
from typing import IO, Any, Literal

from datashard.errors import ContainerError, ObjectNotFoundError
from datashard.io.container.encoder import BATCH, Encoder, ListBuilder, MapBuilder, Node
from datashard.io.container.format import (
    FOOTER_SIZE,
    HEADER_SIZE,
    Kind,
    Ref,
    check_header,
    decode_footer,
    encode_footer,
    encode_header,
)
from datashard.io.container.regions import load_list_builder, load_map_builder
from datashard.io.container.source import Location, RangeSource, Target, resolve
from datashard.storage.local import LocalBackend

#: Default size of the range reads that copy an existing container (append mode, combine).
PART_SIZE = 8 * 1024 * 1024
#: Default packed size above which a nested dict or list becomes a lazy node.
LAZY_THRESHOLD = 16 * 1024

Mode = Literal["w", "a"]


class LazyWriter:
    """Write a lazy msgpack container to ``target`` (a URI, or ``(backend, key)``).

    Three ways to fill it, pick one per container:

    - ``w["name"] = value`` builds a root map entry by entry (a repeated key replaces);
    - ``w.append(value)`` / ``w.extend(values)`` build a root list;
    - ``w.write(obj)`` stores ``obj`` as the whole root (once).

    Each value is encoded and written to the spool as it is given, so memory holds only the
    index. Nested dicts, lists and tuples packing to more than ``lazy_threshold`` bytes become
    lazy containers of their own. ``mode="a"`` opens an existing container (a missing one starts
    empty) and adds to its root map or list; see docs/container.md for the space it costs.

    ``spool_dir`` holds the temp file (default: the system temp dir, or for a ``file://`` or
    ``direct://`` target its own directory, which lets ``close`` publish by rename; naming a
    ``spool_dir`` there costs a copy); ``part_size`` is the size of the range reads that copy an
    existing container in append mode.

    The container is published only by a clean ``close()`` (leaving the ``with`` block without an
    exception); ``abort()`` or an exception discard it. Raises ``ContainerError`` for a value
    msgpack cannot encode (the writer stays usable) or for mixing the three ways.
    """

    def __init__(
        self,
        target: Target | RangeSource,
        key: str | None = None,
        *,
        mode: Mode = "w",
        lazy_threshold: int = LAZY_THRESHOLD,
        spool_dir: str | None = None,
        part_size: int = PART_SIZE,
        **storage_options: Any,
    ) -> None:
        if mode not in ("w", "a"):
            raise ContainerError(f"mode must be 'w' or 'a', got {mode!r}")
        if part_size < 1 or lazy_threshold < 0:
            raise ContainerError(
                f"part_size must be >= 1 and lazy_threshold >= 0, got {part_size}, {lazy_threshold}"
            )
        self._loc: Location = resolve(target, key, storage_options)
        self._backend = self._loc.backend
        self.uri = self._loc.uri
        self._part_size = part_size
        self._root: Node | Ref | None = None
        self._closed = False
        self.size: int | None = None
        backend = self._backend
        self._local: LocalBackend | None = None
        if spool_dir is None and isinstance(backend, LocalBackend):
            self._local = backend
            try:
                fd, self.spool_path = backend.open_spool(self._loc.key)
            except BaseException:
                self._loc.close()
                raise
        else:
            fd, self.spool_path = tempfile.mkstemp(
                prefix=".datashard-container-", suffix=".tmp", dir=spool_dir
            )
        self._file: IO[bytes] = os.fdopen(fd, "w+b", buffering=1024 * 1024)
        try:
            start = HEADER_SIZE
            if mode == "a":
                start = self._load_existing()
            if start == HEADER_SIZE:
                self._file.write(encode_header())
            self._enc = Encoder(self._file, start, lazy_threshold)
        except BaseException:
            self._discard()
            raise

    # -- filling ---------------------------------------------------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        root = self._root_as(MapBuilder, "w[key] = value")
        mark = self._enc.mark()
        try:
            self._enc.map_entry(root, key, value, "the container")
        except BaseException:
            self._enc.rollback(mark)
            raise

    def append(self, value: Any) -> None:
        root = self._root_as(ListBuilder, "append()")
        mark = self._enc.mark()
        try:
            self._enc.list_entry(root, value, "the root", len(root))
        except BaseException:
            self._enc.rollback(mark)
            raise

    def extend(self, values: Iterable[Any]) -> None:
        if not isinstance(values, (list, tuple)):
            for value in values:
                self.append(value)
            return
        for i in range(0, len(values), BATCH):
            batch = list(values[i : i + BATCH])
            root = self._root_as(ListBuilder, "append()")
            mark = self._enc.mark()
            try:
                done = self._enc.list_batch(root, batch)
            except BaseException:
                self._enc.rollback(mark)
                raise
            if not done:  # a container, a large bytes or a bad value: one by one
                for value in batch:
                    self.append(value)

    def write(self, obj: Any) -> None:
        """Store ``obj`` as the whole root: a map for a dict, a list for a list, else one value."""
        self._check_open()
        if self._root is not None:
            raise ContainerError(
                f"{self.uri}: write(obj) sets the whole root and was called after the root was "
                "started; use one of w[key] = value, append() or a single write()"
            )
        mark = self._enc.mark()
        try:
            if isinstance(obj, (dict, list, tuple)):
                self._root = self._enc.node(obj, "the root")
            else:
                off, length = self._enc.packed(obj, "the root")
                self._root = Ref(Kind.PACKED, off, length)
        except BaseException:
            self._enc.rollback(mark)
            raise

    def _root_as(self, cls: type[Any], how: str) -> Any:
        """The root builder, made on first use; ``ContainerError`` if the root is another kind."""
        self._check_open()
        if self._root is None:
            self._root = cls()
        if not isinstance(self._root, cls):
            names = {MapBuilder: "a map", ListBuilder: "a list", Ref: "a single value"}
            raise ContainerError(
                f"{self.uri}: {how} needs {names[cls]} at the root, but the root is already "
                f"{names[type(self._root)]}"
            )
        return self._root

    def _check_open(self) -> None:
        if self._closed:
            raise ContainerError(f"{self.uri}: the writer is closed")

    # -- finishing -------------------------------------------------------------------------

    def close(self) -> None:
        """Write the TOC and footer, publish the container, delete the spool file."""
        if self._closed:
            return
        self._closed = True
        try:
            root = self._root if self._root is not None else MapBuilder()
            toc_start, root_ref = self._enc.finish(root)
            size = self._enc.pos + FOOTER_SIZE
            self._file.write(encode_footer(size, toc_start, root_ref))
            self._file.flush()
            if self._local is not None:
                self._local.publish_spool(self._file.fileno(), self.spool_path, self._loc.key)
            else:
                self._upload(size)
            self.size = size
        finally:
            self._discard()

    def abort(self) -> None:
        """Discard everything written; no object is created or changed."""
        self._closed = True
        self._discard()

    def __enter__(self) -> LazyWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _upload(self, size: int) -> None:
        """Hand the spool file to the backend's atomic ``write`` as one buffer, without a copy.

        The buffer is the spool file mapped in memory; the backend splits it into parts where it
        uploads in parts (S3 above its multipart threshold, Azure blocks, GCS resumable).
        """
        self._file.flush()
        mapped = mmap.mmap(self._file.fileno(), size, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        try:
            self._backend.write(self._loc.key, view)
        finally:
            try:
                view.release()
                mapped.close()
            except BufferError:  # a part is still referenced (by a traceback): freed with it
                pass

    def _discard(self) -> None:
        self._closed = True
        try:
            self._file.close()
        finally:
            try:
                os.unlink(self.spool_path)
            except FileNotFoundError:
                pass
            self._loc.close()

    # -- append mode -----------------------------------------------------------------------

    def _load_existing(self) -> int:
        """Copy the existing object into the spool and reopen its root; return the end offset."""
        name, key = self.uri, self._loc.key
        try:
            size = self._backend.head(key).size
        except ObjectNotFoundError:
            return HEADER_SIZE
        for start in range(0, size, self._part_size):
            end = min(start + self._part_size, size)
            chunk = self._backend.read_range(key, start, end)
            if len(chunk) != end - start:
                raise ContainerError(f"{name} changed size while being copied for append")
            self._file.write(chunk)
        self._file.flush()
        self._file.seek(0)
        check_header(self._file.read(HEADER_SIZE), name, key)
        self._file.seek(max(0, size - FOOTER_SIZE))
        footer = decode_footer(self._file.read(FOOTER_SIZE), size, name, key)
        self._file.seek(footer.root.off)
        region = self._file.read(footer.root.length)
        if footer.root.kind == Kind.MAP:
            self._root = load_map_builder(region, footer.root, size - FOOTER_SIZE, name, key)
        elif footer.root.kind == Kind.LIST:
            self._root = load_list_builder(region, footer.root, size - FOOTER_SIZE, name, key)
        else:
            raise ContainerError(
                f"{name} holds a single value at its root; only a root map or list can be "
                "appended to"
            )
        self._file.seek(size)
        return size

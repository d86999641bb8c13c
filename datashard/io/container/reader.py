"""``LazyReader``: open a container with one suffix read, then read only the entries asked for.

Opening costs one ``read_tail`` of the last ``tail_size`` bytes: one suffix request on backends
that support it, else a ``head`` and a range read (only the range read when ``size=`` is given).
Those bytes hold the footer and usually the root index and the indexes of the most recently
written nested containers. A lookup then costs one range read for the value; an index page the
suffix did not hold costs one more, once (it is cached).
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from types import TracebackType
from typing import Any

from datashard.errors import ConfigError, ContainerError, CorruptFileError
from datashard.io.container.format import (
    FOOTER_SIZE,
    Footer,
    Kind,
    check_header,
    decode_footer,
)
from datashard.io.container.nodes import Ctx, LazyList, LazyMap
from datashard.io.container.source import RangeSource, Target, resolve

#: Default length of the suffix read at open: the footer plus the root index of a map of up to
#: about 10,000 entries (48 bytes each with short keys). Files this small are read whole, and
#: then no lookup costs a request. On S3 512 KiB costs a few ms more than 64 KiB, far less
#: than the second round trip a root index that did not fit would cost.
TAIL_SIZE = 512 * 1024
#: Default bound on cached index bytes beyond that suffix.
CACHE_BYTES = 64 * 1024 * 1024
#: A node index up to this size is fetched whole (one request) the first time it is needed.
WHOLE_INDEX_LIMIT = 1024 * 1024


class LazyReader:
    """Read a lazy msgpack container at ``target`` (a URI, or ``(backend, key)``).

    The reader is the root: a map root gives ``r[key]``, ``r.get(key, default)``, ``key in r``,
    ``keys()``, ``values()``, ``items()``; a list root gives ``r[i]`` and slices; both give
    ``len`` and iteration. Nested containers come back as :class:`LazyMap` / :class:`LazyList`
    views, so ``r["runs"][7]["loss"]`` reads only the indexes and the one value it touches.
    ``to_obj()`` materialises everything with one whole-object read.

    Raises ``ObjectNotFoundError`` (no such object), ``CorruptFileError`` (truncated, wrong magic,
    bad checksum or index), ``UnsupportedFormatVersionError`` (written by a newer datashard),
    ``EntryNotFoundError`` (a missing key or index; a ``KeyError`` and an ``IndexError``).
    """

    def __init__(
        self,
        target: Target | RangeSource,
        key: str | None = None,
        *,
        size: int | None = None,
        tail_size: int = TAIL_SIZE,
        cache_bytes: int = CACHE_BYTES,
        whole_index_limit: int = WHOLE_INDEX_LIMIT,
        **storage_options: Any,
    ) -> None:
        if tail_size < 1 or cache_bytes < 0 or whole_index_limit < 0:
            raise ConfigError(
                "tail_size must be >= 1 and cache_bytes, whole_index_limit >= 0; got "
                f"{tail_size}, {cache_bytes}, {whole_index_limit}"
            )
        self._loc = resolve(target, key, storage_options)
        self.uri = self._loc.uri
        self._options = {
            "tail_size": tail_size,
            "cache_bytes": cache_bytes,
            "whole_index_limit": whole_index_limit,
        }
        tail_size = max(tail_size, FOOTER_SIZE)
        try:
            source, key = self._loc.source, self._loc.key
            tail: bytes | None = None
            if size is None:
                if hasattr(source, "read_tail"):  # one suffix request where the backend can
                    tail, size = source.read_tail(key, tail_size)
                else:
                    size = source.head(key).size
            self.size = size
            self._ctx = Ctx(self._loc, size, cache_bytes, whole_index_limit)
            if tail is None:
                tail = self._ctx.cache.load_tail(tail_size)
            elif len(tail) != min(size, tail_size):
                raise CorruptFileError(
                    f"{self.uri} is truncated: asked for its last {tail_size} bytes of {size}, "
                    f"got {len(tail)}",
                    key=key,
                )
            else:
                self._ctx.cache.keep_tail(tail)
            self.footer: Footer = decode_footer(tail, size, self.uri, self._loc.key)
            if self._ctx.cache.tail_start == 0:
                check_header(tail, self.uri, self._loc.key)
            self._root: LazyMap | LazyList | None = None
            if self.footer.root.kind != Kind.PACKED:
                self._root = self._ctx.open(self.footer.root, "the root")
        except BaseException:
            self._loc.close()
            raise

    # -- the root --------------------------------------------------------------------------

    @property
    def root(self) -> Any:
        """The root: a ``LazyMap``, a ``LazyList``, or the decoded single value."""
        if self._root is not None:
            return self._root
        return self._ctx.open(self.footer.root, "the root")

    def _node(self) -> LazyMap | LazyList:
        if self._root is None:
            raise ContainerError(
                f"{self.uri} holds a single value at its root, not a map or a list; "
                "use to_obj() or .root"
            )
        return self._root

    def _map(self, what: str) -> LazyMap:
        node = self._node()
        if not isinstance(node, LazyMap):
            raise ContainerError(f"{self.uri}: {what} needs a map root, but the root is a list")
        return node

    def __getitem__(self, key: Any) -> Any:
        return self._node()[key]

    def __len__(self) -> int:
        return len(self._node())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._node())

    def __contains__(self, key: object) -> bool:
        return key in self._node()

    def get(self, key: Any, default: Any = None) -> Any:
        return self._map("get()").get(key, default)

    def keys(self) -> KeysView[Any]:
        return self._map("keys()").keys()

    def values(self) -> ValuesView[Any]:
        return self._map("values()").values()

    def items(self) -> ItemsView[Any, Any]:
        return self._map("items()").items()

    def to_obj(self) -> Any:
        """The whole container as plain Python values, read with one whole-object request."""
        whole = Ctx(self._loc, self.size, 0, self.size)
        whole.cache.load_tail(self.size)
        check_header(bytes(whole.value_bytes(0, min(self.size, 16))), self.uri, self._loc.key)
        root = whole.open(self.footer.root, "the root")
        if isinstance(root, (LazyMap, LazyList)):
            return root._materialize(memoryview(whole.value_bytes(0, self.size)), 0)
        return root

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as "reopen this object" (for worker processes): the backend pickles its config,
        the caches are not sent, and the copy checks the footer again."""
        args = (self._loc.source, self._loc.key, self._loc.owned, self.size, self._options)
        return (_reopen, args)

    def __repr__(self) -> str:
        return f"<LazyReader {self.uri} ({self.size} bytes, root {self.footer.root.kind.name})>"

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the backend if the reader opened it from a URI."""
        self._loc.close()

    def __enter__(self) -> LazyReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _reopen(
    source: RangeSource, key: str, owned: bool, size: int, options: dict[str, int]
) -> LazyReader:
    reader = LazyReader(source, key, size=size, **options)
    reader._loc.owned = owned
    return reader

"""A lazy msgpack container: write once with a table of contents, read one entry by range.

``LazyWriter`` writes nested dicts and lists of msgpack values; ``LazyReader`` answers
``reader["runs"][7]["loss"]`` by reading the footer page and that one value. ``combine`` builds a
container out of others without decoding their entries. See docs/container.md.
"""

from datashard.io.container.combine import combine
from datashard.io.container.nodes import LazyList, LazyMap
from datashard.io.container.reader import LazyReader
from datashard.io.container.source import RangeSource
from datashard.io.container.writer import LazyWriter

__all__ = ["LazyList", "LazyMap", "LazyReader", "LazyWriter", "RangeSource", "combine"]

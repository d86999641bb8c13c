"""Property tests: any msgpack value reads back exactly as ``msgpack.unpackb(msgpack.packb(x))``."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datashard.io.container import LazyList, LazyMap, LazyReader, LazyWriter
from datashard.storage.memory import MemoryBackend, MemoryConfig

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=300)
)
_keys = st.text(max_size=12) | st.binary(max_size=8)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=12) | st.dictionaries(_keys, children, max_size=12)
    ),
    max_leaves=60,
)

_BACKEND = MemoryBackend(MemoryConfig(name="container-properties"))
_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _expected(obj: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(obj), strict_map_key=False)


def _deep(value: Any) -> Any:
    """Materialise a value read lazily, entry by entry (not through to_obj)."""
    if isinstance(value, LazyMap):
        return {k: _deep(value[k]) for k in value}
    if isinstance(value, LazyList):
        return [_deep(value[i]) for i in range(len(value))]
    return value


@_SETTINGS
@given(
    obj=_values,
    threshold=st.sampled_from([0, 16, 200, 1 << 20]),
    whole_index_limit=st.sampled_from([0, 1 << 20]),
)
def test_any_value_round_trips_like_plain_msgpack(
    obj: Any, threshold: int, whole_index_limit: int
) -> None:
    """Small suffix reads, and indexes searched piecewise (fences, pages) or fetched whole."""
    with LazyWriter(_BACKEND, "prop.msgc", lazy_threshold=threshold) as w:
        w.write(obj)
    expected = _expected(obj)
    with LazyReader(_BACKEND, "prop.msgc", tail_size=64, whole_index_limit=whole_index_limit) as r:
        assert r.to_obj() == expected
        assert _deep(r.root) == expected
        if isinstance(r.root, (LazyMap, LazyList)):
            assert r.root.to_obj() == expected


@_SETTINGS
@given(entries=st.lists(st.tuples(_keys, _values), max_size=30))
def test_entry_by_entry_writes_behave_like_dict_assignment(
    entries: list[tuple[Any, Any]],
) -> None:
    model: dict[Any, Any] = {}
    with LazyWriter(_BACKEND, "entries.msgc", lazy_threshold=64) as w:
        for k, v in entries:
            w[k] = v
            model[k] = v
    with LazyReader(_BACKEND, "entries.msgc") as r:
        assert r.to_obj() == _expected(model)
        assert list(r) == list(model)
        for k in model:
            assert k in r
            assert _deep(r[k]) == _expected(model[k])

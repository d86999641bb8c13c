"""The storage conformance suite: one set of tests that every ``StorageBackend`` must pass.

Bind it to a backend by subclassing :class:`StorageConformance` in a test module::

    class TestLocal(StorageConformance):
        @pytest.fixture
        def backend(self, tmp_path):
            with open_backend(f"file://{tmp_path}") as b:
                yield b

        def raw_put(self, backend, key, data):       # optional back door: bypass the backend
            (Path(backend.config.path) / key).write_bytes(data)

        def raw_get(self, backend, key):
            return (Path(backend.config.path) / key).read_bytes()

Hooks a subclass may set or override:

- ``backend`` (fixture, required): a backend over a fresh, empty root for each test.
- ``offline_backend`` (fixture): a backend of the same kind whose storage cannot be reached;
  invalid keys must still raise ``InvalidPathError`` there, which proves the key is checked before
  any I/O. The default is the live backend itself.
- ``raw_put`` / ``raw_get``: write and read an object without going through the backend under
  test (plain file I/O, boto3 ...). The default goes through a second backend built from the same
  config, which proves less; say so when you keep it.
- ``race_mode``: ``"process"`` (16 processes race ``put_if_absent``) or ``"thread"`` for backends
  whose objects live inside one process (``memory://``).
- ``shared_across_processes``: ``False`` when an unpickled backend in another process sees a
  different store (``memory://``).
- ``pending_uploads``: the count of unfinished uploads under the root read through the back
  door (S3 multipart uploads), so an aborted stream is shown to leave none; ``None`` by default.
- ``expected_failures``: ``{"test_name": "reason"}``; those tests are marked ``xfail(strict=True)``
  (so an unexpected pass is reported too). Names are checked when the subclass is defined.

The tests live in :mod:`.writes`, :mod:`.streams`, :mod:`.reads` and :mod:`.keys`; the hooks
in :mod:`.base`.
Requires pytest (a ``dev`` dependency); nothing else in datashard imports this package.
"""

from __future__ import annotations

from datashard.testing.store.base import (
    INVALID_KEYS,
    INVALID_PREFIXES,
    KEY_CALLS,
    READ_CALLS,
    TRICKY_KEYS,
    SuiteBase,
    data_of,
    keys_of,
)
from datashard.testing.store.keys import KeyTests
from datashard.testing.store.reads import ReadTests
from datashard.testing.store.streams import StreamTests
from datashard.testing.store.writes import WriteTests


class StorageConformance(WriteTests, StreamTests, ReadTests, KeyTests):
    """The contract of :class:`~datashard.storage.base.StorageBackend`, as tests."""


__all__ = [
    "INVALID_KEYS",
    "INVALID_PREFIXES",
    "KEY_CALLS",
    "READ_CALLS",
    "TRICKY_KEYS",
    "StorageConformance",
    "SuiteBase",
    "data_of",
    "keys_of",
]

"""Conformance tests of keys: listing, deletes, invalid keys, missing objects, identity and
pickling."""

from __future__ import annotations

import pickle

import pytest

from datashard.errors import (
    InvalidPathError,
    ObjectNotFoundError,
)
from datashard.storage.base import StorageBackend
from datashard.testing.race import qualified_name, read_object
from datashard.testing.race import run_in_process as _run_in_process
from datashard.testing.store.base import (
    INVALID_KEYS,
    INVALID_PREFIXES,
    KEY_CALLS,
    READ_CALLS,
    TRICKY_KEYS,
    SuiteBase,
    keys_of,
)


class KeyTests(SuiteBase):
    """Keys: what exists, in what order, what is refused, and what a copy of the backend sees."""

    # -- list -------------------------------------------------------------------------------

    def test_list_is_recursive_and_lexicographic(self, backend: StorageBackend) -> None:
        for key in reversed(TRICKY_KEYS):
            backend.write(key, bytes(TRICKY_KEYS.index(key)))
        listed = list(backend.list())
        assert [m.key for m in listed] == sorted(TRICKY_KEYS)
        assert [m.size for m in listed] == [TRICKY_KEYS.index(m.key) for m in listed]

    def test_list_order_matches_utf8_byte_order(self, backend: StorageBackend) -> None:
        keys = ["\uff01", "\U0001f600", "\u00e9", "z", "\ufffd"]
        for key in keys:
            backend.write(key, b"x")
        expected = sorted(keys, key=lambda k: k.encode("utf-8"))
        assert keys_of(backend.list()) == expected

    def test_list_reports_what_head_reports(self, backend: StorageBackend) -> None:
        """Key, size and (where both give one) etag agree, so a reader can pin a version it
        found by listing."""
        for i in range(5):
            backend.write(f"d/{i}", b"y" * (i * 100))
        for meta in backend.list("d/"):
            head = backend.head(meta.key)
            assert (meta.key, meta.size) == (head.key, head.size)
            if meta.etag is not None and head.etag is not None:
                assert meta.etag == head.etag, meta.key
                data = backend.read_range_if_match(meta.key, 0, 10, meta.etag)
                assert data == b"y" * min(10, meta.size)

    def test_list_with_prefix_is_a_string_prefix(self, backend: StorageBackend) -> None:
        for key in ("a/x", "a/y/z", "ab/y", "a.b", "abc", "b/a"):
            backend.write(key, b"x")
        assert keys_of(backend.list("a/")) == ["a/x", "a/y/z"]
        assert keys_of(backend.list("ab")) == ["ab/y", "abc"]
        assert keys_of(backend.list("ab/")) == ["ab/y"]
        assert keys_of(backend.list("a")) == ["a.b", "a/x", "a/y/z", "ab/y", "abc"]
        assert keys_of(backend.list("a/y")) == ["a/y/z"]
        assert keys_of(backend.list("a/x")) == ["a/x"]
        assert keys_of(backend.list("a/x/")) == []

    def test_list_prefix_with_special_characters(self, backend: StorageBackend) -> None:
        keys = ["a+b/1", "a b/2", "a%20b/3", "é/4", "q?/5", "h#/6", "e\u0301/7", "a&b/8"]
        for key in keys:
            backend.write(key, b"x")
        for key in keys:
            prefix = key.split("/")[0]
            assert keys_of(backend.list(prefix)) == [key], prefix
            assert keys_of(backend.list(prefix + "/")) == [key], prefix

    def test_list_of_missing_prefix_is_empty(self, backend: StorageBackend) -> None:
        assert keys_of(backend.list()) == []
        assert keys_of(backend.list("")) == []
        assert keys_of(backend.list("nope/")) == []
        backend.write("some/obj", b"x")
        assert keys_of(backend.list("nope/")) == []
        assert keys_of(backend.list("some/obj/deeper")) == []
        assert keys_of(backend.list("som")) == ["some/obj"]

    def test_list_sees_many_objects(self, backend: StorageBackend) -> None:
        """More keys than one small page: 1,005 crosses S3's 1,000-key list page."""
        keys = [f"many/{i:05d}" for i in range(1005)]
        backend.delete_many([])  # a no-op must be fine
        self._raw_put_all(backend, keys)
        assert keys_of(backend.list("many/")) == keys

    # -- delete -----------------------------------------------------------------------------

    def test_delete_is_idempotent(self, backend: StorageBackend) -> None:
        backend.delete("never-existed")
        backend.write("obj", b"x")
        backend.delete("obj")
        backend.delete("obj")
        assert not backend.exists("obj")
        with pytest.raises(ObjectNotFoundError):
            backend.read("obj")

    def test_delete_while_listing_removes_everything(self, backend: StorageBackend) -> None:
        """The usual clean-up loop: delete each key as ``list`` yields it."""
        keys = ["d/a/1", "d/a/2", "d/b/1", "d/c/1", "d/c/2/x", "d/e", "keep"]
        for key in keys:
            backend.write(key, b"x")
        seen = []
        for meta in backend.list("d/"):
            seen.append(meta.key)
            backend.delete(meta.key)
        assert seen == keys[:-1]
        assert keys_of(backend.list()) == ["keep"]

    def test_delete_removes_only_that_key(self, backend: StorageBackend) -> None:
        for key in ("d/x", "d/xy", "d/x.y", "d/w/x", "x"):
            backend.write(key, b"x")
        backend.delete("d/x")
        assert keys_of(backend.list()) == ["d/w/x", "d/x.y", "d/xy", "x"]

    def test_delete_many_ignores_missing_keys(self, backend: StorageBackend) -> None:
        for key in ("k/1", "k/2", "k/3", "keep"):
            backend.write(key, b"x")
        backend.delete_many(["k/1", "missing", "k/3", "k/1", "also/missing"])
        assert keys_of(backend.list()) == ["k/2", "keep"]
        backend.delete_many(iter(["k/2"]))
        assert keys_of(backend.list()) == ["keep"]

    def test_delete_many_of_tricky_keys(self, backend: StorageBackend) -> None:
        for key in TRICKY_KEYS:
            backend.write(key, b"x")
        backend.write("keep", b"x")
        backend.delete_many(TRICKY_KEYS)
        assert keys_of(backend.list()) == ["keep"]

    def test_delete_many_of_many_keys(self, backend: StorageBackend) -> None:
        """1,005 keys by default: more than one S3 ``DeleteObjects`` batch of 1,000
        (``many_delete_keys`` sets the count for a backend with smaller batches)."""
        keys = [f"k/{i:05d}" for i in range(self.many_delete_keys)]
        self._raw_put_all(backend, [*keys, "other"])
        backend.delete_many(keys)
        assert keys_of(backend.list()) == ["other"]

    def test_delete_many_with_an_invalid_key_deletes_nothing(self, backend: StorageBackend) -> None:
        backend.write("ok-key", b"x")
        with pytest.raises(InvalidPathError):
            backend.delete_many(["ok-key", "bad//key"])
        assert backend.read("ok-key") == b"x"

    # -- invalid keys -----------------------------------------------------------------------

    @pytest.mark.parametrize("method", sorted(KEY_CALLS))
    def test_invalid_keys_raise_before_any_io(
        self, backend: StorageBackend, offline_backend: StorageBackend, method: str
    ) -> None:
        """Every malformed key raises ``InvalidPathError`` itself (not a subclass, not a
        storage error), on the live backend and on one whose storage cannot be reached."""
        call = KEY_CALLS[method]
        failures: list[str] = []
        for target_name, target in (("live", backend), ("offline", offline_backend)):
            for key in INVALID_KEYS:
                try:
                    call(target, key)
                except InvalidPathError as exc:
                    if type(exc) is not InvalidPathError:
                        failures.append(f"{target_name} {key!r}: {qualified_name(exc)}")
                except Exception as exc:  # noqa: BLE001 - collected and reported below
                    failures.append(f"{target_name} {key!r}: {qualified_name(exc)}: {exc}")
                else:
                    failures.append(f"{target_name} {key!r}: no error")
        assert failures == [], "\n".join(failures)
        assert keys_of(backend.list()) == []

    def test_invalid_prefixes_raise(
        self, backend: StorageBackend, offline_backend: StorageBackend
    ) -> None:
        failures: list[str] = []
        for target_name, target in (("live", backend), ("offline", offline_backend)):
            for prefix in INVALID_PREFIXES:
                try:
                    list(target.list(prefix))  # type: ignore[arg-type]
                except InvalidPathError as exc:
                    if type(exc) is not InvalidPathError:
                        failures.append(f"{target_name} {prefix!r}: {qualified_name(exc)}")
                except Exception as exc:  # noqa: BLE001
                    failures.append(f"{target_name} {prefix!r}: {qualified_name(exc)}: {exc}")
                else:
                    failures.append(f"{target_name} {prefix!r}: no error")
        assert failures == [], "\n".join(failures)

    # -- missing objects --------------------------------------------------------------------

    @pytest.mark.parametrize("method", sorted(READ_CALLS))
    def test_missing_key_raises_object_not_found(
        self, backend: StorageBackend, method: str
    ) -> None:
        backend.write("other", b"x")
        with pytest.raises(ObjectNotFoundError) as info:
            READ_CALLS[method](backend, "no/such/key")
        exc = info.value
        assert type(exc) is ObjectNotFoundError
        assert isinstance(exc, FileNotFoundError)
        assert exc.key == "no/such/key"
        assert "no/such/key" in str(exc)

    # -- identity, pickling -----------------------------------------------------------------

    def test_uri_for_and_key_for_round_trip(self, backend: StorageBackend) -> None:
        for key in ("obj", "a/b/c", "日本/語"):
            uri = backend.uri_for(key)
            assert uri.startswith(backend.root_uri + "/")
            assert backend.key_for(uri) == key
        with pytest.raises(InvalidPathError):
            backend.key_for("elsewhere://x/y")

    def test_pickled_backend_reads_the_same_objects(self, backend: StorageBackend) -> None:
        backend.write("shared/obj", b"visible to the copy")
        clone = pickle.loads(pickle.dumps(backend))
        try:
            assert type(clone) is type(backend)
            assert clone.root_uri == backend.root_uri
            assert clone.read("shared/obj") == b"visible to the copy"
            clone.write("shared/from-clone", b"back")
            assert backend.read("shared/from-clone") == b"back"
        finally:
            clone.close()

    def test_pickled_backend_in_another_process(self, backend: StorageBackend) -> None:
        """A worker process gets the backend pickled. Shared backends read what the parent
        wrote; ``memory://`` (``shared_across_processes = False``) opens that process's own,
        empty store of the same name, so the object is missing there."""
        backend.write("shared/obj", b"from the parent")
        outcome = _run_in_process(read_object, backend, "shared/obj")
        if self.shared_across_processes:
            assert outcome == ("ok", b"from the parent")
        else:
            expected = f"{ObjectNotFoundError.__module__}.{ObjectNotFoundError.__qualname__}"
            assert outcome[:2] == ("raised", expected)

    def test_backend_is_a_context_manager(self, backend: StorageBackend) -> None:
        clone = pickle.loads(pickle.dumps(backend))
        with clone as entered:
            assert entered is clone
            entered.write("ctx", b"x")
        assert backend.read("ctx") == b"x"

    def test_repr_names_the_root(self, backend: StorageBackend) -> None:
        text = repr(backend)
        assert backend.root_uri in text
        assert type(backend).__name__ in text

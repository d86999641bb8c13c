"""``gs://bucket/prefix``: Google Cloud Storage through ``google-cloud-storage``.

- ``put_if_absent`` uploads with ``ifGenerationMatch=0`` (412 means another writer won). Each call
  tags its object with a unique token in the object metadata, so a retry whose first attempt did
  land (the response was lost) is recognised as a win.
- ``write`` of more than ``single_put_size`` bytes, or of an iterable of chunks, is a resumable
  upload in chunks of ``chunk_size`` bytes: the object appears when the last chunk is accepted,
  and a failed stream leaves nothing. A chunk that fails transiently is resumed from the offset the
  server confirms.
- ``read``, ``read_range``, ``read_into`` and ``read_ranges`` split large ranges into parts of
  ``part_size`` bytes fetched concurrently straight into one buffer, every part after the first
  pinned to the first response's generation.
- Metadata requests go through the ``google-cloud-storage`` client; ranged reads and resumable
  uploads are plain JSON-API requests on the same authorised, pooled HTTP session. The client's
  own retries are off: every request goes through the backend's
  :class:`~datashard.storage.retry.RequestGate`.

``STORAGE_EMULATOR_HOST`` is honoured like Google's clients do: it sets the endpoint and, when no
credential is configured, anonymous access. The Google libraries are imported on first use, so
``import datashard.storage.gcs`` works without them.
"""

from __future__ import annotations

import builtins
import functools
import json
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from urllib3.exceptions import HTTPError as Urllib3HTTPError

from datashard.errors import (
    ConfigError,
    DataShardError,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)
from datashard.storage._ranged_backend import RangedBackend, pool_connections
from datashard.storage.base import (
    ObjectMeta,
    ObjectWriter,
    collect_chunks,
    slices,
    validate_key,
    validate_range,
)
from datashard.storage.gcs_config import GCSConfig
from datashard.storage.gcs_errors import (
    GCSResponseError,
    bucket_missing,
    classify,
    http_status,
    translate,
)
from datashard.storage.part_stream import PartStream
from datashard.storage.ranged_reads import Got, Seen, Sink

MiB = 1024 * 1024
#: Object metadata entry that tags a ``put_if_absent`` attempt (see the module docstring).
TOKEN_METADATA = "datashard-put-token"
#: A JSON-API batch request holds at most 100 calls.
DELETE_BATCH = 100
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
_INSTALL_HINT = "pip install google-cloud-storage"


@dataclass
class _Connection:
    session: Any  # google.auth.transport.requests.AuthorizedSession
    client: Any  # google.cloud.storage.Client
    bucket: Any  # google.cloud.storage.Bucket
    base: str  # API base URL, no trailing slash


def _content_range_total(value: str | None) -> int | None:
    if value and "/" in value:
        total = value.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    return None


class GCSBackend(RangedBackend):
    """Google Cloud Storage under the storage contract."""

    scheme = "gs"
    config_class = GCSConfig
    config: GCSConfig
    delete_batch = DELETE_BATCH

    def __init__(self, config: GCSConfig) -> None:
        super().__init__(
            config,
            gate=config.request_gate(),
            max_concurrency=config.max_concurrency,
            part_size=config.part_size,
            write_block_size=config.chunk_size,
            single_put_size=config.single_put_size,
            write_buffer_size=config.write_buffer_size,
            prefix=config.prefix,
            pool_name="datashard-gcs",
        )
        self._bucket_seen = False
        #: set once the server answered a batch request without multipart (no batch endpoint)
        self._no_batch = False
        self._timeout = (config.connect_timeout, config.read_timeout)

    # -- connection ------------------------------------------------------------------------

    def _connection(self) -> _Connection:
        connection: _Connection = self._connected()
        return connection

    def _connect(self) -> _Connection:
        cfg = self.config
        try:
            import requests
            from google.auth.transport.requests import AuthorizedSession
            from google.cloud import storage
        except ImportError as exc:
            raise ConfigError(
                f"the gs:// backend needs google-cloud-storage, which is not installed: "
                f"{_INSTALL_HINT}"
            ) from exc
        emulator = os.environ.get("STORAGE_EMULATOR_HOST") or None
        endpoint = cfg.endpoint or emulator
        if endpoint and "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        credentials, project = self._credentials(emulated=cfg.endpoint is None and bool(emulator))
        session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
        pool_connections(session, requests.adapters.HTTPAdapter, cfg.max_concurrency)
        options = {"api_endpoint": endpoint} if endpoint else None
        client = storage.Client(
            project=cfg.project or project or "<none>",
            credentials=credentials,
            _http=session,
            client_options=options,
        )
        base = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        return _Connection(session, client, client.bucket(cfg.bucket), base)

    def _credentials(self, emulated: bool) -> tuple[Any, str | None]:
        cfg = self.config
        from google.auth.credentials import AnonymousCredentials

        if cfg.anonymous or (emulated and not (cfg.service_account_file or cfg.credentials_json)):
            return AnonymousCredentials(), None  # type: ignore[no-untyped-call]
        from google.oauth2 import service_account

        if cfg.service_account_file:
            try:
                from_file = service_account.Credentials.from_service_account_file
                creds = from_file(cfg.service_account_file, scopes=_SCOPES)  # type: ignore[no-untyped-call]
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"GCSConfig.service_account_file {cfg.service_account_file!r} is not a "
                    f"readable service-account key file ({type(exc).__name__})"
                ) from None
            return creds, creds.project_id
        if cfg.credentials_json:
            try:
                info = json.loads(cfg.credentials_json)
                from_info = service_account.Credentials.from_service_account_info
                creds = from_info(info, scopes=_SCOPES)  # type: ignore[no-untyped-call]
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    "GCSConfig.credentials_json is not a service-account key (value hidden)"
                ) from None
            return creds, creds.project_id
        if cfg.token:
            from google.oauth2.credentials import Credentials

            return Credentials(cfg.token), None  # type: ignore[no-untyped-call]
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            creds, project = google.auth.default(scopes=_SCOPES)
        except DefaultCredentialsError:
            raise ConfigError(
                "no GCS credentials found: set service_account_file, credentials_json, token or "
                "anonymous, or configure Google's default credentials "
                "(GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login)"
            ) from None
        return creds, project

    def _name(self, key: str) -> str:
        return self._prefix + key

    def _media_url(self, key: str) -> str:
        conn = self._connection()
        bucket = quote(self.config.bucket, safe="")
        name = quote(self._name(key), safe="")
        return f"{conn.base}/download/storage/v1/b/{bucket}/o/{name}?alt=media"

    # -- error translation -----------------------------------------------------------------

    def _error(self, exc: BaseException, operation: str, key: str | None) -> StorageError:
        """``exc`` translated; a 404 names the bucket when the bucket is what is missing."""
        error = translate(
            exc, operation=operation, bucket=self.config.bucket, key=key, where=self.root_uri
        )
        if type(error) is ObjectNotFoundError and not self._bucket_exists():
            return bucket_missing(operation, self.config.bucket, key, self.root_uri)
        return error

    def _bucket_exists(self) -> bool:
        """Whether the bucket exists (asked once; a bucket seen once is assumed to stay)."""
        if self._bucket_seen:
            return True
        conn = self._connection()
        url = f"{conn.base}/storage/v1/b/{quote(self.config.bucket, safe='')}"
        try:
            response = conn.session.get(url, timeout=self._timeout)
        except Exception:  # noqa: BLE001 - cannot tell: keep the object-level error
            return True
        if response.status_code == 404:
            return False
        self._bucket_seen = response.status_code == 200
        return True

    def _is_sdk_error(self, exc: BaseException) -> bool:
        return _sdk_error(exc)

    # -- reads -----------------------------------------------------------------------------

    def _get_into(self, key: str, start: int, end: int, sink: Sink, pin: str | None) -> int:
        got = self._call("read", "read", key, lambda: self._get(key, start, end, sink, pin))
        return got if isinstance(got, int) else len(got)

    def _get_bytes(self, key: str, start: int, end: int, seen: Seen, pin: str | None) -> bytes:
        got = self._call("read", "read", key, lambda: self._get(key, start, end, seen, pin))
        return got if isinstance(got, bytes) else b""

    def _get(
        self,
        key: str,
        start: int,
        end: int,
        sink: Callable[[Got], memoryview | None],
        generation: str | None,
    ) -> bytes | int:
        """One ranged GET of ``[start, end)`` (not gated: run in ``_call``), pinned to
        ``generation`` when given. ``sink`` is told the headers; the body goes into the view it
        returns (the count is returned) or, when it returns None, comes back as ``bytes``.
        0 when ``start`` is at or past the end of the object."""
        conn = self._connection()
        url = self._media_url(key)
        if generation is not None:
            url += f"&ifGenerationMatch={generation}"
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        with conn.session.get(url, headers=headers, stream=True, timeout=self._timeout) as resp:
            if resp.status_code == 416:
                return 0
            if resp.status_code not in (200, 206):
                raise GCSResponseError.from_response(resp)
            version = resp.headers.get("x-goog-generation")
            total = _content_range_total(resp.headers.get("Content-Range"))
            if resp.status_code == 200 or total is None:  # the server sent the whole object
                whole: bytes = resp.content
                if start >= len(whole):
                    return 0
                chunk = whole[start:end]
                view = sink(Got(len(chunk), len(whole), version))
                if view is None:
                    return chunk
                view[: len(chunk)] = chunk
                return len(chunk)
            if start >= total:
                return 0
            expected = min(end, total) - start
            view = sink(Got(expected, total, version))
            try:
                return _read_body(resp.raw, expected, view)
            except Urllib3HTTPError as exc:  # a body cut mid-way: transient, like a reset
                raise ConnectionError(f"short read of {expected} bytes: {exc}") from exc

    def read_tail(self, key: str, length: int) -> tuple[bytes, int]:
        """One suffix-range GET (``Range: bytes=-N``); a server that ignores the range and sends
        the whole object (the emulator does) is handled too."""
        validate_key(key)
        validate_range(key, 0, length)
        if length == 0:
            return b"", self.head(key).size

        def fetch() -> tuple[bytes, int]:
            session = self._connection().session
            headers = {"Range": f"bytes=-{length}", "Accept-Encoding": "identity"}
            url = self._media_url(key)
            with session.get(url, headers=headers, stream=True, timeout=self._timeout) as resp:
                if resp.status_code == 416:  # a suffix of an empty object
                    return b"", 0
                if resp.status_code not in (200, 206):
                    raise GCSResponseError.from_response(resp)
                body: bytes = resp.content
                total = _content_range_total(resp.headers.get("Content-Range"))
                if resp.status_code == 200 or total is None:
                    return body[max(0, len(body) - length) :], len(body)
                return body, total

        return self._call("read", "read_tail", key, fetch)

    def _reload(self, key: str) -> Any:
        blob = self._connection().bucket.blob(self._name(key))
        blob.reload(retry=None, timeout=self._timeout)
        return blob

    def head(self, key: str) -> ObjectMeta:
        validate_key(key)
        blob = self._call("read", "head", key, lambda: self._reload(key))
        return self._list_meta(blob, key)  # a listed item and a reloaded blob: same fields

    # -- writes ----------------------------------------------------------------------------

    def _put(self, key: str, data: bytes) -> None:
        self._call("write", "write", key, lambda: self._upload(key, data, None))

    def _put_stream(self, key: str, blocks: Iterable[bytes | memoryview]) -> None:
        self._resumable(key, blocks, None)

    def _upload(self, key: str, data: bytes, token: str | None) -> None:
        """One multipart upload; with a ``token``, only if the object does not exist."""
        blob = self._connection().bucket.blob(self._name(key))
        conditions: dict[str, Any] = {}
        if token is not None:
            blob.metadata = {TOKEN_METADATA: token}
            conditions["if_generation_match"] = 0
        blob.upload_from_string(
            data,
            content_type="application/octet-stream",
            retry=None,
            timeout=self._timeout,
            **conditions,
        )

    def _resumable(self, key: str, blocks: Iterable[memoryview | bytes], token: str | None) -> None:
        """A resumable upload of ``blocks`` (each a multiple of 256 KiB but the last)."""
        session_url = self._begin_resumable(key, token)
        offset = 0
        blocks = iter(blocks)
        current = next(blocks, None)
        while current is not None:
            following = next(blocks, None)
            self._send_resumable(key, session_url, current, offset, following is None)
            offset += len(current)
            current = following

    def _begin_resumable(self, key: str, token: str | None) -> str:
        """Start a resumable upload of ``key`` (with a ``token``: only if it does not exist);
        its session URL."""
        conn = self._connection()
        name = self._name(key)
        query = f"uploadType=resumable&name={quote(name, safe='')}"
        body: dict[str, Any] = {"name": name, "contentType": "application/octet-stream"}
        if token is not None:
            query += "&ifGenerationMatch=0"
            body["metadata"] = {TOKEN_METADATA: token}
        url = f"{conn.base}/upload/storage/v1/b/{quote(self.config.bucket, safe='')}/o?{query}"

        def start() -> str:
            headers = {"X-Upload-Content-Type": "application/octet-stream"}
            resp = conn.session.post(url, json=body, headers=headers, timeout=self._timeout)
            if resp.status_code != 200 or "Location" not in resp.headers:
                raise GCSResponseError.from_response(resp)
            return str(resp.headers["Location"])

        return self._call("write", "write", key, start)

    def _send_resumable(
        self, key: str, session_url: str, block: memoryview | bytes, offset: int, last: bool
    ) -> None:
        """Send ``block``, the bytes at ``offset`` (``last``: the end of the object)."""
        send = functools.partial(self._send_chunk, session_url, bytes(block), offset, last, [False])
        self._call("write", "write", key, send)

    def _cancel_resumable(self, session_url: str) -> None:
        """Drop an unfinished resumable upload: best effort, one attempt, quietly."""
        try:
            self._connection().session.delete(session_url, timeout=self._timeout)
        except Exception:  # noqa: S110 - an unfinished session is invisible and expires
            pass

    def open_output(self, key: str) -> ObjectWriter:
        """A stream that fills buffers of ``chunk_size``: one upload request if it ends within
        the first, else a resumable upload whose chunks go out one at a time (each while the
        next fills) and which the last one finishes; all streams of this backend hold at most
        ``write_buffer_size`` bytes of buffers together (plus one chunk each). An aborted
        stream cancels its session."""
        return _GCSStream(self, validate_key(key))

    def _send_chunk(
        self, session_url: str, chunk: bytes, offset: int, last: bool, retried: builtins.list[bool]
    ) -> None:
        """Send ``chunk`` at ``offset``; on a retry, resume from what the server confirms."""
        session = self._connection().session
        end = offset + len(chunk)
        total = str(end) if last else "*"
        confirmed = offset
        if retried[0]:
            resp = session.put(
                session_url, headers={"Content-Range": f"bytes */{total}"}, timeout=self._timeout
            )
            if resp.status_code in (200, 201):
                return  # the whole upload landed with the lost attempt
            if resp.status_code != 308:
                raise GCSResponseError.from_response(resp)
            confirmed = max(offset, _persisted(resp.headers.get("Range")))
        retried[0] = True
        for _ in range(64):  # the server may keep less than it was sent; resend the rest
            rest = chunk[confirmed - offset :]
            span = f"bytes {confirmed}-{end - 1}/{total}" if rest else f"bytes */{total}"
            resp = session.put(
                session_url, data=rest, headers={"Content-Range": span}, timeout=self._timeout
            )
            if resp.status_code in (200, 201):
                return
            if resp.status_code != 308:
                raise GCSResponseError.from_response(resp)
            confirmed = max(confirmed, _persisted(resp.headers.get("Range")))
            if confirmed >= end and not last:
                return
        raise ConnectionError(f"resumable upload made no progress at byte {confirmed}")

    def put_if_absent(self, key: str, data: bytes) -> None:
        validate_key(key)
        payload = collect_chunks(data)
        token = uuid.uuid4().hex
        if len(payload) > self.config.single_put_size:
            blocks = slices(memoryview(payload), self.config.chunk_size)
            try:
                self._resumable(key, blocks, token)
            except PreconditionFailedError as exc:
                if self._carries_token(key, token):
                    return
                raise self._exists(key) from exc
            return
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            try:
                self._upload(key, payload, token)
                return
            except Exception as exc:
                if isinstance(exc, DataShardError) or not _sdk_error(exc):
                    raise
                if classify(exc) is not PreconditionFailedError or http_status(exc) != 412:
                    raise self._error(exc, "put_if_absent", key) from exc
                if attempts > 1 and self._carries_token(key, token):
                    return
                raise self._exists(key) from exc

        self._gate.call("write", attempt)

    def _exists(self, key: str) -> ObjectExistsError:
        return ObjectExistsError(
            f"put_if_absent: object {key!r} already exists in {self.root_uri} "
            "(GCS conditionNotMet, HTTP 412)",
            key=key,
        )

    def _carries_token(self, key: str, token: str) -> bool:
        load = functools.partial(self._reload, key)
        return self._token_matches(key, token, load, _object_missing, TOKEN_METADATA)

    # -- listing and deletes ---------------------------------------------------------------

    def _list_page(self, full: str, token: str | None) -> tuple[builtins.list[Any], str | None]:
        def page() -> tuple[builtins.list[Any], str | None]:
            conn = self._connection()
            pages = conn.client.list_blobs(
                conn.bucket,
                prefix=full or None,
                page_token=token,
                page_size=1000,
                retry=None,
                timeout=self._timeout,
            )
            items = builtins.list(next(pages.pages, []))
            return items, pages.next_page_token

        return self._call("read", "list", full or None, page)

    def _list_meta(self, item: Any, key: str) -> ObjectMeta:
        return ObjectMeta(
            key=key,
            size=int(item.size),
            etag=item.etag,
            version=str(item.generation) if item.generation is not None else None,
            last_modified=item.updated,
        )

    def delete(self, key: str) -> None:
        validate_key(key)
        self._call("write", "delete", key, functools.partial(self._remove, key))

    def _remove(self, key: str) -> None:
        """One DELETE request; a missing object is fine."""
        blob = self._connection().bucket.blob(self._name(key))
        try:
            blob.delete(retry=None, timeout=self._timeout)
        except Exception as exc:
            if http_status(exc) == 404 and self._bucket_exists():
                return
            raise

    def _delete_batch(self, keys: builtins.list[str]) -> None:
        """One JSON-API batch request of up to 100 deletes; missing objects are fine. A server
        without the batch endpoint (it answers without a multipart body, as fake-gcs-server
        does) gets one DELETE per key, from then on."""
        if self._no_batch:
            for key in keys:
                self._remove(key)
            return
        conn = self._connection()
        batch = conn.client.batch(raise_exception=False)
        try:
            with batch:
                for key in keys:
                    conn.bucket.delete_blob(self._name(key), retry=None, timeout=self._timeout)
        except ValueError as exc:  # google-cloud-storage could not parse the batch answer
            if "multi-part" not in str(exc):
                raise
            self._no_batch = True
            for key in keys:
                self._remove(key)
            return
        # finish() stores one response per deferred request, in order
        responses: builtins.list[Any] = getattr(batch, "_responses", [])
        if len(responses) != len(keys):
            raise ConnectionError(f"batch delete answered {len(responses)} of {len(keys)} deletes")
        for key, response in zip(keys, responses, strict=True):
            status = int(response.status_code)
            if 200 <= status < 300:
                continue
            if status == 404 and self._bucket_exists():
                continue
            raise self._error(GCSResponseError(status), "delete_many", key)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            conn, self._client = self._client, None
        if conn is not None:
            conn.session.close()
        self._parts.close()


class _GCSStream(PartStream):
    """``GCSBackend.open_output`` (see there)."""

    def __init__(self, backend: GCSBackend, key: str) -> None:
        super().__init__(
            key,
            part_size=backend.config.chunk_size,
            in_flight=1,  # a resumable upload takes its chunks in order
            pool=backend._parts,
            budget=backend.write_budget,
        )
        self._backend = backend
        self._session = ""

    def _put_whole(self, data: memoryview) -> None:
        self._backend._put(self.key, bytes(data))

    def _start(self) -> None:
        self._session = self._backend._begin_resumable(self.key, None)

    def _send(self, number: int, offset: int, data: memoryview, last: bool) -> Any:
        self._backend._send_resumable(self.key, self._session, data, offset, last)

    def _finish(self, tokens: builtins.list[Any]) -> None:
        pass  # the last chunk finished the upload

    def _cancel(self) -> None:
        self._backend._cancel_resumable(self._session)


def _sdk_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from Google's libraries, the server or the network (not a bug in
    the caller's code)."""
    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    sdk = (GCSResponseError, GoogleAPIError, GoogleAuthError, requests.RequestException, OSError)
    if isinstance(exc, sdk):
        return True
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

    return isinstance(exc, (InvalidResponse, DataCorruption))


def _persisted(header: str | None) -> int:
    """Bytes the server holds, from a resumable upload's ``Range: bytes=0-N`` (none: 0)."""
    if header and "-" in header:
        last = header.rsplit("-", 1)[1]
        if last.isdigit():
            return int(last) + 1
    return 0


def _object_missing(exc: BaseException) -> bool:
    return http_status(exc) == 404


def _read_body(raw: Any, expected: int, view: memoryview | None) -> bytes | int:
    """Exactly ``expected`` bytes of a urllib3 response body: into ``view`` (the count), or as
    ``bytes`` when ``view`` is None. A body that ends early raises ``ConnectionError``."""
    if view is None:
        data: bytes = raw.read(expected)
        if len(data) != expected:
            raise ConnectionError(f"short read: {len(data)} of {expected} bytes")
        return data
    target = view[:expected]
    pos = 0
    while pos < expected:
        n = raw.readinto(target[pos:])
        if not n:
            raise ConnectionError(f"short read: {pos} of {expected} bytes")
        pos += n
    return pos

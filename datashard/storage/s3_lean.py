"""S3 requests without boto3's per-request machinery, on endpoints where that is simple.

A request through boto3 costs about 1.2 ms of CPU in the client (building it from the service
model, events, signing, parsing the response into a dict), and more under load; pyarrow's C++
client spends 0.3 ms. The writers of a table with group commit make a dozen requests an append
and the machine is CPU-bound with 32 of them, so this module sends the requests of the hot
paths itself, over a plain ``urllib3`` pool, signed by :mod:`datashard.storage.sigv4`:

- range GETs (:meth:`LeanS3.get_into`), the body read from the socket straight into the
  caller's buffer;
- listings (:meth:`LeanS3.list_page`): boto3 spends about 0.1 ms of CPU on each key of a
  ``ListObjectsV2`` answer, read here with ElementTree;
- single-request PUTs, conditional creates, HEADs and DELETEs (:meth:`LeanS3.put`,
  :meth:`LeanS3.head`, :meth:`LeanS3.delete`).

It is used only where the request is simple to get right: a plain-HTTP endpoint
(``http://``, as a Ceph RGW or MinIO on a cluster network usually is; every payload is then
signed with its SHA-256, which the server checks) with path-style addressing. An error answer
is raised as the ``ClientError`` boto3 would raise (its S3 error code read from the XML body,
else one by HTTP status), and a failed connection as urllib3's exception, so the caller
translates and retries them as it does every other request.

Process-wide state: none (the pool belongs to the backend's per-process state).
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit
from xml.etree import ElementTree

import urllib3
from botocore.exceptions import ClientError

from datashard.errors import StorageError, TransientStorageError
from datashard.storage.ranged_reads import Got, Sink
from datashard.storage.s3_body import parse_total, unquote_etag
from datashard.storage.s3_config import S3Config, response_time
from datashard.storage.sigv4 import EMPTY_SHA256, Signer


class LeanS3:
    """Signed requests to one bucket over a ``urllib3`` pool (see the module docstring)."""

    def __init__(self, config: S3Config, client: Any) -> None:
        self.config = config
        endpoint = urlsplit(client.meta.endpoint_url)
        self._host = endpoint.netloc  # with the port, unless http's default (as sent)
        self._origin = f"{endpoint.scheme}://{endpoint.netloc}"
        self._bucket_path = f"/{quote(config.bucket, safe='')}"
        self._signer: Signer | None = None
        if not config.anonymous:
            signer = getattr(client, "_request_signer", None)
            self._signer = Signer(getattr(signer, "_credentials", None), client.meta.region_name)
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=config.max_concurrency + config.write_concurrency,
            timeout=urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout),
            retries=False,
        )

    @staticmethod
    def usable(config: S3Config, client: Any) -> bool:
        """Whether requests of this backend may go the lean way: a plain-HTTP endpoint,
        path-style addressing, and credentials botocore exposes (or none needed)."""
        endpoint = config.endpoint_url or ""
        if urlsplit(endpoint).scheme != "http" or config.path_style is not True:
            return False
        if urlsplit(endpoint).path.strip("/"):
            return False
        if _proxied(urlsplit(endpoint).netloc):
            return False  # boto3 goes through the proxy the environment names; so must we
        if config.anonymous:
            return True
        signer = getattr(client, "_request_signer", None)
        return getattr(signer, "_credentials", None) is not None

    def _open(
        self,
        method: str,
        object_key: str | None,
        headers: dict[str, str],
        query: str = "",
        body: bytes | bytearray | memoryview | None = None,
    ) -> Any:
        """Send one request for ``object_key`` (the bucket itself if ``None``); the response,
        its body not read yet."""
        path = self._bucket_path
        if object_key is not None:
            path += "/" + quote(object_key, safe="/~")
        if self.config.requester_pays:
            headers["x-amz-request-payer"] = "requester"
        if self._signer is not None:
            payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
            headers = self._signer.sign(method, self._host, path, query, headers, payload)
        url = self._origin + path + ("?" + query if query else "")
        return self._pool.request(
            method,
            url,
            headers=headers,
            body=body,  # type: ignore[arg-type]  # urllib3 sends any bytes-like object whole
            preload_content=False,
            redirect=False,
        )

    def get_into(
        self, object_key: str, start: int, end: int, sink: Sink, pin: str | None, key: str
    ) -> int:
        """GET bytes ``[start, end)`` of ``object_key`` into the view ``sink`` gives for the
        response's headers; their count. An error answer raises ``ClientError`` (as boto3
        would), a failed connection urllib3's error, a server that ignored the range
        ``StorageError``."""
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if pin:
            headers["If-Match"] = pin
        response = self._open("GET", object_key, headers)
        try:
            if response.status not in (200, 206):
                raise _client_error(response)
            content_range = response.headers.get("Content-Range")
            if not content_range and start != 0:
                raise StorageError(
                    f"GET {key!r} in {self.config.root_uri()}: the server ignored the Range header",
                    key=key,
                )
            count = int(response.headers.get("Content-Length", "0"))
            total = parse_total(content_range, count, start)
            view = sink(Got(count, total, unquote_etag(response.headers.get("ETag"))))
            _read_into(response, view[:count], key)
        except BaseException:
            response.close()
            raise
        return count

    def list_page(self, prefix: str, token: str | None) -> dict[str, Any]:
        """One page of ``ListObjectsV2`` under the full key ``prefix`` (after ``token``), as
        boto3 returns it: ``Contents`` (``Key``, ``Size``, ``ETag``, ``LastModified``),
        ``IsTruncated`` and ``NextContinuationToken``. An error answer raises
        ``ClientError``."""
        query = [("list-type", "2"), ("prefix", prefix), ("encoding-type", "url")]
        if token:
            query.append(("continuation-token", token))
        body = self._finish(
            self._open("GET", None, {}, urlencode(sorted(query), quote_via=quote, safe="~")),
            "ListObjectsV2",
        )
        return _list_result(body)

    def head(self, object_key: str) -> dict[str, Any]:
        """``HeadObject`` as boto3 returns it: ``ContentLength``, ``ETag``, ``VersionId``,
        ``LastModified`` and the user ``Metadata`` (names lower-case)."""
        response = self._open("HEAD", object_key, {})
        self._finish(response, "HeadObject")
        h = response.headers
        out: dict[str, Any] = {
            "ContentLength": int(h.get("Content-Length", "0")),
            "ETag": h.get("ETag"),
            "Metadata": {
                name[len("x-amz-meta-") :].lower(): value
                for name, value in h.items()
                if name.lower().startswith("x-amz-meta-")
            },
        }
        if h.get("x-amz-version-id"):
            out["VersionId"] = h["x-amz-version-id"]
        if h.get("Last-Modified"):
            out["LastModified"] = parsedate_to_datetime(h["Last-Modified"])
        return out

    def put(
        self,
        object_key: str,
        body: bytes | bytearray | memoryview,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """``PutObject`` of ``body``; with ``if_none_match`` only if no object is there (a 412
        answer raises ``ClientError`` with code ``PreconditionFailed``)."""
        headers = {"Content-Length": str(len(body))}
        if if_none_match:
            headers["If-None-Match"] = "*"
        for name, value in (metadata or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        self._finish(self._open("PUT", object_key, headers, body=body), "PutObject")

    def delete(self, object_key: str) -> None:
        """``DeleteObject`` (a missing object is no error, as S3 answers)."""
        self._finish(self._open("DELETE", object_key, {}), "DeleteObject")

    @staticmethod
    def _finish(response: Any, operation: str) -> bytes:
        """The body of a successful answer (the connection back in the pool); an error
        answer raises ``ClientError``."""
        try:
            if not 200 <= response.status < 300:
                raise _client_error(response, operation)
            return bytes(response.read(decode_content=True))
        finally:
            response.release_conn()

    def close(self) -> None:
        self._pool.clear()


def _proxied(netloc: str) -> bool:
    """Whether the environment routes plain-HTTP requests to ``netloc`` through a proxy
    (``HTTP_PROXY`` without a ``NO_PROXY`` entry for it), as botocore would."""
    proxies = urllib.request.getproxies_environment()
    if not proxies.get("http"):
        return False
    return not urllib.request.proxy_bypass_environment(netloc, proxies)  # type: ignore[attr-defined]


def _list_result(body: bytes) -> dict[str, Any]:
    """A ``ListObjectsV2`` answer (``encoding-type=url``) as boto3 shapes it."""
    root = ElementTree.fromstring(body)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    contents = []
    for item in root.iterfind(f"{ns}Contents"):
        stamp = item.findtext(f"{ns}LastModified") or ""
        contents.append(
            {
                "Key": unquote(item.findtext(f"{ns}Key") or ""),
                "Size": int(item.findtext(f"{ns}Size") or 0),
                "ETag": item.findtext(f"{ns}ETag"),
                "LastModified": response_time(stamp) if stamp else None,
            }
        )
    result: dict[str, Any] = {
        "Contents": contents,
        "IsTruncated": (root.findtext(f"{ns}IsTruncated") or "").strip().lower() == "true",
    }
    token = root.findtext(f"{ns}NextContinuationToken")
    if token:
        result["NextContinuationToken"] = token
    return result


#: The S3 error code of an error answer whose body names none, by HTTP status.
_CODES = {
    400: "BadRequest",
    403: "AccessDenied",
    404: "NoSuchKey",
    412: "PreconditionFailed",
    416: "InvalidRange",
    500: "InternalError",
    503: "SlowDown",
}


def _client_error(response: Any, operation: str = "GetObject") -> ClientError:
    """The ``ClientError`` boto3 raises for this error answer: the code and message of its XML
    body (``<Error><Code>...``), else a code by status."""
    body = response.read(64 * 1024, decode_content=True) or b""
    code = message = ""
    if body:
        try:
            root = ElementTree.fromstring(body)
            code = root.findtext("Code") or ""
            message = root.findtext("Message") or ""
        except ElementTree.ParseError:
            pass
    status = int(response.status)
    error = {"Code": code or _CODES.get(status, str(status)), "Message": message}
    meta = {"HTTPStatusCode": status, "HTTPHeaders": dict(response.headers)}
    return ClientError({"Error": error, "ResponseMetadata": meta}, operation)


def _read_into(response: Any, view: memoryview, key: str) -> None:
    """Exactly ``len(view)`` bytes of ``response``'s body into ``view`` (from the socket when
    the body is not encoded); a short body raises ``TransientStorageError``."""
    fp: Any = getattr(response, "_fp", None)
    direct = isinstance(fp, http.client.HTTPResponse) and not response.headers.get(
        "content-encoding"
    )
    pos, total = 0, len(view)
    while pos < total:
        n = fp.readinto(view[pos:]) if direct else response.readinto(view[pos:])
        if not n:
            raise TransientStorageError(
                f"GET {key!r}: the response body ended after {pos} of {total} bytes", key=key
            )
        pos += n
    if direct and not fp.isclosed():
        response.close()  # bytes left unread: the connection cannot be reused
    else:
        response.release_conn()

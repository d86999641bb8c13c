"""Range GETs of the S3 data path without boto3's per-request machinery.

A ``GetObject`` through boto3 costs about 1.2 ms of CPU in the client (building the request
from the service model, events, signing, parsing the response into a dict); pyarrow's C++
client spends 0.3 ms. For the range GETs that read data (:meth:`S3Backend._get_into`) this
module sends the request itself: botocore's own SigV4 signer (``S3SigV4Auth``) over a plain
``urllib3`` pool, the body read from the socket straight into the caller's buffer. About
0.5 ms of CPU a GET. Listings go the same way (:meth:`LeanGets.list_page`): boto3 spends
about 0.1 ms of CPU on each key of a ``ListObjectsV2`` answer, which the writers of a table
with group commit list every round, and the upkeep a page of 1,000 keys every 64 commits.

It is used only where the request is simple to get right: a plain-HTTP endpoint
(``http://``, as a Ceph RGW or MinIO on a cluster network usually is) with path-style
addressing. An error answer is raised as the ``ClientError`` boto3 would raise (its S3 error
code read from the XML body, the HTTP status), and a failed connection as urllib3's exception,
so the caller translates and retries them as it does every other request.

Process-wide state: none (the pool belongs to the backend's per-process state).
"""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit
from xml.etree import ElementTree

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

from datashard.errors import StorageError, TransientStorageError
from datashard.storage.ranged_reads import Got, Sink
from datashard.storage.s3_body import parse_total, unquote_etag
from datashard.storage.s3_config import S3Config, response_time


class LeanGets:
    """Signed range GETs of one bucket over a ``urllib3`` pool (see the module docstring)."""

    def __init__(self, config: S3Config, client: Any) -> None:
        self.config = config
        self._base = f"{client.meta.endpoint_url.rstrip('/')}/{quote(config.bucket, safe='')}/"
        self._region = client.meta.region_name
        self._credentials: Any = None
        if not config.anonymous:
            signer = getattr(client, "_request_signer", None)
            self._credentials = getattr(signer, "_credentials", None)
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=config.max_concurrency + config.write_concurrency,
            timeout=urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout),
            retries=False,
        )

    @staticmethod
    def usable(config: S3Config, client: Any) -> bool:
        """Whether GETs of this backend may go the lean way: a plain-HTTP endpoint, path-style
        addressing, and credentials botocore exposes (or none needed)."""
        endpoint = config.endpoint_url or ""
        if urlsplit(endpoint).scheme != "http" or config.path_style is not True:
            return False
        if urlsplit(endpoint).path.strip("/"):
            return False
        if config.anonymous:
            return True
        signer = getattr(client, "_request_signer", None)
        return getattr(signer, "_credentials", None) is not None

    def get_into(
        self, object_key: str, start: int, end: int, sink: Sink, pin: str | None, key: str
    ) -> int:
        """GET bytes ``[start, end)`` of ``object_key`` into the view ``sink`` gives for the
        response's headers; their count. An error answer raises ``ClientError`` (as boto3
        would), a failed connection urllib3's error, a server that ignored the range
        ``StorageError``."""
        url = self._base + quote(object_key, safe="/~")
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if pin:
            headers["If-Match"] = pin
        headers = self._signed("GET", url, headers)
        response = self._pool.request("GET", url, headers=headers, preload_content=False)
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
        ``IsTruncated`` and ``NextContinuationToken``. boto3 spends about 0.1 ms of CPU on each
        key it parses; this reads the XML with ElementTree. An error answer raises
        ``ClientError``."""
        query = [("list-type", "2"), ("prefix", prefix), ("encoding-type", "url")]
        if token:
            query.append(("continuation-token", token))
        url = self._base.rstrip("/") + "?" + urlencode(sorted(query), quote_via=quote, safe="~")
        response = self._pool.request(
            "GET", url, headers=self._signed("GET", url, {}), preload_content=False
        )
        try:
            if response.status != 200:
                raise _client_error(response, "ListObjectsV2")
            body = response.read(decode_content=True)
        finally:
            response.release_conn()
        return _list_result(body)

    def _signed(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with the request payer and, unless anonymous, the SigV4 signature."""
        if self.config.requester_pays:
            headers["x-amz-request-payer"] = "requester"
        if self._credentials is None:
            return headers
        request = AWSRequest(method=method, url=url, headers=headers)
        frozen = self._credentials.get_frozen_credentials()
        S3SigV4Auth(frozen, "s3", self._region).add_auth(request)
        return dict(request.headers.items())

    def close(self) -> None:
        self._pool.clear()


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

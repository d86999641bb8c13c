"""Reading S3 GET responses: what their headers tell, and their bodies straight into a buffer."""

from __future__ import annotations

import http.client
from typing import Any

from datashard.errors import TransientStorageError


def unquote_etag(etag: str | None) -> str | None:
    """An ETag without its quotes: how ``head`` reports it, and the form Ceph RGW accepts in
    ``If-Match``."""
    return etag.strip('"') if etag else None


def parse_total(content_range: str | None, content_length: int, start: int) -> int:
    """The object size from ``Content-Range: bytes a-b/size`` (or a 200's length)."""
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    return start + content_length


def read_body_into(body: Any, view: memoryview) -> None:
    """Read exactly ``len(view)`` bytes of a botocore streaming body into ``view``.

    Reads from the socket into the view (``http.client``'s ``readinto``) when the body is a plain
    urllib3 response; otherwise through ``body.read`` in chunks. A short body raises
    ``TransientStorageError``; the connection goes back to the pool only when fully read.
    """
    raw: Any = getattr(body, "_raw_stream", None)
    fp: Any = getattr(raw, "_fp", None)
    direct = isinstance(fp, http.client.HTTPResponse) and not raw.headers.get("content-encoding")
    pos, total = 0, len(view)
    try:
        while pos < total:
            if direct:
                n = fp.readinto(view[pos:])
            else:
                chunk = body.read(min(total - pos, 8 * 1024 * 1024))
                n = len(chunk)
                view[pos : pos + n] = chunk
            if not n:
                raise TransientStorageError(
                    f"the response body ended after {pos} of {total} bytes", key=None
                )
            pos += n
    except BaseException:
        body.close()
        raise
    if direct:
        if fp.isclosed():
            raw.release_conn()
        else:  # unread bytes left: the connection cannot be reused
            body.close()
    else:
        body.close()

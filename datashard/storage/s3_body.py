"""S3 request and response bodies: what GET headers tell, GET bodies read straight into a
buffer, and PUT bodies sent from a buffer without a copy."""

from __future__ import annotations

import http.client
import io
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


class ViewBody(io.RawIOBase):
    """A read-only, seekable file over a byte view: how a part buffer (or a slice of the
    caller's bytes) goes out as a request body without being copied into ``bytes`` first
    (botocore takes ``bytes``, ``bytearray`` or a file, not a ``memoryview``). Make one per
    attempt: a retry must start from the first byte."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        n = max(0, min(len(out), len(self._view) - self._pos))
        out[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def body_of(data: bytes | bytearray | memoryview) -> bytes | bytearray | ViewBody:
    """``data`` as botocore takes a body: itself when it is ``bytes`` or ``bytearray``, else a
    :class:`ViewBody` over it."""
    if isinstance(data, (bytes, bytearray)):
        return data
    view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    if isinstance(view.obj, (bytes, bytearray)) and len(view) == len(view.obj):
        return view.obj  # the whole of a bytes or bytearray: send it as it is
    return ViewBody(view)

"""A loopback HTTP proxy that makes a real server fail on purpose, for retry tests.

``FaultProxy("http://127.0.0.1:9000")`` listens on ``127.0.0.1`` (a free port) and forwards each
HTTP/1.1 request to the server, byte for byte, over one upstream connection per client
connection. Told to, it answers or breaks the next requests instead:

- :meth:`fail`: answer ``503 SlowDown`` (or any status and S3 error code) without forwarding;
- :meth:`reset`: close the client connection with a TCP reset, without forwarding;
- :meth:`delay`: wait, then forward;
- :meth:`drop_response`: forward, let the server answer, then reset the client connection (the
  request landed, the caller never learns it: the lost response of a conditional PUT);
- :meth:`cut_body`: forward, send the response headers and the first bytes of the body, then
  reset (a connection that dies mid-download);
- :meth:`call`: run a function (for example, change the object on the server), then forward.

Each rule applies to the next ``n`` matching requests, optionally only to one HTTP method and a
path regex. ``requests`` counts every request received by method, ``forwarded`` those that
reached the server, ``max_in_flight`` the most requests open at once, ``arrivals`` lists
``(monotonic time, method, path)`` of every request and ``headers`` their headers (lower-case
names), in the same order.

Everything runs on plain threads; :meth:`stop` closes every socket and joins the threads.
"""

from __future__ import annotations

import collections
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal
from urllib.parse import urlsplit

Action = Literal["fail", "reset", "delay", "drop_response", "cut_body", "call"]
HOST = "127.0.0.1"
_CHUNK = 1024 * 1024


@dataclass
class Rule:
    """Do ``action`` to the next ``remaining`` requests matching ``method`` and ``path``."""

    action: Action
    remaining: int
    method: str | None = None
    path: re.Pattern[str] | None = None
    status: int = 503
    code: str = "SlowDown"
    seconds: float = 0.0
    after_bytes: int = 0
    callback: Callable[[str, str], None] | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path is None or self.path.search(path) is not None


class _Once:
    """Call ``fn`` the first time this is called, never again."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Callable[[], None] | None = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()


class _Closed(Exception):
    """The client or the server closed its connection."""


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class FaultProxy:
    """See the module docstring. Use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.requests: collections.Counter[str] = collections.Counter()
        self.forwarded: collections.Counter[str] = collections.Counter()
        self.injected: collections.Counter[str] = collections.Counter()
        self.arrivals: list[tuple[float, str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._stopping = threading.Event()
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the endpoint to give the client."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(128)
        self._listener = listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            _close(self._listener)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- rules -----------------------------------------------------------------------------

    def _add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def fail(
        self,
        n: int = 1,
        status: int = 503,
        code: str = "SlowDown",
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` and S3 error ``code``."""
        self._add(Rule("fail", n, method, _rx(path), status=status, code=code))

    def reset(self, n: int = 1, method: str | None = None, path: str | None = None) -> None:
        """Reset the connection of the next ``n`` matching requests before forwarding them."""
        self._add(Rule("reset", n, method, _rx(path)))

    def delay(
        self, seconds: float, n: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        """Hold the next ``n`` matching requests for ``seconds`` before forwarding them."""
        self._add(Rule("delay", n, method, _rx(path), seconds=seconds))

    def drop_response(self, n: int = 1, method: str | None = None, path: str | None = None) -> None:
        """Forward the next ``n`` matching requests, then reset instead of answering."""
        self._add(Rule("drop_response", n, method, _rx(path)))

    def cut_body(
        self, after_bytes: int, n: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        """Forward; send the headers and ``after_bytes`` of the body; then reset."""
        self._add(Rule("cut_body", n, method, _rx(path), after_bytes=after_bytes))

    def call(
        self,
        callback: Callable[[str, str], None],
        n: int = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Run ``callback(method, path)`` in the proxy, then forward the request."""
        self._add(Rule("call", n, method, _rx(path), callback=callback))

    def clear(self) -> None:
        """Drop every pending rule and zero the counters."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()
            self.forwarded.clear()
            self.injected.clear()
            self.arrivals.clear()
            self.headers.clear()
            self.max_in_flight = self.in_flight

    def _take(self, method: str, path: str, headers: dict[str, str]) -> Rule | None:
        with self._lock:
            self.requests[method] += 1
            self.arrivals.append((time.monotonic(), method, path))
            self.headers.append(headers)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    self.injected[rule.action] += 1
                    return rule
        return None

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    # -- serving ---------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.add(client)
                self.connections += 1
                self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(
                target=self._serve, args=(client,), name="faultproxy-conn", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        up_file: BinaryIO | None = None
        client_file = client.makefile("rb")
        try:
            while not self._stopping.is_set():
                try:
                    head = _read_head(client_file)
                except _Closed:
                    return
                method, path = _request_line(head)
                headers = _headers(head)
                if "100-continue" in headers.get("expect", "").lower():
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = _drop_header(head, b"expect")
                body = _read_body(client_file, headers)
                rule = self._take(method, path, headers)
                done = _Once(self._done)
                try:
                    if rule is not None and rule.action == "fail":
                        done()
                        client.sendall(_error_response(rule.status, rule.code))
                        continue
                    if rule is not None and rule.action == "reset":
                        _reset(client)
                        return
                    if rule is not None and rule.action == "delay":
                        time.sleep(rule.seconds)
                    if rule is not None and rule.callback is not None:
                        rule.callback(method, path)
                    if upstream is None:
                        upstream = socket.create_connection(self.upstream, timeout=60)
                        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        with self._lock:
                            self._sockets.add(upstream)
                        up_file = upstream.makefile("rb")
                    assert up_file is not None and upstream is not None
                    upstream.sendall(head + body)
                    with self._lock:
                        self.forwarded[method] += 1
                    keep = self._relay(up_file, client, method, rule, done)
                finally:
                    done()
                if not keep:
                    return
        except (OSError, _Closed, ValueError):
            return
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._sockets.discard(sock)
                    _close(sock)

    def _relay(
        self,
        up_file: BinaryIO,
        client: socket.socket,
        method: str,
        rule: Rule | None,
        done: Callable[[], None],
    ) -> bool:
        """Copy one response from the server to the client; False if the client was cut off.

        ``done`` (the request no longer counts as in flight) is called before the last bytes
        go out: once the client has them it may send its next request at once, and that one
        must not find this one still counted."""
        head = _read_head(up_file)
        headers = _headers(head)
        status = int(head.split(b" ", 2)[1])
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        if rule is not None and rule.action == "drop_response":
            if not no_body:
                _read_body(up_file, headers)
            _reset(client)
            return False
        cut = rule.after_bytes if rule is not None and rule.action == "cut_body" else None
        if no_body:
            done()
            client.sendall(head)
            return True
        client.sendall(head)
        sent = 0
        held: bytes | None = None  # one piece behind, so the last one is known as last
        for piece in _body_pieces(up_file, headers):
            if cut is not None and sent + len(piece) >= cut:
                client.sendall(piece[: cut - sent])
                _reset(client)
                return False
            if held is not None:
                client.sendall(held)
            held = piece
            sent += len(piece)
        done()
        if held is not None:
            client.sendall(held)
        return "close" not in headers.get("connection", "").lower()


def _rx(path: str | None) -> re.Pattern[str] | None:
    return re.compile(path) if path is not None else None


def _read_head(f: BinaryIO) -> bytes:
    lines = []
    while True:
        line = f.readline(65537)
        if not line:
            raise _Closed()
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)
        if len(lines) > 200:
            raise ValueError("too many header lines")


def _request_line(head: bytes) -> tuple[str, str]:
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, path, _ = first.split(" ", 2)
    return method.upper(), path


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            out[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return out


def _drop_header(head: bytes, name: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [ln for ln in lines if not ln.lower().startswith(name + b":")]
    return b"\r\n".join(kept)


def _body_pieces(f: BinaryIO, headers: dict[str, str]) -> Iterator[bytes]:
    """The raw bytes of one message body (chunked framing kept as is)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = f.readline(1024)
            if not size_line:
                raise _Closed()
            yield size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    line = f.readline(65537)
                    if not line:
                        raise _Closed()
                    yield line
                    if line in (b"\r\n", b"\n"):
                        return
            remaining = size + 2
            while remaining:
                piece = f.read(min(remaining, _CHUNK))
                if not piece:
                    raise _Closed()
                remaining -= len(piece)
                yield piece
        return
    remaining = int(headers.get("content-length", "0") or 0)
    while remaining:
        piece = f.read(min(remaining, _CHUNK))
        if not piece:
            raise _Closed()
        remaining -= len(piece)
        yield piece


def _read_body(f: BinaryIO, headers: dict[str, str]) -> bytes:
    return b"".join(_body_pieces(f, headers))


def _error_response(status: int, code: str) -> bytes:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected by FaultProxy</Message>"
        "<RequestId>faultproxy</RequestId></Error>"
    ).encode()
    reason = _REASONS.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), not an orderly FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _close(sock: socket.socket) -> None:
    """Shut down, then close: a plain close wakes no thread blocked on the socket and leaves the
    descriptor open while a ``makefile`` object still refers to it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass

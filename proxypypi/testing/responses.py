# -*- test-case-name: tests.test_testing -*-
"""
How the fake index's answers go out: byte ranges of files, throttling, and
the injected faults (drops, stalls, truncation, corruption, hangs) that a
real upstream shows and the proxy must survive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import attrs
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.python.failure import Failure
from twisted.web import server
from zope.interface import implementer


@attrs.define
class Fault:
    """
    A misbehaviour to inject into responses.

    Body faults (``drop_after``, ``stall_after``, ``corrupt``, ``truncate``)
    apply to whatever body would have been sent, including the short body
    of an injected ``status``.

    :ivar status: answer with this HTTP status and a short text body.
    :ivar times: how many more requests this fault applies to (decremented
        per request); ``None`` means forever.  An exhausted fault is ignored.
    :ivar drop_after: abort the connection (TCP reset) after this many body
        bytes: what a crashing upstream or a middlebox looks like.  Over a
        real socket the reset discards bytes still buffered, so the client
        may get fewer (exact in memory, or when throttled).
    :ivar stall_after: send this many body bytes, then nothing, ever, while
        keeping the connection open: exercises read timeouts.
    :ivar corrupt: flip one byte in the middle of the body (same length), so
        only a hash check can notice.
    :ivar truncate: send only this many body bytes, then close the
        connection cleanly (FIN), short of the promised ``Content-Length``.
    :ivar hang: never answer at all, not even headers.
    """

    status: int | None = None
    times: int | None = None
    drop_after: int | None = None
    stall_after: int | None = None
    corrupt: bool = False
    truncate: int | None = None
    hang: bool = False



@attrs.frozen
class Response:
    code: int
    headers: dict[str, str]
    body: bytes = b""


def text_response(code: int, message: str, **headers: str) -> Response:
    return Response(
        code, {"Content-Type": "text/plain; charset=utf-8", **headers}, message.encode() + b"\n"
    )


class Unsatisfiable(Exception):
    pass


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """
    The half-open byte span a single-range ``Range`` header asks for, or
    ``None`` when the header should be ignored (malformed, or several
    ranges, which the fake does not serve).

    :raises Unsatisfiable: for a well-formed range outside the file.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable()
        return max(0, size - n), size
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable()
    return start, min(int(last) + 1, size) if last else size


def etag_matches(header: str, etag: str) -> bool:
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return "*" in candidates or etag in candidates



def file_response(request: server.Request, data: bytes, sha256: str) -> Response:
    """
    A file response, honouring a single ``Range`` (and ``If-Range``).
    """
    etag = f'"{sha256}"'
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "max-age=365000000, immutable, public",
    }
    range_header = request.getHeader("range")
    if_range = request.getHeader("if-range")
    if range_header is None or (if_range is not None and if_range != etag):
        return Response(200, headers, data)
    try:
        span = _parse_range(range_header, len(data))
    except Unsatisfiable:
        unsatisfiable = {"Content-Range": f"bytes */{len(data)}"}
        return text_response(416, "range not satisfiable", **unsatisfiable)
    if span is None:
        return Response(200, headers, data)
    start, stop = span
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
    return Response(206, headers, data[start:stop])


@implementer(IPushProducer)
@attrs.define(eq=False)
class Exchange:
    """
    One request in flight: its delayed work, its body, and whether the
    client is still there.  Registered as the request's push producer while
    a body is being sent, so a slow client pauses the fake instead of
    filling memory.

    :ivar ending: what to do once ``limit`` bytes are out: ``"finish"``,
        ``"abort"`` (reset), ``"lose"`` (clean close, short body) or
        ``"stall"`` (nothing).
    """

    request: server.Request
    reactor: IReactorTime
    throttle: int | None
    chunk_size: int
    gone: bool = False
    done: bool = False
    paused: bool = False
    pending: IDelayedCall | None = None
    data: bytes = b""
    offset: int = 0
    limit: int = 0
    ending: str = "finish"
    _pumping: bool = False

    def later(self, delay: float, work: Callable[[], None]) -> None:
        """
        Run ``work`` after ``delay`` seconds unless the client goes away.
        """

        def run() -> None:
            self.pending = None
            if not self.gone:
                work()

        self.pending = self.reactor.callLater(delay, run)

    def lost(self, reason: Failure | None) -> None:
        """
        The client disconnected: cancel whatever was scheduled.
        """
        self.gone = True
        if self.pending is not None and self.pending.active():
            self.pending.cancel()
        self.pending = None

    def deliver(self, response: Response, method: str, fault: Fault | None) -> None:
        """
        Send ``response`` (headers only for ``HEAD`` and ``304``), damaged
        as ``fault`` says.
        """
        request = self.request
        request.setResponseCode(response.code)
        for name, value in response.headers.items():
            request.setHeader(name, value)
        body = response.body
        if response.code != 304:
            request.setHeader("Content-Length", str(len(body)))
        if method == "HEAD" or response.code == 304:
            body = b""
        limit, ending = len(body), "finish"
        if fault is not None:
            if fault.corrupt and body:
                middle = len(body) // 2
                body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
            for count, how in (
                (fault.drop_after, "abort"),
                (fault.stall_after, "stall"),
                (fault.truncate, "lose"),
            ):
                if count is not None and count < len(body):
                    limit, ending = count, how
                    break
        self.send(body, limit, ending)

    def send(self, data: bytes, limit: int, ending: str) -> None:
        self.data, self.limit, self.ending = data, min(limit, len(data)), ending
        self.request.registerProducer(self, True)
        # Flush the headers now, so a fault at byte 0 still sends them.
        self.request.write(b"")
        self._pump()

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while not (self.gone or self.done or self.paused or self.pending):
                if self.offset >= self.limit:
                    self._end()
                    return
                stop = min(self.limit, self.offset + self.chunk_size)
                chunk = self.data[self.offset : stop]
                self.offset = stop
                self.request.write(chunk)
                if self.throttle:
                    self.later(len(chunk) / self.throttle, self._pump)
        finally:
            self._pumping = False

    def _end(self) -> None:
        self.done = True
        if self.ending == "stall":
            return
        self.request.unregisterProducer()
        if self.ending == "abort":
            # A reset, not a FIN: abortConnection is on ITCPTransport only.
            cast(ITCPTransport, self.request.transport).abortConnection()
        elif self.ending == "lose":
            self.request.loseConnection()
        else:
            self.request.finish()

    # IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:
        self.lost(None)



# -*- test-case-name: tests.test_upstream,tests.test_downloads -*-
"""
HTTP requests to upstreams: bounded in time and size, never buffered
whole when the caller wants a stream.

Built on a plain ``IAgent`` (the service gives it a pooled, TLS-verifying
``Agent`` behind a ``RedirectAgent``; tests give it treq's in-memory
``RequestTraversalAgent``).  treq's own request helpers are not used for
files because they add gzip decoding, which would break ``Content-Length``
passthrough and could alter the bytes of a ``.tar.gz``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from isal import isal_zlib
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    PotentialDataLoss,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from proxypypi import __version__

USER_AGENT = f"proxypypi/{__version__}".encode()
_CLEAN_END = Failure(ResponseDone())


class FetchError(Exception):
    """
    An upstream request failed; ``str()`` is a one-line reason for logs and
    error pages.

    :ivar unreachable: retrying cannot help (see `is_unreachable`).
    """

    unreachable: bool = False


class UpstreamTimeout(FetchError):
    """
    The upstream did not answer, or stopped sending, in time.
    """


class BodyTooLarge(FetchError):
    """
    The upstream sent more than we accept for this kind of response.
    """


@attrs.define(eq=False)
class Timing:
    """
    When a request to an upstream was sent, and how long its headers took
    (``None`` until they came): the latency the member's health averages.
    """

    started: float
    latency: float | None = None


def is_unreachable(failure: Failure | BaseException) -> bool:
    """
    Whether a failure says the upstream cannot be reached at all (refused
    connection, unknown host name, TLS handshake or certificate failure, a
    proxy refusing the tunnel for want of credentials or by policy):
    such failures do not get better on the next request, so the member is
    taken out at once rather than after several tries.
    """
    exc = failure.value if isinstance(failure, Failure) else failure
    if isinstance(exc, ConnectionRefusedError | DNSLookupError | SSL.Error | VerificationError):
        return True
    if isinstance(exc, FetchError):
        return exc.unreachable
    if isinstance(exc, ResponseNeverReceived):
        return any(is_unreachable(r) for r in exc.reasons)
    return False


def describe_failure(failure: Failure) -> str:
    """
    A short, human-readable reason for a failed request, without traceback.
    """
    exc = failure.value
    if isinstance(exc, FetchError):
        return str(exc)
    if isinstance(exc, ResponseNeverReceived | ResponseFailed):
        inner = [describe_failure(r) for r in exc.reasons]
        return "connection failed before the response completed: " + "; ".join(inner)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, DNSLookupError):
        return "host name not found"
    if isinstance(exc, ConnectError):
        return f"cannot connect ({exc.__class__.__name__})"
    if isinstance(exc, CancelledError):
        return "request cancelled"
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0]


@attrs.define(eq=False)
class BodyReceiver(Protocol):
    """
    Feed a response body chunk by chunk to ``on_data``, abandoning the
    response when no byte arrives for ``idle_timeout`` seconds (the server
    side has no such timer while a response is being read).

    :ivar done: fires with ``None`` once the whole body arrived, or fails
        with a `FetchError`.  A body cut short is a failure; a body without
        a declared length that ends with the connection is accepted, with
        `unframed` set: nothing tells it from a body cut short, so the
        caller must prove it whole (its end marker, length or hash).
    :ivar unframed: the body ended with the connection, without a length.
    """

    on_data: Callable[[bytes], None]
    clock: IReactorTime
    idle_timeout: float
    done: Deferred[None] = attrs.field(init=False)
    unframed: bool = False
    _timer: IDelayedCall | None = None
    _error: Failure | None = None

    def __attrs_post_init__(self) -> None:
        # Cancelling the wait (a caller's overall time bound) must also stop
        # the body, or the connection would keep delivering into nothing.
        self.done = Deferred(lambda _: self.abort(FetchError("body read cancelled")))

    def connectionMade(self) -> None:
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.idle_timeout)
        else:
            self._timer = self.clock.callLater(self.idle_timeout, self._idle)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _idle(self) -> None:
        self._timer = None
        self.abort(UpstreamTimeout(f"no data for {self.idle_timeout:g}s"))

    def abort(self, error: Exception) -> None:
        """
        Stop reading this body; ``done`` fails with ``error``.
        """
        if self._error is None and not self.done.called:
            self._error = Failure(error)
            self._disarm()
            if self.transport is not None:
                # A response body's transport is a TransportProxyProducer:
                # stopProducing aborts the connection.
                IPushProducer(self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._arm()
        try:
            self.on_data(data)
        except Exception as e:
            self.abort(e)

    def connectionLost(self, reason: Failure = _CLEAN_END) -> None:
        self._disarm()
        if self.done.called:
            return
        if self._error is not None:
            self.done.errback(self._error)
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.unframed = reason.check(PotentialDataLoss) is not None
            self.done.callback(None)
        else:
            self.done.errback(
                Failure(FetchError("connection broke mid-body: " + describe_failure(reason)))
            )


def request(
    agent: IAgent,
    clock: IReactorTime,
    url: str,
    headers: dict[bytes, bytes],
    timeout: float,
    method: bytes = b"GET",
) -> Deferred[IResponse]:
    """
    Send a request and wait at most ``timeout`` seconds for the response
    headers.
    """
    h = Headers({b"user-agent": [USER_AGENT]})
    for k, v in headers.items():
        h.setRawHeaders(k, [v])
    d: Deferred[IResponse] = agent.request(method, url.encode("ascii"), h, None)

    def timed_out(f: Failure) -> Failure:
        if f.check(CancelledError):
            return Failure(UpstreamTimeout(f"no response within {timeout:g}s"))
        return f

    d.addTimeout(timeout, clock)
    d.addErrback(timed_out)
    return d


@attrs.frozen
class Body:
    """
    A whole body as read by `read_body`.

    :ivar unframed: it ended with the connection, without a length
        (`BodyReceiver.unframed`): it may have been cut short.
    """

    data: bytes
    unframed: bool


def read_body(
    response: IResponse,
    clock: IReactorTime,
    idle_timeout: float,
    limit: int,
    take: Callable[[int], None] | None = None,
) -> Deferred[Body]:
    """
    Read a whole (small) body, at most ``limit`` bytes.

    :param take: told of each chunk's size before it is kept; raises to
        refuse it (a memory budget shared with other bodies).
    """
    chunks: list[bytes] = []
    size = 0

    def add(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > limit:
            raise BodyTooLarge(f"response larger than {limit} bytes")
        if take is not None:
            take(len(data))
        chunks.append(data)

    receiver = BodyReceiver(add, clock, idle_timeout)
    response.deliverBody(receiver)
    return receiver.done.addCallback(lambda _: Body(b"".join(chunks), receiver.unframed))


#: What ISA-L raises for a broken stream (its stub types it as an instance).
_GZIP_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]


def gunzip(data: bytes, limit: int) -> bytes:
    """
    A gzip-encoded body decoded, never more than ``limit`` bytes of it
    however far it would expand (a gzip bomb stops there).  Blocking for a
    large body (ISA-L releases the GIL as it works).

    :raises BodyTooLarge: when it expands beyond ``limit``.
    :raises FetchError: when it is not one whole gzip stream.
    """
    decoder = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
    try:
        out = decoder.decompress(data, limit + 1)
    except _GZIP_ERROR as e:
        raise FetchError(f"broken gzip encoding: {e}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"response expands beyond {limit} bytes")
    if not decoder.eof or decoder.unused_data:
        raise FetchError("broken gzip encoding: not one whole gzip stream")
    return out


def gzip_encoded(response: IResponse) -> bool:
    """
    Whether ``response``'s body is gzip-encoded, which is the only coding
    we ask index pages in (and decode ourselves: `gunzip`, `GunzipStream`).

    :raises FetchError: for any other coding (the body is discarded).
    """
    encoding = (header(response, b"content-encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        response.deliverBody(Protocol())
        raise FetchError(f"unasked-for Content-Encoding {encoding!r}")
    return encoding != "identity"


#: How far one chunk of a streamed gzip body may expand: an index
#: compresses some sevenfold, a stream of zeros a thousandfold.
MAX_GZIP_RATIO = 100


@attrs.define
class GunzipStream:
    """
    A gzip-encoded body decoded chunk by chunk as it arrives (the project
    list, streamed), on the reactor thread, so each chunk's output is
    bounded: a chunk expanding more than `MAX_GZIP_RATIO`-fold is a gzip
    bomb, not an index, and is refused before it is expanded.
    """

    _decoder: Any = attrs.field(factory=lambda: isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS))

    def feed(self, data: bytes) -> bytes:
        """
        :raises BodyTooLarge: for a chunk that expands too far.
        :raises FetchError: for a broken stream, or data after its end.
        """
        if self._decoder.eof:
            raise FetchError("broken gzip encoding: data after its end")
        try:
            out: bytes = self._decoder.decompress(data, len(data) * MAX_GZIP_RATIO + 65536)
        except _GZIP_ERROR as e:
            raise FetchError(f"broken gzip encoding: {e}") from None
        if self._decoder.unconsumed_tail:
            raise BodyTooLarge(f"gzip encoding expands over {MAX_GZIP_RATIO}-fold")
        return out

    def close(self) -> None:
        """
        :raises FetchError: when the stream did not end.
        """
        if not self._decoder.eof:
            raise FetchError("broken gzip encoding: the stream was cut short")


def header(response: IResponse, name: bytes) -> str | None:
    """
    The first value of a response header, decoded leniently.
    """
    values: list[bytes] | None = response.headers.getRawHeaders(name)
    if not values:
        return None
    return values[0].decode("latin-1")


def final_url(response: IResponse, requested: str) -> str:
    """
    The URL a response finally came from, after redirects, so relative
    links resolve as a browser would resolve them.
    """
    req = getattr(response, "request", None)
    uri = getattr(req, "absoluteURI", None)
    if isinstance(uri, bytes):
        return uri.decode("ascii", "replace")
    return requested

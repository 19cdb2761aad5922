# -*- test-case-name: tests.test_internals -*-
"""
Every reach into Twisted's private state, in one place.

Each helper below does something the public API cannot, says why, and names
what it relies on.  All of it was checked against Twisted 25.5.0 (the oldest
release ``setup.py`` allows: 24.x lacks the ``parsePOSTFormSubmission``
argument of ``Request`` that `proxypypi.web.body` needs) and 26.10.0;
``tests/test_internals.py`` fails loudly, naming the attribute, if an
upgrade removes or renames one of them, rather than letting the service
degrade in silence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IRequest

__all__ = [
    "QuietConnectionPool",
    "accept_one_per_wake",
    "buffered",
    "cache_host",
    "raise_send_limit",
    "release_writes",
    "request_gone",
    "take_over_writes",
]


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """
    The upstream connection pool, without a "Starting factory" and a
    "Stopping factory" log line for every connection it opens.

    Why private: ``HTTPConnectionPool`` builds its protocol factories from
    the class attribute ``_factory`` (a ``_HTTP11ClientFactory``), and
    offers no public way to make them quiet.
    """

    _factory = _QuietClientFactory


def accept_one_per_wake(port: Any) -> None:
    """
    Make a listening port accept one connection each time the reactor
    finds it readable, for a socket that worker processes share.

    Why private: ``tcp.Port.doRead`` (``unix.Port`` inherits it) accepts up
    to ``numberAccepts`` connections per wake-up, 100 at first and more
    while the backlog stays full, and sets that attribute again on every
    call; there is no public knob.  A worker that drains the whole backlog
    at once takes a burst of connections (wrk's 16, a CI fleet's) away
    from its idle siblings; one at a time, whichever worker returns to
    its loop first takes the next, so the idle one takes most.
    """
    read = port.doRead

    def one() -> object:
        port.numberAccepts = 1
        return read()

    port.doRead = one


def raise_send_limit(transport: Any, limit: int) -> None:
    """
    Let a TCP transport hand up to ``limit`` bytes to the socket per write
    call, once per connection.

    Why private: ``FileDescriptor.SEND_LIMIT`` (128 KiB) is a class
    attribute with no setter; a large index page would take several trips
    through the reactor to leave.  Transports without it (in-memory ones in
    tests) are left alone.
    """
    if getattr(transport, "SEND_LIMIT", limit) < limit:
        transport.SEND_LIMIT = limit


def cache_host(transport: Any) -> None:
    """
    Make a transport remember its own address.

    Why: twisted.web asks ``transport.getHost()`` on every request (a
    ``getsockname`` system call), though a connection's local address never
    changes; there is no public hook to cache it.
    """
    if hasattr(transport, "getHost") and "getHost" not in vars(transport):
        host = transport.getHost()
        transport.getHost = lambda: host


def take_over_writes(transport: Any, do_write: Callable[[], object]) -> None:
    """
    Route a TCP transport's "socket writable" events to ``do_write``.

    Why private: Twisted has no sendfile (twisted/twisted#11395).  The
    reactor calls ``transport.doWrite`` each time the socket can take more,
    looking the method up on the instance, so an instance attribute
    redirects those events until `release_writes` removes it.
    """
    transport.doWrite = do_write


def release_writes(transport: Any, do_write: Callable[[], object]) -> bool:
    """
    Undo `take_over_writes`, if ``do_write`` is still the one installed.

    :returns: whether it was.
    """
    if vars(transport).get("doWrite") != do_write:
        return False
    del transport.doWrite
    return True


def buffered(transport: Any) -> bool:
    """
    Whether Twisted still holds bytes for the socket.

    Why private: a ``FileDescriptor`` keeps pending bytes in ``dataBuffer``
    and ``_tempDataBuffer``; sendfile must not overtake them (the response
    headers are among them).
    """
    return bool(transport.dataBuffer or transport._tempDataBuffer)


def request_gone(request: IRequest) -> bool:
    """
    Whether the client of ``request`` went away; nothing more may be
    written to it.

    Why private: ``http.Request`` records a lost connection only in
    ``_disconnected``; ``notifyFinish`` tells the same, but only to whoever
    subscribed before the loss.
    """
    return bool(getattr(request, "_disconnected", False))

# -*- test-case-name: tests.test_connections -*-
"""
Connections: a deadline for every request's head, and caps on how many
are open, in all and per client address.

twisted.web's only timer is an idle one, reset by every byte, so a client
that sends its headers a byte every few seconds keeps a connection forever,
and a thousand such clients take every file descriptor: nobody else gets
in, and even the storage probe cannot open a file (slowloris).  So:

- a request's head (request line and headers) must be complete within
  ``--header-timeout`` seconds of its first byte (of the connection's
  opening, for the first request); late, the client gets ``408`` and the
  connection is closed.  Bodies are not under this deadline: uploads from
  slow links are legitimate, and the idle timer still ends one that stops.
- at most ``--max-connections`` are open at once: by default the process's
  file descriptor limit less a quarter (at least 64) kept for files,
  upstream connections and the logs;
- at most ``--max-client-connections`` from one client address, so a few
  addresses cannot take the whole allowance.  ``--trusted-proxy``
  addresses (a reverse proxy in front, through which everyone comes) and
  Unix socket clients are not capped per address.

A connection over a cap is answered ``503`` with ``Retry-After`` at once
and closed, without reading anything from it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from proxypypi.web.address import is_trusted
from proxypypi.web.errors import raw_response

#: File descriptors kept for everything but client connections: a
#: quarter of the limit, and at least this many.
MIN_FD_RESERVE = 64

#: Seconds a refused client is told to wait.
REFUSED_RETRY_AFTER = 5

#: Seconds between two log lines about refused connections.
REFUSAL_LOG_INTERVAL = 60.0

_log = Logger()


def connection_cap(configured: int | None, fd_limit: int) -> int:
    """
    How many client connections may be open: the configured number, or
    the file descriptor limit less its reserve (never below a few).
    """
    if configured is not None:
        return configured
    if fd_limit <= 0:  # unlimited (RLIM_INFINITY)
        fd_limit = 1 << 20
    return max(fd_limit - max(MIN_FD_RESERVE, fd_limit // 4), 8)


def _client(peer: object) -> str | None:
    """
    The address a per-client cap counts, ``None`` for peers it does not
    apply to (Unix sockets, in-memory transports).
    """
    if isinstance(peer, IPv4Address | IPv6Address):
        return peer.host
    return None


@attrs.define(eq=False)
class ConnectionLimits:
    """
    The caps and the count of open connections.

    :ivar head_timeout: seconds for a request's head to arrive whole.
    :ivar max_total: connections open at most.
    :ivar max_per_client: connections open at most from one address.
    :ivar exempt: ``--trusted-proxy`` values, not capped per address.
    """

    head_timeout: float
    max_total: int
    max_per_client: int
    clock: IReactorTime
    exempt: tuple[str, ...] = ()
    total: int = attrs.field(default=0, init=False)
    refused: int = attrs.field(default=0, init=False)
    _per_client: Counter[str] = attrs.field(factory=Counter, init=False)
    _last_logged: float | None = attrs.field(default=None, init=False)

    def admit(self, peer: IAddress | None) -> str | None:
        """
        Count a new connection from ``peer`` in, or say why it is refused
        (it is then not counted).
        """
        client = _client(peer)
        if client is not None and is_trusted(peer, self.exempt):
            client = None
        if self.total >= self.max_total:
            return self._refuse(
                f"this server has {self.total} connections open, its limit "
                "(--max-connections); try again shortly"
            )
        if client is not None and self._per_client[client] >= self.max_per_client:
            return self._refuse(
                f"too many connections from {client} ({self.max_per_client}, "
                "--max-client-connections); reuse connections or try again shortly"
            )
        self.total += 1
        if client is not None:
            self._per_client[client] += 1
        return None

    def release(self, peer: IAddress | None) -> None:
        """
        A connection `admit`\\ ted from ``peer`` closed.
        """
        self.total -= 1
        client = _client(peer)
        if client is not None and client in self._per_client:
            self._per_client[client] -= 1
            if not self._per_client[client]:
                del self._per_client[client]

    def _refuse(self, reason: str) -> str:
        self.refused += 1
        now = self.clock.seconds()
        if self._last_logged is None or now - self._last_logged >= REFUSAL_LOG_INTERVAL:
            self._last_logged = now
            _log.warn(
                "refusing connections ({refused} so far): {reason}",
                refused=self.refused,
                reason=reason,
            )
        return reason


class Refused(Protocol):
    """
    A connection over a cap: ``503`` and closed, nothing read.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(
            raw_response(
                503, "Service Unavailable", self.reason, retry_after=REFUSED_RETRY_AFTER
            )
        )
        self.transport.loseConnection()


class ProxyChannel(HTTPChannel):
    """
    An HTTP connection whose request heads have a deadline and which is
    counted in its site's `ConnectionLimits` until it closes.

    :ivar limits: set by the site when it admits the connection.
    :ivar peer: the client's address, as admitted.
    """

    limits: ConnectionLimits | None = None
    peer: IAddress | None = None
    callLater: Any
    _head_timer: IDelayedCall | None = None
    _head_started: bool = False
    _in_request: bool = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if not self._in_request:
            self._head_started = True
            if self._head_timer is None:
                self._arm()
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._disarm()
        self._in_request = True
        self._head_started = False
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        # The next request's head may follow (keep-alive); its first byte
        # starts its deadline.
        self._in_request = False
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        limits, self.limits = self.limits, None
        if limits is not None:
            limits.release(self.peer)
        super().connectionLost(reason)

    def _arm(self) -> None:
        if self.limits is not None:
            self._head_timer = self.callLater(self.limits.head_timeout, self._head_late)

    def _disarm(self) -> None:
        timer, self._head_timer = self._head_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _head_late(self) -> None:
        """
        The head did not arrive in time: ``408`` to a client that began
        one (one that sent nothing is simply closed), then close, and
        abort if the client does not read even that.
        """
        self._head_timer = None
        if self.transport is None:
            return
        if self._head_started:
            message = "request headers not received in time (--header-timeout)"
            self.transport.write(raw_response(408, "Request Timeout", message))
        self.timeoutConnection()

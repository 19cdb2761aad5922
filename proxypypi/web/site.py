# -*- test-case-name: tests.test_web,tests.test_metrics,tests.test_logs -*-
"""
The web site: its requests carry what their responses learn (for the
access log and the metrics), bound their bodies, and tell the site when
they start and end, so a stopping service can wait for running responses;
its connections are capped and their request heads have a deadline
(`proxypypi.web.connections`).
"""

from __future__ import annotations

import tempfile
from io import BytesIO
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.server import Site

from proxypypi.internals import cache_host, raise_send_limit
from proxypypi.ops.facts import RequestFacts
from proxypypi.ops.logs import log_access
from proxypypi.ops.metrics import Metrics
from proxypypi.web.body import BodyPolicy, SpoolingRequest
from proxypypi.web.connections import ConnectionLimits, ProxyChannel, Refused

log = Logger()

#: Bytes handed to the socket per write call (Twisted's default is 128 KiB).
SEND_LIMIT = 1024 * 1024


class ProxyRequest(SpoolingRequest):
    """
    A request of the proxy's site.  Its body is bounded, and uploads stream
    to disk (`SpoolingRequest`).

    :ivar facts: what the response noted about itself.
    """

    facts: RequestFacts

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.facts = RequestFacts()

    def process(self) -> None:
        site = getattr(self.channel, "site", None)
        if isinstance(site, ProxySite):
            site.started(self)
        super().process()


def facts_of(request: IRequest) -> RequestFacts:
    """
    Where a resource notes what it learned about ``request``'s response.
    A request of another site (tests' in-memory clients) gets facts that
    nobody reads, since only `ProxySite` logs and counts requests.
    """
    if isinstance(request, ProxyRequest):
        return request.facts
    return RequestFacts()


class ProxySite(Site):
    """
    The web site, knowing which responses are still running.

    :ivar body_policy: limits and spooling of request bodies (see
        `proxypypi.web.body`).
    :ivar metrics: where finished requests are counted (``/metrics``, the
        status page).
    :ivar connections: the caps on open connections and the deadline of
        request heads; none without it.
    """

    requestFactory = ProxyRequest
    # HTTP/1.1 only: twisted.web's default wraps each channel in a protocol
    # that could switch to HTTP/2, which needs a package not installed here.
    protocol = ProxyChannel  # type: ignore[assignment]
    displayTracebacks = False
    #: No "Starting factory <ProxySite object at 0x...>" lines: the log
    #: says where the service listens, in words (`proxypypi.service`).
    noisy = False

    def __init__(
        self,
        resource: Any,
        *,
        body_policy: BodyPolicy | None = None,
        metrics: Metrics | None = None,
        connections: ConnectionLimits | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, **kwargs)
        self.body_policy = body_policy
        self.metrics = metrics
        self.connections = connections
        self.active = 0
        self._idle: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        """
        A connection, counted in `connections`; one over a cap gets
        `Refused` instead.
        """
        limits = self.connections
        if limits is not None:
            refusal = limits.admit(addr)
            if refusal is not None:
                return Refused(refusal)
        channel: Protocol | None = super().buildProtocol(addr)
        if isinstance(channel, ProxyChannel):
            channel.limits, channel.peer = limits, addr
        elif limits is not None:
            limits.release(addr)
        return channel

    def getContentFile(self, length: int | None) -> IO[bytes]:
        """
        Where twisted.web buffers a request body that `SpoolingRequest`
        passes on: in memory when small and announced, else a temporary
        file (twisted.web's own rule).  twisted.web looks this hook up on
        every request and raises and catches an AttributeError without it.
        """
        if length is not None and length < 100_000:
            return BytesIO()
        return tempfile.TemporaryFile()

    def started(self, request: ProxyRequest) -> None:
        transport: Any = request.channel.transport
        if getattr(transport, "SEND_LIMIT", SEND_LIMIT) < SEND_LIMIT:
            # Once per connection (see proxypypi.internals).
            raise_send_limit(transport, SEND_LIMIT)
            cache_host(transport)
        self.active += 1
        began = self.reactor.seconds()
        request.notifyFinish().addBoth(
            lambda result: self._ended(request, began, not isinstance(result, Failure))
        )

    def log(self, request: http.Request) -> None:
        """
        Replaced by the structured access event (see `_ended`), which also
        covers responses cut short.
        """

    def _ended(self, request: ProxyRequest, began: float, completed: bool) -> None:
        duration = self.reactor.seconds() - began
        log_access(request, request.facts, duration, completed)
        if self.metrics is not None:
            self.metrics.request_done(request, request.facts, duration, completed)
        self.active -= 1
        if not self.active:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def drained(self, grace: float, clock: Any) -> Deferred[None]:
        """
        Fires once no response is running, or after ``grace`` seconds.
        """
        d: Deferred[None] = Deferred()
        if not self.active:
            d.callback(None)
            return d
        self._idle.append(d)
        d.addTimeout(grace, clock)
        d.addErrback(
            lambda _: log.warn("stopped with {count} responses still running", count=self.active)
        )
        return d

# -*- test-case-name: tests.test_metrics -*-
"""
What the service counts, for ``/metrics`` (`proxypypi.web.metrics`) and
the status page (`proxypypi.web.status`).

Two kinds of figures, both read when a scrape or the status page asks:

- Counters that exist nowhere else are kept here as plain integers, updated
  in one place each: `Metrics.request_done` once per finished request
  (route, status, duration, bytes sent, the cache note the resources left on
  the request, uploads), and `MeteredAgent` once per upstream request
  (requests, errors, time to headers, bytes received).  No locks and no
  label lookups on the hot path: a request costs a few dictionary updates.
- Everything that is already state somewhere (upstream health, downloads
  in flight, storage size, evictions, private projects) is read where it
  lives when Prometheus asks, never copied into gauges as it changes.

Label sets are bounded: routes and cache results are fixed words, status
codes are the few the service answers with, and upstreams are the
configured ones.  No project or file name is ever a label.

The storage size comes from the cache's usage tracker
(`proxypypi.cache.usage`), which keeps it current without a scrape ever
walking the disk.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.components import proxyForInterface
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from proxypypi.ops.facts import RequestFacts

__all__ = [
    "ROUTES",
    "Histogram",
    "MeteredAgent",
    "Metrics",
    "route_of",
]

#: Every route a request is counted under.
ROUTES = (
    "simple_index",
    "project_page",
    "file",
    "metadata",
    "upload",
    "api",
    "health",
    "metrics",
    "status",
    "other",
)

#: The cache results each kind of response can have.  The project list
#: is a kind of its own: counted as a file, its hits would swell the file
#: hit ratio and the bytes saved.
RESULTS_BY_KIND = {
    "page": ("hit", "stale", "miss", "private"),
    "file": ("hit", "join", "miss", "private"),
    "list": ("hit", "stale", "miss"),
}

#: The kinds the hit ratio and the bytes saved are about: what installers
#: fetch by the thousand.
CACHE_KINDS = ("page", "file")

#: The kind of cache response of each route that notes one.
_KIND_OF_ROUTE = {"project_page": "page", "simple_index": "list"}

#: Results that cost no upstream transfer of their own.
SAVED_RESULTS = ("hit", "stale", "join")

#: Response time buckets (seconds): index pages answer in a millisecond
#: or two, large files stream for minutes.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

#: Upstream time-to-headers buckets (seconds); the first-byte timeout
#: defaults to 10 s.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_CLEAN_ENDS = (ResponseDone, PotentialDataLoss)


def route_of(method: bytes, path: bytes) -> str:
    """
    The route a request is counted under (one of `ROUTES`), from its
    method and raw path: a handful of byte comparisons.
    """
    if path.startswith(b"/files/"):
        return "metadata" if path.endswith(b".metadata") else "file"
    if path.startswith(b"/simple/"):
        return "simple_index" if path == b"/simple/" else "project_page"
    if path == b"/":
        return "upload" if method == b"POST" else "status"
    if path in (b"/legacy", b"/legacy/"):
        return "upload"
    if path.startswith(b"/api/"):
        return "api"
    if path == b"/health":
        return "health"
    if path == b"/metrics":
        return "metrics"
    if path == b"/simple":
        return "simple_index"
    return "other"


@attrs.define(eq=False)
class Histogram:
    """
    A Prometheus histogram kept as plain counts (one bucket incremented
    per observation; made cumulative only when scraped).
    """

    bounds: tuple[float, ...]
    counts: list[int] = attrs.field(init=False)
    total: float = 0.0
    count: int = 0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """
        Cumulative ``(le, count)`` pairs, ``+Inf`` last.
        """
        out = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), float(running)))
        out.append(("+Inf", float(self.count)))
        return out


@attrs.define(eq=False)
class UpstreamMeter:
    """
    Traffic to one upstream member, as its agent saw it.

    :ivar requests: requests sent (a redirect chain counts once; health
        probes count).
    :ivar errors: requests that got no response, a 5xx, or a body that
        broke off.
    :ivar received: body bytes received (as sent on the wire: a compressed
        page counts compressed).
    :ivar latency: seconds from request to response headers.
    """

    url: str
    requests: int = 0
    errors: int = 0
    received: int = 0
    latency: Histogram = attrs.field(factory=lambda: Histogram(UPSTREAM_BUCKETS))


class _CountingBody(Protocol):
    """
    Passes a response body on to the real receiver, counting its bytes and
    whether it broke off.
    """

    def __init__(self, inner: Any, meter: UpstreamMeter, counted: bool) -> None:
        self.inner = inner
        self.meter = meter
        self.counted = counted

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.meter.received += len(data)
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.counted and reason is not None and not reason.check(*_CLEAN_ENDS):
            self.meter.errors += 1
        self.inner.connectionLost(reason)


class _CountingResponse(proxyForInterface(IResponse)):  # type: ignore[misc]
    """
    A response whose body is counted on its way to the receiver.
    """

    def __init__(self, original: IResponse, meter: UpstreamMeter, counted: bool) -> None:
        super().__init__(original)
        self._meter = meter
        self._counted = counted

    def deliverBody(self, protocol: Any) -> None:
        self.original.deliverBody(_CountingBody(protocol, self._meter, self._counted))


@implementer(IAgent)
@attrs.define(eq=False)
class MeteredAgent:
    """
    An upstream member's agent, counting into its `UpstreamMeter`.  It
    wraps the whole agent stack of the member (redirects included), so
    pages, files, the project list and probes are all counted, with no
    counting code in any of them.
    """

    agent: IAgent
    meter: UpstreamMeter
    clock: IReactorTime

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        meter = self.meter
        meter.requests += 1
        started = self.clock.seconds()
        d: Deferred[IResponse] = self.agent.request(method, uri, headers, bodyProducer)

        def answered(response: IResponse) -> IResponse:
            meter.latency.observe(self.clock.seconds() - started)
            failed = response.code >= 500
            if failed:
                meter.errors += 1
            counted: IResponse = _CountingResponse(response, meter, failed)
            return counted

        def failed(failure: Failure) -> Failure:
            # Refused, reset, TLS failure, or cancelled by a timeout.
            meter.errors += 1
            return failure

        d.addCallbacks(answered, failed)
        return d


@attrs.define(eq=False)
class Metrics:
    """
    The counters of one service that exist nowhere else.

    :ivar upstreams: one meter per configured upstream member, by URL.
    """

    requests: dict[tuple[str, int], int] = attrs.field(factory=dict)
    aborted: dict[str, int] = attrs.field(factory=dict)
    sent: dict[str, int] = attrs.field(factory=dict)
    durations: dict[str, Histogram] = attrs.field(factory=dict)
    cache: dict[tuple[str, str], int] = attrs.field(factory=dict)
    cache_bytes: dict[tuple[str, str], int] = attrs.field(factory=dict)
    uploads: dict[str, int] = attrs.field(factory=lambda: {"accepted": 0, "rejected": 0})
    upstreams: dict[str, UpstreamMeter] = attrs.field(factory=dict)

    def meter(self, url: str) -> UpstreamMeter:
        """
        The meter of the upstream member at ``url`` (created on first use:
        only configured members are ever metered).
        """
        meter = self.upstreams.get(url)
        if meter is None:
            meter = self.upstreams[url] = UpstreamMeter(url)
        return meter

    def metered(
        self, agent_for: Callable[[Any], IAgent], clock: IReactorTime
    ) -> Callable[[Any], IAgent]:
        """
        Wrap the agent factory of the upstream pool so that every member's
        agent counts into its meter.
        """

        def metered_agent_for(upstream: Any) -> IAgent:
            return MeteredAgent(agent_for(upstream), self.meter(upstream.address), clock)

        return metered_agent_for

    def request_done(
        self, request: Any, facts: RequestFacts, duration: float, completed: bool
    ) -> None:
        """
        Count one finished (or aborted) request: called by the site once
        per request, with what the response noted and its duration in
        seconds.
        """
        route = route_of(request.method, request.path)
        code = request.code
        key = (route, code)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        sent = request.sentLength
        self.sent[route] = self.sent.get(route, 0) + sent
        histogram = self.durations.get(route)
        if histogram is None:
            histogram = self.durations[route] = Histogram(DURATION_BUCKETS)
        histogram.observe(duration)
        if not completed:
            # Cut short: the client left (or was cut off) before the end.
            self.aborted[route] = self.aborted.get(route, 0) + 1
        cache = facts.cache
        if cache is not None:
            ck = (_KIND_OF_ROUTE.get(route, "file"), cache)
            self.cache[ck] = self.cache.get(ck, 0) + 1
            self.cache_bytes[ck] = self.cache_bytes.get(ck, 0) + sent
        if route == "upload" and request.method == b"POST":
            self.uploads["accepted" if 200 <= code < 300 else "rejected"] += 1

    # Derived figures, shared by the status page and its tests.

    def cache_count(self, kind: str, *results: str) -> int:
        return sum(self.cache.get((kind, r), 0) for r in results)

    def cache_sent(self, *results: str) -> int:
        """
        Body bytes of page and file responses (`CACHE_KINDS`) with these
        results.
        """
        return sum(
            n for (k, r), n in self.cache_bytes.items() if r in results and k in CACHE_KINDS
        )

    def hit_ratio(self, kind: str | None = None) -> float | None:
        """
        The share of cacheable responses (pages and files, not private)
        that needed no upstream transfer of their own (``hit``, ``stale``,
        ``join``); ``None`` before the first.
        """
        kinds = CACHE_KINDS if kind is None else (kind,)
        hits = sum(self.cache_count(k, *SAVED_RESULTS) for k in kinds)
        total = hits + sum(self.cache_count(k, "miss") for k in kinds)
        return None if total == 0 else hits / total

    def received(self) -> int:
        """
        Body bytes received from every upstream.
        """
        return sum(m.received for m in self.upstreams.values())

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

The storage size comes from the eviction's running total when
``--max-cache-size`` is set; otherwise from `StorageSize`, a scan of
``DATA/files`` in the disk thread pool at start-up and every
`STORAGE_SCAN_INTERVAL` seconds, kept current in between by the commits
of downloads.  A scrape never walks the disk.
"""

from __future__ import annotations

import shutil
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.components import proxyForInterface
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from proxypypi.cache.eviction import Evictor
from proxypypi.cache.storage import Storage, stored_files
from proxypypi.ops.logs import CACHE_NOTE

if TYPE_CHECKING:
    from proxypypi.cache.downloads import FileKey
    from proxypypi.proxy import Proxy

__all__ = [
    "CACHE_RESULTS",
    "ROUTES",
    "Histogram",
    "MeteredAgent",
    "Metrics",
    "StorageSize",
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

#: What a resource may note about the cache (`proxypypi.ops.logs.note`):
#: ``hit`` served from what is stored and fresh; ``stale`` a page served
#: while it is refreshed; ``miss`` fetched from an upstream for this
#: request; ``join`` attached to a download another request started;
#: ``private`` an uploaded project (no upstream involved).
CACHE_RESULTS = ("hit", "stale", "miss", "join", "private")

#: The cache results each kind of response can have.
RESULTS_BY_KIND = {
    "page": ("hit", "stale", "miss", "private"),
    "file": ("hit", "join", "miss", "private"),
}

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

#: Seconds between scans of ``DATA/files`` for its size, when eviction
#: (which keeps a running total) is off.
STORAGE_SCAN_INTERVAL = 600.0

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
    :ivar storage_size: the size of ``DATA/files`` when eviction is off.
    """

    requests: dict[tuple[str, int], int] = attrs.field(factory=dict)
    aborted: dict[str, int] = attrs.field(factory=dict)
    sent: dict[str, int] = attrs.field(factory=dict)
    durations: dict[str, Histogram] = attrs.field(factory=dict)
    cache: dict[tuple[str, str], int] = attrs.field(factory=dict)
    cache_bytes: dict[tuple[str, str], int] = attrs.field(factory=dict)
    uploads: dict[str, int] = attrs.field(factory=lambda: {"accepted": 0, "rejected": 0})
    upstreams: dict[str, UpstreamMeter] = attrs.field(factory=dict)
    storage_size: StorageSize | None = None

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
            return MeteredAgent(agent_for(upstream), self.meter(upstream.url), clock)

        return metered_agent_for

    def request_done(self, request: Any, duration: float, completed: bool) -> None:
        """
        Count one finished (or aborted) request: called by the site once
        per request, with its duration in seconds.
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
            self.aborted[route] = self.aborted.get(route, 0) + 1
        cache = getattr(request, CACHE_NOTE, None)
        if cache is not None:
            ck = ("page" if route == "project_page" else "file", cache)
            self.cache[ck] = self.cache.get(ck, 0) + 1
            self.cache_bytes[ck] = self.cache_bytes.get(ck, 0) + sent
        if route == "upload" and request.method == b"POST":
            self.uploads["accepted" if 200 <= code < 300 else "rejected"] += 1

    # Derived figures, shared by the status page and its tests.

    def cache_count(self, kind: str, *results: str) -> int:
        return sum(self.cache.get((kind, r), 0) for r in results)

    def cache_sent(self, *results: str) -> int:
        return sum(n for (_, r), n in self.cache_bytes.items() if r in results)

    def hit_ratio(self, kind: str | None = None) -> float | None:
        """
        The share of cacheable responses (pages and files, not private)
        that needed no upstream transfer of their own (``hit``, ``stale``,
        ``join``); ``None`` before the first.
        """
        kinds = ("page", "file") if kind is None else (kind,)
        hits = sum(self.cache_count(k, *SAVED_RESULTS) for k in kinds)
        total = hits + sum(self.cache_count(k, "miss") for k in kinds)
        return None if total == 0 else hits / total

    def received(self) -> int:
        """
        Body bytes received from every upstream.
        """
        return sum(m.received for m in self.upstreams.values())


def _scan_size(files_dir: str) -> tuple[int, int]:
    """
    Count and total size of the files the service may have stored under
    ``files_dir``, without keeping a record per file.  Blocking.
    """
    count = total = 0
    for _project, _name, st in stored_files(files_dir):
        count += 1
        total += st.st_size
    return count, total


@attrs.define(eq=False)
class StorageSize:
    """
    The size of ``DATA/files`` without eviction's running total: scanned
    off the reactor thread now and then, and kept current in between by
    the commits of downloads (`stored`).  A file replaced in place, or
    removed by another hand, is set right by the next scan.

    :ivar files: number of files, ``None`` before the first scan.
    :ivar bytes: their total size, ``None`` before the first scan.
    """

    storage: Storage
    clock: IReactorTime
    files: int | None = None
    bytes: int | None = None
    scanned_at: float | None = None
    log = Logger()
    _scanning: bool = False

    def stored(self, key: FileKey, size: int) -> None:
        if self.files is not None and self.bytes is not None:
            self.files += 1
            self.bytes += size

    def scan(self) -> Deferred[None]:
        """
        Measure ``DATA/files`` in the disk thread pool.  Never fails (a
        ``TimerService`` would stop for good); errors are logged.
        """
        if self._scanning:
            return succeed(None)
        self._scanning = True
        d: Deferred[tuple[int, int]] = self.storage.run(_scan_size, self.storage.files_dir)

        def done(result: tuple[int, int]) -> None:
            self.files, self.bytes = result
            self.scanned_at = self.clock.seconds()

        def failed(f: Failure) -> None:
            self.log.failure("cannot measure {path}", f, path=self.storage.files_dir)

        def finished(_: object) -> None:
            self._scanning = False

        scanned: Deferred[None] = d.addCallbacks(done, failed)
        scanned.addBoth(finished)
        return scanned


def measure_storage(proxy: Proxy, interval: float = STORAGE_SCAN_INTERVAL) -> TimerService:
    """
    Keep track of the size of ``proxy``'s ``DATA/files`` while eviction is
    off: the returned service (to add to the service tree) scans it every
    ``interval`` seconds, the first time at start-up.
    """
    size = StorageSize(proxy.storage, proxy.clock)
    proxy.metrics.storage_size = size
    proxy.downloads.on_stored = size.stored
    service = TimerService(interval, size.scan)
    service.clock = proxy.clock
    return service


@attrs.frozen
class StorageFigures:
    """
    What the storage holds, as far as known without walking the disk.

    :ivar files: upstream files in ``DATA/files`` (``None``: not known yet).
    :ivar bytes: their size.
    :ivar private_files: uploaded files.
    :ivar private_bytes: their size.
    :ivar limit: ``--max-cache-size``, if set.
    :ivar evicted_files: files evicted since start.
    :ivar evicted_bytes: bytes evicted since start.
    :ivar disk_total: size of the file system holding the storage.
    :ivar disk_free: bytes free on it (for this user).
    """

    files: int | None
    bytes: int | None
    private_files: int
    private_bytes: int
    limit: int | None
    evicted_files: int
    evicted_bytes: int
    disk_total: int | None
    disk_free: int | None


def storage_figures(proxy: Proxy) -> StorageFigures:
    """
    The storage figures of ``proxy``, from running totals and one
    ``statvfs``: cheap at any number of stored files.
    """
    files: int | None = None
    size: int | None = None
    evicted_files = evicted_bytes = 0
    usage = proxy.usage
    if isinstance(usage, Evictor):
        if usage.loaded:
            files, size = usage.count, usage.total
        evicted_files, evicted_bytes = usage.evicted_files, usage.evicted_bytes
    elif proxy.metrics.storage_size is not None:
        files, size = proxy.metrics.storage_size.files, proxy.metrics.storage_size.bytes
    private_files = private_bytes = 0
    for name in proxy.private.names():
        project = proxy.private.project(name)
        if project is not None:
            private_files += len(project.files)
            private_bytes += sum(f.size for f in project.files)
    disk_total: int | None = None
    disk_free: int | None = None
    try:
        disk = shutil.disk_usage(proxy.storage.root)
        disk_total, disk_free = disk.total, disk.free
    except OSError:
        pass
    return StorageFigures(
        files,
        size,
        private_files,
        private_bytes,
        proxy.config.max_cache_size,
        evicted_files,
        evicted_bytes,
        disk_total,
        disk_free,
    )

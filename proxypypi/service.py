# -*- test-case-name: tests.test_upload,tests.test_tls,tests.test_failover -*-
"""
Assemble the running service from a `Config`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from io import BytesIO
from typing import IO, Any

import attrs
from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web import http
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ProxyAgent,
    RedirectAgent,
    _HTTP11ClientFactory,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IPolicyForHTTPS, IResponse
from twisted.web.server import Request, Site
from zope.interface import implementer

from proxypypi import __version__
from proxypypi.cache import eviction
from proxypypi.cache.downloads import Manager
from proxypypi.cache.pages import PageCache
from proxypypi.cache.projectlist import ProjectList
from proxypypi.cache.storage import Runner, Storage
from proxypypi.config import (
    Config,
    ConfigError,
    UpstreamConfig,
    display_url,
    environment_proxy,
    proxy_address,
)
from proxypypi.ops.logs import log_access
from proxypypi.ops.metrics import Metrics, measure_storage
from proxypypi.private.auth import Authenticator
from proxypypi.private.store import PrivateStore
from proxypypi.proxy import Proxy
from proxypypi.upstream.pool import Pool
from proxypypi.upstream.tunnel import TunnellingEndpointFactory, proxy_authorization
from proxypypi.web.body import BodyPolicy, SpoolingRequest
from proxypypi.web.root import RootResource
from proxypypi.web.upload import body_policy

log = Logger()


@attrs.define
class DiskThreads(Service):
    """
    A dedicated thread pool for fsync and other slow disk calls, so they
    never starve the reactor's own pool (which resolves host names).
    """

    reactor: Any
    pool: ThreadPool = attrs.field(factory=lambda: ThreadPool(0, 4, "proxypypi-disk"))

    def run(self, f: Any, *args: Any) -> Deferred[Any]:
        return threads.deferToThreadPool(self.reactor, self.pool, f, *args)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return threads.deferToThread(self.pool.stop)


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """
    The upstream connection pool, without a "Starting factory" and a
    "Stopping factory" log line for every connection it opens.
    """

    _factory = _QuietClientFactory


@attrs.define
class UpstreamConnections(Service):
    """
    The HTTP connection pool shared by every upstream request; closed on stop.
    """

    pool: HTTPConnectionPool

    def stopService(self) -> Deferred[None]:
        super().stopService()
        d: Deferred[None] = self.pool.closeCachedConnections()
        return d


@attrs.define
class HealthProbes(Service):
    """
    Probes of upstream members: one of each at start, then of the members
    out of rotation while the service runs; cancelled (timers and requests
    in flight) when it stops.
    """

    pool: Pool

    def startService(self) -> None:
        super().startService()
        self.pool.start_probing()
        self.pool.check_all()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop_probing()


@attrs.define
class DownloadsInFlight(Service):
    """
    Cancels the downloads still running when the service stops.
    """

    downloads: Manager

    def stopService(self) -> None:
        super().stopService()
        self.downloads.cancel_all()


class OrderedServices(MultiService):
    """
    Services stopped one after the other, last started first: the web
    servers finish their responses while the disk threads and upstream
    connections those responses need are still there.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d: Deferred[None] = Deferred.fromCoroutine(self._stop_in_order())
        return d

    async def _stop_in_order(self) -> None:
        for service in reversed(list(self)):
            try:
                stopped = service.stopService()
                if stopped is not None:
                    await stopped
            except Exception:
                log.failure("error while stopping {service}", service=service)


#: Bytes handed to the socket per write call (Twisted's default is 128 KiB).
SEND_LIMIT = 1024 * 1024

#: Seconds between probe writes to the storage (for /health and recovery).
STORAGE_PROBE_INTERVAL = 10.0


def _probe_storage(storage: Storage) -> Deferred[None]:
    # A LoopingCall stops for good on a failure: log it and go on.
    return storage.check_writable().addErrback(lambda f: log.failure("storage probe failed", f))


#: Seconds a stopping service lets running responses finish.
SHUTDOWN_GRACE = 10.0


class _TrackedRequest(SpoolingRequest):
    """
    A request that tells its site when it starts and ends, so a stopping
    service can wait for running responses.  Its body is bounded, and
    uploads stream to disk (`SpoolingRequest`).
    """

    def process(self) -> None:
        site = getattr(self.channel, "site", None)
        if isinstance(site, ProxySite):
            site.started(self)
        super().process()


class ProxySite(Site):
    """
    The web site, knowing which responses are still running.
    """

    requestFactory = _TrackedRequest
    displayTracebacks = False
    #: Limits and spooling of request bodies (see `proxypypi.web.body`).
    body_policy: BodyPolicy | None = None
    #: Where finished requests are counted (``/metrics``, the status page).
    metrics: Metrics | None = None

    def __init__(self, resource: Any, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.active = 0
        self._idle: list[Deferred[None]] = []

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

    def started(self, request: Request) -> None:
        transport: Any = request.channel.transport
        if getattr(transport, "SEND_LIMIT", SEND_LIMIT) < SEND_LIMIT:
            # Once per connection.  Twisted hands the socket at most 128 KiB
            # per write; a large index page would take two trips through the
            # reactor.  And every request asks the socket for its own
            # address (a system call) though it never changes.
            transport.SEND_LIMIT = SEND_LIMIT
            if hasattr(transport, "getHost"):
                host = transport.getHost()
                transport.getHost = lambda: host
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

    def _ended(self, request: Request, began: float, completed: bool) -> None:
        duration = self.reactor.seconds() - began
        log_access(request, duration, completed)
        if self.metrics is not None:
            self.metrics.request_done(request, duration, completed)
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


@attrs.define
class WebServer(Service):
    """
    Listen on one endpoint; logs the address actually bound (``tcp:0``
    picks a free port, which tests and operators need to know).
    """

    endpoint: IStreamServerEndpoint
    site: ProxySite
    reactor: Any
    port: IListeningPort | None = None
    _waiting: list[Deferred[IListeningPort]] = attrs.field(factory=list)

    def startService(self) -> None:
        super().startService()
        d = self.endpoint.listen(self.site)
        d.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        log.info(
            "listening on {host}:{port}",
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)

    def _failed(self, failure: Failure) -> None:
        log.failure("cannot listen; check --listen", failure)
        # Services start before the reactor runs: stopping it right away
        # would raise, and leave a service that listens nowhere.
        self.reactor.callWhenRunning(self.reactor.stop)

    def when_listening(self) -> Deferred[IListeningPort]:
        """
        Fires with the listening port once bound.
        """
        d: Deferred[IListeningPort] = Deferred()
        if self.port is not None:
            d.callback(self.port)
        else:
            self._waiting.append(d)
        return d

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting connections, then let running responses finish for
        a bounded time.
        """
        super().stopService()
        port, self.port = self.port, None
        d: Deferred[Any] = Deferred.fromCoroutine(self._stop(port))
        return d

    async def _stop(self, port: IListeningPort | None) -> None:
        if port is not None:
            stopped = port.stopListening()
            if stopped is not None:
                await stopped
        await self.site.drained(SHUTDOWN_GRACE, self.reactor)


def build_proxy(
    config: Config,
    reactor: Any,
    storage: Storage,
    agent_for: Callable[[UpstreamConfig], IAgent],
    *,
    auth_run: Runner | None = None,
) -> Proxy:
    """
    The proxy's collaborators, wired together.

    :param agent_for: the HTTP agent to reach one upstream with.
    :param auth_run: runs password checks (bcrypt) off the reactor thread;
        the storage's runner when not given.
    :raises proxypypi.private.auth.AuthFileError: when the auth file is unreadable.
    """
    metrics = Metrics()
    pool = Pool.from_config(
        config.upstreams,
        metrics.metered(agent_for, reactor),
        reactor,
        idle_timeout=config.download_idle_timeout,
        max_page_bytes=config.max_page_bytes,
        parse_in=storage.run,
    )
    return Proxy(
        config=config,
        clock=reactor,
        storage=storage,
        pool=pool,
        pages=PageCache(
            pool,
            storage,
            reactor,
            ttl=config.page_ttl,
            negative_ttl=config.negative_ttl,
            forget_removed=config.forget_removed,
            offline=config.offline,
            memory_budget=config.page_memory,
        ),
        downloads=Manager(storage, reactor, config.download_idle_timeout),
        project_list=ProjectList(pool, storage, reactor, offline=config.offline),
        started_at=reactor.seconds(),
        private=PrivateStore.open(
            os.path.join(storage.root, "private"),
            storage.tmp_dir,
            storage.run,
            reactor,
            merge_upstream=config.merge_upstream,
            allow_overwrite=config.allow_overwrite,
        ),
        auth=None
        if config.auth_file is None
        else Authenticator.from_htpasswd(config.auth_file, auth_run or storage.run, reactor),
        metrics=metrics,
    )


@implementer(IAgent)
@attrs.define
class _ProxiedAgent:
    """
    Requests through an HTTP proxy, chosen per request by scheme: https in a
    ``CONNECT`` tunnel (TLS end to end, verified by us), plain http as an
    ordinary proxied request.  Per request rather than per upstream, because
    a redirect may cross from one scheme to the other.

    :ivar authorization: ``Proxy-Authorization`` for plain-http requests
        (the tunnel sends its own, on ``CONNECT``, never to the upstream).
    """

    tunnelled: IAgent
    plain: IAgent
    authorization: bytes | None = None

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        if uri.startswith(b"https:"):
            return self.tunnelled.request(method, uri, headers, bodyProducer)
        if self.authorization is not None:
            headers = headers.copy() if headers is not None else Headers()
            headers.setRawHeaders(b"proxy-authorization", [self.authorization])
        return self.plain.request(method, uri, headers, bodyProducer)


def upstream_agents(
    reactor: Any,
    connections: HTTPConnectionPool,
    proxy: str | None = None,
    tls_policy: IPolicyForHTTPS | None = None,
    *,
    proxy_from_environment: bool = False,
) -> Callable[[UpstreamConfig], IAgent]:
    """
    Real agents: pooled connections, TLS verified against the system's
    trust roots (with service_identity), redirects followed (at most 5; a
    loop is a failure of the upstream).

    :param proxy: an HTTP proxy URL to send every request through: https in
        a ``CONNECT`` tunnel (`proxypypi.upstream.tunnel`), plain http as proxied
        requests; credentials in the URL go to the proxy as Basic
        ``Proxy-Authorization``.
    :param tls_policy: how upstream certificates are checked; the default
        trusts the system's roots, tests pass their own.
    :param proxy_from_environment: without ``proxy``, reach each upstream
        through the proxy the environment names for it, if any
        (`environment_proxy`).
    :raises ConfigError: (from the returned factory) when the environment
        names a proxy that cannot be used.
    """
    tls = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()

    def through(proxy_url: str, upstream: UpstreamConfig) -> IAgent:
        authorization = proxy_authorization(proxy_url)
        host, port = proxy_address(proxy_url)
        endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=upstream.connect_timeout)
        tunnels = TunnellingEndpointFactory(
            reactor, endpoint, tls, authorization, timeout=upstream.connect_timeout
        )
        return _ProxiedAgent(
            Agent.usingEndpointFactory(reactor, tunnels, pool=connections),
            ProxyAgent(endpoint, reactor, pool=connections),
            authorization,
        )

    def agent_for(upstream: UpstreamConfig) -> IAgent:
        chosen = proxy
        if chosen is None and proxy_from_environment:
            chosen = environment_proxy(upstream.url)
            if chosen is not None:
                log.info(
                    "reaching {upstream} through {proxy}, the proxy the environment names",
                    upstream=display_url(upstream.url),
                    proxy=display_url(chosen),
                )
        agent: IAgent
        if chosen is not None:
            agent = through(chosen, upstream)
        else:
            agent = Agent(
                reactor,
                contextFactory=tls,
                connectTimeout=upstream.connect_timeout,
                pool=connections,
            )
        return RedirectAgent(agent, redirectLimit=5)

    return agent_for


def _size(value: int | None) -> str:
    if value is None:
        return "unbounded"
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= factor:
            return f"{value / factor:.4g} {unit}"
    return f"{value} bytes"


def log_configuration(config: Config) -> None:
    """
    Log the effective configuration, one event per line (so that JSON log
    lines keep flat keys): the upstreams as understood, storage, limits,
    switches and listen endpoints.  The first line keeps the one-line
    summary of the upstreams.
    """
    log.info(
        "proxypypi {version}: upstreams {upstreams}; effective configuration follows",
        version=__version__,
        upstreams=config.describe(),
    )
    for rank, group in enumerate(config.upstreams, 1):
        for u in group:
            idle = u.idle_timeout if u.idle_timeout is not None else config.download_idle_timeout
            log.info(
                "  upstream group {group}: {url} weight {weight:g}; timeouts: connect "
                "{connect_timeout:g}s, first byte {first_byte_timeout:g}s, idle {idle_timeout:g}s",
                group=rank,
                url=display_url(u.url),
                weight=u.weight,
                connect_timeout=u.connect_timeout,
                first_byte_timeout=u.first_byte_timeout,
                idle_timeout=idle,
            )
    path = os.path.abspath(config.storage)
    log.info("  storage: {storage} ({path})", storage=config.storage, path=path)
    log.info(
        "  limits: page TTL {page_ttl:g}s, negative TTL {negative_ttl:g}s, max cache size "
        "{max_cache_size_text}, max upload size {max_upload_size_text}, max page size "
        "{max_page_bytes_text}, page memory {page_memory_text}",
        page_ttl=config.page_ttl,
        negative_ttl=config.negative_ttl,
        max_cache_size=config.max_cache_size,
        max_cache_size_text=_size(config.max_cache_size),
        max_upload_size=config.max_upload_size,
        max_upload_size_text=_size(config.max_upload_size),
        max_page_bytes=config.max_page_bytes,
        max_page_bytes_text=_size(config.max_page_bytes),
        page_memory=config.page_memory,
        page_memory_text=_size(config.page_memory),
    )
    log.info(
        "  offline: {offline}; uploads: {uploads}; credentials for reads: {auth_read}; "
        "trusted proxies: {trusted_proxies_text}; upstream proxy: {upstream_proxy}",
        offline="yes" if config.offline else "no",
        uploads="off" if config.auth_file is None else f"on (users in {config.auth_file})",
        auth_read="required" if config.auth_read else "not required",
        trusted_proxies=list(config.trusted_proxies),
        trusted_proxies_text=", ".join(config.trusted_proxies) or "none",
        upstream_proxy=(
            display_url(config.upstream_proxy)
            if config.upstream_proxy
            else "as the environment names (https_proxy, http_proxy, no_proxy), if any"
        ),
    )
    for endpoint in config.listen:
        log.info("  listen endpoint: {endpoint}", endpoint=endpoint)


def make_service(config: Config, reactor: Any) -> IService:
    """
    The whole service: disk threads, upstream connections, and one web
    server per listen endpoint.

    :raises proxypypi.cache.storage.StorageError: when the storage is unusable.
    :raises ConfigError: when a listen endpoint cannot be used.
    """
    # First, before anything else logs: the configuration as understood.
    log_configuration(config)
    top = OrderedServices()
    disk = DiskThreads(reactor)
    disk.setServiceParent(top)
    storage = Storage(config.storage, disk.run)
    storage.prepare()
    # bcrypt gets threads of its own: a flood of bad passwords must not
    # hold up fsyncs.
    passwords = DiskThreads(reactor, ThreadPool(0, 2, "proxypypi-auth"))
    passwords.setServiceParent(top)
    connections = QuietConnectionPool(reactor, persistent=True)
    connections.maxPersistentPerHost = 8
    UpstreamConnections(connections).setServiceParent(top)
    proxy = build_proxy(
        config,
        reactor,
        storage,
        upstream_agents(
            reactor,
            connections,
            config.upstream_proxy,
            proxy_from_environment=config.upstream_proxy is None,
        ),
        auth_run=passwords.run,
    )
    HealthProbes(proxy.pool).setServiceParent(top)
    # Stopped after the web servers drained: what is still downloading then
    # is abandoned (its partial file is removed at the next start-up).
    DownloadsInFlight(proxy.downloads).setServiceParent(top)
    storage_probe = TimerService(STORAGE_PROBE_INTERVAL, _probe_storage, storage)
    storage_probe.clock = reactor
    storage_probe.setServiceParent(top)
    if config.max_cache_size is not None:
        eviction.install(proxy, config.max_cache_size).setServiceParent(top)
    else:
        measure_storage(proxy).setServiceParent(top)
    site = ProxySite(RootResource(proxy))
    site.body_policy = body_policy(proxy)
    site.metrics = proxy.metrics
    for description in config.listen:
        WebServer(listen_endpoint(reactor, description), site, reactor).setServiceParent(top)
    return top


def listen_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    The server endpoint of one ``--listen`` value.  An ``ssl:`` endpoint
    reads its key and certificate here, so a missing or unreadable file
    is reported now, by name.

    :raises ConfigError: naming the value and what to check.
    """
    try:
        endpoint: IStreamServerEndpoint = endpoints.serverFromString(reactor, description)
    except Exception as e:
        reason = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else e
        raise ConfigError(
            f"cannot listen on {description!r} ({reason}); check the endpoint string "
            "(tcp:PORT:interface=ADDRESS, ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem, "
            "unix:PATH) and that the files it names exist and are readable by this user"
        ) from e
    return endpoint

# -*- test-case-name: tests.test_service -*-
"""
Assemble the running service from a L{Config}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web import http
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, RedirectAgent
from twisted.web.iweb import IAgent
from twisted.web.server import Request, Site

from . import __version__, eviction
from .config import Config, UpstreamConfig
from .downloads import Manager
from .index import PageCache
from .logs import log_access
from .projectlist import ProjectList
from .proxy import Proxy
from .storage import Storage
from .upstream import Pool
from .web.root import RootResource

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


#: Seconds a stopping service lets running responses finish.
SHUTDOWN_GRACE = 10.0


class _TrackedRequest(Request):
    """
    A request that tells its site when it starts and ends, so a stopping
    service can wait for running responses.
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

    def __init__(self, resource: Any, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.active: set[Request] = set()
        self._idle: list[Deferred[None]] = []

    def started(self, request: Request) -> None:
        self.active.add(request)
        began = self.reactor.seconds()
        request.notifyFinish().addBoth(
            lambda result: self._ended(request, began, not isinstance(result, Failure))
        )

    def log(self, request: http.Request) -> None:
        """
        Replaced by the structured access event (see L{_ended}), which also
        covers responses cut short.
        """

    def _ended(self, request: Request, began: float, completed: bool) -> None:
        log_access(request, self.reactor.seconds() - began, completed)
        self.active.discard(request)
        if not self.active:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def drained(self, grace: float, clock: Any) -> Deferred[None]:
        """
        Fires once no response is running, or after C{grace} seconds.
        """
        d: Deferred[None] = Deferred()
        if not self.active:
            d.callback(None)
            return d
        self._idle.append(d)
        d.addTimeout(grace, clock)
        d.addErrback(
            lambda _: log.warn(
                "stopped with {count} responses still running", count=len(self.active)
            )
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
        self.reactor.stop()

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
) -> Proxy:
    """
    The proxy's collaborators, wired together.

    :param agent_for: the HTTP agent to reach one upstream with.
    """
    pool = Pool.from_config(
        config.upstreams,
        agent_for,
        reactor,
        idle_timeout=config.download_idle_timeout,
        max_page_bytes=config.max_page_bytes,
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
        ),
        downloads=Manager(storage, reactor, config.download_idle_timeout),
        project_list=ProjectList(pool, storage, reactor, offline=config.offline),
        started_at=reactor.seconds(),
    )


def upstream_agents(
    reactor: Any, connections: HTTPConnectionPool
) -> Callable[[UpstreamConfig], IAgent]:
    """
    Real agents: pooled connections, TLS verified against the system's
    trust roots (with service_identity), redirects followed.
    """
    tls = BrowserLikePolicyForHTTPS()

    def agent_for(upstream: UpstreamConfig) -> IAgent:
        agent = Agent(
            reactor, contextFactory=tls, connectTimeout=upstream.connect_timeout, pool=connections
        )
        return RedirectAgent(agent, redirectLimit=5)

    return agent_for


def make_service(config: Config, reactor: Any) -> IService:
    """
    The whole service: disk threads, upstream connections, and one web
    server per listen endpoint.

    :raises proxypypi.storage.StorageError: when the storage is unusable.
    """
    top = OrderedServices()
    disk = DiskThreads(reactor)
    disk.setServiceParent(top)
    storage = Storage(config.storage, disk.run)
    storage.prepare()
    connections = HTTPConnectionPool(reactor, persistent=True)
    connections.maxPersistentPerHost = 8
    UpstreamConnections(connections).setServiceParent(top)
    proxy = build_proxy(config, reactor, storage, upstream_agents(reactor, connections))
    if config.max_cache_size is not None:
        eviction.install(proxy, config.max_cache_size).setServiceParent(top)
    site = ProxySite(RootResource(proxy))
    for description in config.listen:
        endpoint = endpoints.serverFromString(reactor, description)
        WebServer(endpoint, site, reactor).setServiceParent(top)
    log.info(
        "proxypypi {version}: upstreams {upstreams}; storage {storage}; listening on {listen}",
        version=__version__,
        upstreams=config.describe(),
        storage=config.storage,
        listen=", ".join(config.listen),
    )
    return top

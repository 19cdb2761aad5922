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
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, RedirectAgent
from twisted.web.iweb import IAgent
from twisted.web.server import Site

from . import __version__
from .config import Config, UpstreamConfig
from .downloads import Manager
from .index import PageCache
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


@attrs.define
class WebServer(Service):
    """
    Listen on one endpoint; logs the address actually bound (``tcp:0``
    picks a free port, which tests and operators need to know).
    """

    endpoint: IStreamServerEndpoint
    site: Site
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

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is None:
            return None
        port, self.port = self.port, None
        d: Deferred[None] = port.stopListening()  # type: ignore[assignment]
        return d


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
    top = MultiService()
    disk = DiskThreads(reactor)
    disk.setServiceParent(top)
    storage = Storage(config.storage, disk.run)
    storage.prepare()
    connections = HTTPConnectionPool(reactor, persistent=True)
    connections.maxPersistentPerHost = 8
    UpstreamConnections(connections).setServiceParent(top)
    proxy = build_proxy(config, reactor, storage, upstream_agents(reactor, connections))
    site = Site(RootResource(proxy))
    site.displayTracebacks = False
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

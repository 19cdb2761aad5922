# -*- test-case-name: tests.test_twistd,tests.test_tls,tests.test_upload -*-
"""
The services that make up a running proxy, and the order they stop in:
the web servers drain first, while the disk threads and upstream
connections their responses need are still there.
"""

from __future__ import annotations

import gc
from typing import Any

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import (
    HTTPConnectionPool,
)

from proxypypi.cache.downloads import Manager
from proxypypi.service.describe import announce_listening, cannot_listen
from proxypypi.upstream.pool import Pool
from proxypypi.web.site import ProxySite

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


class FrozenHeap(Service):
    """
    Moves every object alive at start-up (modules, the resource tree, the
    configuration) out of the garbage collector's sight: none of it is ever
    garbage, and a large page's parse allocates enough containers to set
    off full collections, each of which would otherwise walk it all (a
    third of the cost of storing an 8,000-file page, measured).
    """

    def startService(self) -> None:
        super().startService()
        gc.collect()
        gc.freeze()

    def stopService(self) -> None:
        super().stopService()
        gc.unfreeze()


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


#: Seconds a stopping service lets running responses finish.
SHUTDOWN_GRACE = 10.0



@attrs.define
class WebServer(Service):
    """
    Listen on one endpoint; logs the address actually bound (``tcp:0``
    picks a free port, which tests and operators need to know) and the
    URLs to give installers.

    :ivar description: the ``--listen`` value, to name in errors.
    :ivar announce: log the address and the URLs (a worker process does
        not: its supervisor bound the socket and said so once).
    """

    endpoint: IStreamServerEndpoint
    site: ProxySite
    reactor: Any
    description: str = "the listen endpoint"
    announce: bool = True
    port: IListeningPort | None = None
    _waiting: list[Deferred[IListeningPort]] = attrs.field(factory=list)
    _bound: bool = False

    def privilegedStartService(self) -> None:
        """
        Listen, before any service starts (and before twistd sheds root,
        for a port below 1024).  TCP, TLS and Unix endpoints bind at once:
        a failure then ends the process with one line and a non-zero
        status, before any thread has started (twistd would log a
        traceback, stop the reactor and exit with 0, which neither systemd
        nor CI notices).

        :raises SystemExit: when the endpoint cannot be bound.
        """
        super().privilegedStartService()
        self._bound = True
        at_once: list[Failure] = []
        errback = at_once.append
        d = self.endpoint.listen(self.site)
        d.addCallbacks(self._listening, lambda failure: errback(failure))
        if at_once:
            raise SystemExit(f"proxypypi: {self._cannot_listen(at_once[0])}")
        errback = self._failed

    def startService(self) -> None:
        super().startService()
        if not self._bound:
            self.privilegedStartService()

    def _cannot_listen(self, failure: Failure) -> str:
        return cannot_listen(self.description, failure.value)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        if self.announce:
            announce_listening(port.getHost(), self.description)
        else:
            log.info("accepting connections on {description}", description=self.description)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)

    def _failed(self, failure: Failure) -> None:
        log.critical("{reason}", reason=self._cannot_listen(failure))
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
        port, self.port, self._bound = self.port, None, False
        d: Deferred[Any] = Deferred.fromCoroutine(self._stop(port))
        return d

    async def _stop(self, port: IListeningPort | None) -> None:
        if port is not None:
            stopped = port.stopListening()
            if stopped is not None:
                await stopped
        await self.site.drained(SHUTDOWN_GRACE, self.reactor)



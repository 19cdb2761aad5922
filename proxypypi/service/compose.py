# -*- test-case-name: tests.test_upload,tests.test_tls,tests.test_failover -*-
"""
The composition root: the whole object graph of a running proxy, built once
from a `proxypypi.config.Config`.

Every collaborator is chosen and wired here (which usage tracker, who is
told of stored files, what the site needs); no module patches a finished
object afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import IService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.iweb import IAgent

from proxypypi.cache.downloads import Manager
from proxypypi.cache.eviction import Evictor
from proxypypi.cache.pages import PageCache
from proxypypi.cache.projectlist import ProjectList
from proxypypi.cache.storage import Runner, Storage
from proxypypi.cache.usage import IUsageTracker, SizeAccounting, UsageService
from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.config.policy import PolicyConfig
from proxypypi.config.urls import ConfigError
from proxypypi.internals import QuietConnectionPool
from proxypypi.ops.metrics import Metrics
from proxypypi.policy.state import Policy
from proxypypi.private.auth import Authenticator
from proxypypi.private.store import PrivateStore
from proxypypi.service.describe import log_configuration
from proxypypi.service.lifecycle import (
    DiskThreads,
    DownloadsInFlight,
    FrozenHeap,
    HealthProbes,
    OrderedServices,
    UpstreamConnections,
    WebServer,
)
from proxypypi.service.malloc import tune_malloc
from proxypypi.service.policywatch import PolicyWatch
from proxypypi.upstream.agents import upstream_agents
from proxypypi.upstream.pages import PageFetcher
from proxypypi.upstream.pool import Pool
from proxypypi.web.proxy import Proxy
from proxypypi.web.root import RootResource
from proxypypi.web.site import ProxySite
from proxypypi.web.upload import body_policy

log = Logger()


#: Seconds between probe writes to the storage (for /health and recovery).
STORAGE_PROBE_INTERVAL = 10.0


def _probe_storage(storage: Storage) -> Deferred[None]:
    # A LoopingCall stops for good on a failure: log it and go on.
    return storage.check_writable().addErrback(lambda f: log.failure("storage probe failed", f))



def build_proxy(
    config: Config,
    reactor: Any,
    storage: Storage,
    agent_for: Callable[[UpstreamConfig], IAgent],
    *,
    auth_run: Runner | None = None,
    page_run: Runner | None = None,
    reread: Callable[[], PolicyConfig] | None = None,
) -> Proxy:
    """
    The proxy's collaborators, wired together.

    :param agent_for: the HTTP agent to reach one upstream with.
    :param auth_run: runs password checks (bcrypt) off the reactor thread;
        the storage's runner when not given.
    :param page_run: runs the parsing and rendering of pages off the
        reactor thread; the storage's runner when not given.
    :param reread: the policy's settings read again (on ``SIGHUP``).
    :raises proxypypi.private.auth.AuthFileError: when the auth file is
        unreadable.
    :raises ConfigError: when a policy rules file is unreadable or bad.
    """
    metrics = Metrics()
    policy = Policy.start(config.policy, reactor, reread)
    pool = Pool.from_config(
        config.upstreams,
        metrics.metered(agent_for, reactor),
        reactor,
        idle_timeout=config.download_idle_timeout,
    )
    page_run = page_run or storage.run
    fetcher = PageFetcher(pool, max_page_bytes=config.max_page_bytes, parse_in=page_run)
    usage: IUsageTracker
    if config.max_cache_size is not None:
        usage = Evictor(storage, reactor, config.max_cache_size)
    else:
        usage = SizeAccounting(storage, reactor)
    return Proxy(
        config=config,
        clock=reactor,
        storage=storage,
        pool=pool,
        pages=PageCache(
            fetcher,
            storage,
            reactor,
            ttl=config.page_ttl,
            negative_ttl=config.negative_ttl,
            forget_removed=config.forget_removed,
            offline=config.offline,
            work=page_run,
            policy=policy,
        ),
        downloads=Manager(storage, reactor, usage, config.download_idle_timeout),
        project_list=ProjectList(pool, storage, reactor, offline=config.offline),
        usage=usage,
        private=PrivateStore.open(
            os.path.join(storage.root, "private"),
            storage.tmp_dir,
            storage.run,
            reactor,
            merge_upstream=config.merge_upstream,
            allow_overwrite=config.allow_overwrite,
            policy=policy,
        ),
        policy=policy,
        metrics=metrics,
        auth=None
        if config.auth_file is None
        else Authenticator.from_htpasswd(config.auth_file, auth_run or storage.run, reactor),
        started_at=reactor.seconds(),
    )


def build_site(proxy: Proxy) -> ProxySite:
    """
    The web site of ``proxy``: its resource tree, the treatment of request
    bodies (uploads spool into ``DATA/tmp/``, so committing them is a
    rename) and where finished requests are counted.
    """
    return ProxySite(
        RootResource(proxy),
        body_policy=body_policy(proxy),
        metrics=proxy.metrics,
        reactor=proxy.clock,
    )


def make_service(
    config: Config, reactor: Any, reread: Callable[[], PolicyConfig] | None = None
) -> IService:
    """
    The whole service: disk threads, upstream connections, the policy's
    watch, and one web server per listen endpoint.

    :param reread: the policy's settings read again, on ``SIGHUP``.

    :raises proxypypi.cache.storage.StorageError: when the storage is unusable.
    :raises ConfigError: when a listen endpoint cannot be used.
    """
    # First, before anything else logs: the configuration as understood.
    log_configuration(config)
    # Before any thread starts.
    tuned = tune_malloc()
    if tuned:
        log.info("memory allocator: {settings}", settings=", ".join(tuned))
    top = OrderedServices()
    disk = DiskThreads(reactor)
    disk.setServiceParent(top)
    storage = Storage(config.storage, disk.run)
    storage.prepare()
    # bcrypt gets threads of its own: a flood of bad passwords must not
    # hold up fsyncs.
    passwords = DiskThreads(reactor, ThreadPool(0, 2, "proxypypi-auth"))
    passwords.setServiceParent(top)
    # Pages get two threads of their own: parsing and rendering a large
    # page must not hold up fsyncs, and, with the GIL, more threads would
    # only hold more pages in memory at once, not finish them sooner.
    pages = DiskThreads(reactor, ThreadPool(0, 2, "proxypypi-pages"))
    pages.setServiceParent(top)
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
        page_run=pages.run,
        reread=reread,
    )
    HealthProbes(proxy.pool).setServiceParent(top)
    # Stopped after the web servers drained: what is still downloading then
    # is abandoned (its partial file is removed at the next start-up).
    DownloadsInFlight(proxy.downloads).setServiceParent(top)
    storage_probe = TimerService(STORAGE_PROBE_INTERVAL, _probe_storage, storage)
    storage_probe.clock = reactor
    storage_probe.setServiceParent(top)
    UsageService(proxy.usage, reactor).setServiceParent(top)
    PolicyWatch(proxy.policy, proxy.pages, proxy.private, reactor).setServiceParent(top)
    site = build_site(proxy)
    for description in config.listen:
        WebServer(listen_endpoint(reactor, description), site, reactor).setServiceParent(top)
    FrozenHeap().setServiceParent(top)
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

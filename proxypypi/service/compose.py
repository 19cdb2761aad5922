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
import resource
import shutil
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import attrs
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
from proxypypi.cache.extractor import MetadataExtractor
from proxypypi.cache.pages import PageCache
from proxypypi.cache.projectlist import ProjectList
from proxypypi.cache.storage import Runner, Storage
from proxypypi.cache.usage import IUsageTracker, SizeAccounting, UsageService
from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.config.policy import PolicyConfig
from proxypypi.config.urls import ConfigError
from proxypypi.internals import QuietConnectionPool
from proxypypi.ops.metrics import Metrics
from proxypypi.ops.shared import InFlight, SharedFigures
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
from proxypypi.service.sockets import AdoptedEndpoint, Inherited
from proxypypi.service.supervisor import RUN_DIR, Supervisor, read_shared_policy
from proxypypi.upstream.agents import upstream_agents
from proxypypi.upstream.pages import PageFetcher
from proxypypi.upstream.pool import Pool
from proxypypi.web.connections import ConnectionLimits, connection_cap
from proxypypi.web.proxy import Proxy
from proxypypi.web.root import RootResource
from proxypypi.web.site import ProxySite
from proxypypi.web.upload import body_policy

log = Logger()


#: Seconds between probe writes to the storage (for /health and recovery).
STORAGE_PROBE_INTERVAL = 10.0

#: Seconds between two publications of a worker's figures.
SHARE_INTERVAL = 1.0




def _probe_storage(storage: Storage) -> Deferred[None]:
    # A LoopingCall stops for good on a failure: log it and go on.
    return storage.check_writable().addErrback(lambda f: log.failure("storage probe failed", f))



@attrs.frozen
class Role:
    """
    This process's place in the service: worker ``index`` of ``count``
    (``0`` of ``1`` for a single process).  Worker 0 leads: it alone
    evicts files; every worker probes upstreams, ``count`` times as
    seldom.
    """

    index: int = 0
    count: int = 1

    @property
    def leads(self) -> bool:
        return self.index == 0


def worker_count(config: Config) -> int:
    """
    The worker processes to run: as configured, or one per CPU.
    """
    return config.workers if config.workers is not None else os.cpu_count() or 1


def build_proxy(
    config: Config,
    reactor: Any,
    storage: Storage,
    agent_for: Callable[[UpstreamConfig], IAgent],
    *,
    auth_run: Runner | None = None,
    page_run: Runner | None = None,
    role: Role = Role(),
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
        probe_spread=role.count,
    )
    page_run = page_run or storage.run
    fetcher = PageFetcher(pool, max_page_bytes=config.max_page_bytes, parse_in=page_run)
    usage: IUsageTracker
    if config.max_cache_size is not None and role.leads:
        usage = Evictor(storage, reactor, config.max_cache_size)
    else:
        usage = SizeAccounting(storage, reactor)
    pages = PageCache(
        fetcher,
        storage,
        reactor,
        ttl=config.page_ttl,
        negative_ttl=config.negative_ttl,
        forget_removed=config.forget_removed,
        offline=config.offline,
        work=page_run,
        policy=policy,
    )
    # Stored wheels offer their core metadata when the upstream has none.
    extractor = MetadataExtractor(storage, pages)
    downloads = Manager(
        storage, reactor, usage, config.download_idle_timeout, on_stored=extractor.stored
    )
    return Proxy(
        config=config,
        clock=reactor,
        storage=storage,
        pool=pool,
        pages=pages,
        downloads=downloads,
        project_list=ProjectList(pool, storage, reactor, offline=config.offline),
        usage=usage,
        private=PrivateStore.open(
            os.path.join(storage.root, "private"),
            storage.tmp_dir,
            storage.run,
            reactor,
            merge_upstream=config.merge_upstream,
            allow_overwrite=config.allow_overwrite,
            admins=config.admins,
            policy=policy,
            shared=role.count > 1,
        ),
        policy=policy,
        metrics=metrics,
        auth=None
        if config.auth_file is None
        else Authenticator.from_htpasswd(config.auth_file, auth_run or storage.run, reactor),
        started_at=reactor.seconds(),
        shared=None if role.count == 1 else _shared(storage, role, metrics, downloads),
    )


def _shared(storage: Storage, role: Role, metrics: Metrics, downloads: Manager) -> SharedFigures:
    """
    This worker's figures as the others read them, carried on from its
    last incarnation's.
    """

    def own() -> list[InFlight]:
        return [(d.key, *d.progress()) for d in downloads.in_flight() if d.stored_here]

    shared = SharedFigures(os.path.join(storage.root, RUN_DIR), role.index, metrics, own)
    shared.restore()
    return shared


def build_site(proxy: Proxy) -> ProxySite:
    """
    The web site of ``proxy``: its resource tree, the treatment of request
    bodies (uploads spool into ``DATA/tmp/``, so committing them is a
    rename), where finished requests are counted, and the limits on
    connections (below this process's file descriptor limit).
    """
    config = proxy.config
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    connections = ConnectionLimits(
        head_timeout=config.header_timeout,
        max_total=connection_cap(config.max_connections, fd_limit),
        max_per_client=config.max_client_connections,
        clock=proxy.clock,
        exempt=config.trusted_proxies,
    )
    return ProxySite(
        RootResource(proxy),
        body_policy=body_policy(proxy),
        metrics=proxy.metrics,
        connections=connections,
        reactor=proxy.clock,
    )


def make_service(
    config: Config, reactor: Any, reread: Callable[[], PolicyConfig] | None = None
) -> IService:
    """
    The whole service: one process serving the listen endpoints, or, with
    more than one worker, the supervisor of the worker processes.

    :param reread: the policy's settings read again, on ``SIGHUP``.

    :raises proxypypi.cache.storage.StorageError: when the storage is unusable.
    :raises ConfigError: when a listen endpoint cannot be used.
    """
    # First, before anything else logs: the configuration as understood.
    log_configuration(config)
    count = worker_count(config)
    if count > 1:
        cpus = os.cpu_count() or 1
        if count > cpus:
            log.warn(
                "{count} workers on {cpus} CPUs: more workers than CPUs only add memory",
                count=count,
                cpus=cpus,
            )
        Storage(config.storage, _no_runner).prepare()
        shutil.rmtree(os.path.join(config.storage, RUN_DIR), ignore_errors=True)
        return Supervisor(config, reactor, count, reread=reread)
    listen = [(listen_endpoint(reactor, d), d) for d in config.listen]
    return _node(config, reactor, listen, Role(), reread)


def make_worker_service(
    config: Config, reactor: Any, inherited: Sequence[Inherited], role: Role
) -> IService:
    """
    One worker's service: as a single process's, on the sockets the
    supervisor handed down, with a storage the supervisor prepared.
    """
    listen = [(AdoptedEndpoint(reactor, item), item.description) for item in inherited]
    return _node(config, reactor, listen, role, partial(read_shared_policy, config.storage))


def _no_runner(*args: Any) -> Any:
    raise AssertionError("the supervisor does no blocking work")


def _node(
    config: Config,
    reactor: Any,
    listen: Sequence[tuple[IStreamServerEndpoint, str]],
    role: Role,
    reread: Callable[[], PolicyConfig] | None,
) -> IService:
    """
    Disk threads, upstream connections, and one web server per endpoint.
    """
    # Before any thread starts.
    tuned = tune_malloc()
    if tuned:
        log.info("memory allocator: {settings}", settings=", ".join(tuned))
    top = OrderedServices()
    disk = DiskThreads(reactor)
    disk.setServiceParent(top)
    storage = Storage(config.storage, disk.run)
    # A worker must not empty tmp/: the others' downloads are in it.
    storage.prepare(keep_partials=role.count > 1)
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
            file_hosts=config.file_hosts,
        ),
        auth_run=passwords.run,
        page_run=pages.run,
        role=role,
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
    if proxy.shared is not None:
        figures = TimerService(SHARE_INTERVAL, proxy.shared.write)
        figures.clock = reactor
        figures.setServiceParent(top)
    PolicyWatch(proxy.policy, proxy.pages, proxy.private, reactor).setServiceParent(top)
    site = build_site(proxy)
    for endpoint, description in listen:
        server = WebServer(endpoint, site, reactor, description, announce=role.count == 1)
        server.setServiceParent(top)
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

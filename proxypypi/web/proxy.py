"""
The collaborators of one running proxy, handed to the resource tree.

Built once, whole, by the composition root (`proxypypi.service.compose`);
nothing changes its fields afterwards.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime

from proxypypi.cache.downloads import Manager
from proxypypi.cache.pages import PageCache
from proxypypi.cache.projectlist import ProjectList
from proxypypi.cache.storage import Storage
from proxypypi.cache.usage import IUsageTracker
from proxypypi.config.model import Config
from proxypypi.ops.figures import StorageFigures, storage_figures
from proxypypi.ops.metrics import Metrics
from proxypypi.ops.shared import InFlight, SharedFigures
from proxypypi.policy.state import Policy
from proxypypi.private.auth import Authenticator
from proxypypi.private.store import PrivateStore
from proxypypi.upstream.pool import Pool


@attrs.frozen
class Proxy:
    """
    Everything a request may need: settings, upstreams, caches, storage.

    :ivar usage: told of file responses; bounds the cache when
        ``--max-cache-size`` is set (`proxypypi.cache.usage`).
    :ivar private: uploaded projects; they shadow every upstream.
    :ivar auth: who may upload (and read, with ``--auth-read``); ``None``:
        nobody.
    :ivar policy: the supply-chain policy in force, and what it holds back.
    :ivar metrics: this process's counters, for ``/metrics`` and the status
        page (`all_metrics` adds the other workers').
    """

    config: Config
    clock: IReactorTime
    storage: Storage
    pool: Pool
    pages: PageCache
    downloads: Manager
    project_list: ProjectList
    usage: IUsageTracker
    private: PrivateStore
    policy: Policy
    metrics: Metrics
    auth: Authenticator | None = None
    started_at: float = 0.0
    #: The other workers' figures, when worker processes share the service.
    shared: SharedFigures | None = None

    def all_metrics(self) -> Metrics:
        """
        The counters of the whole service (every worker's, added up).
        """
        return self.metrics if self.shared is None else self.shared.combined()

    def all_downloads(self) -> list[InFlight]:
        """
        The downloads in flight in the whole service.
        """
        if self.shared is not None:
            return self.shared.all_downloads()
        return [(d.key, *d.progress()) for d in self.downloads.in_flight()]

    def storage_figures(self) -> StorageFigures:
        """
        What the storage holds now (`proxypypi.ops.figures`).
        """
        return storage_figures(
            self.usage, self.private, self.storage.root, self.config.max_cache_size
        )

"""
The collaborators of one running proxy, handed to the resource tree.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime

from proxypypi.cache.downloads import Manager
from proxypypi.cache.eviction import NoEviction, Usage
from proxypypi.cache.pages import PageCache
from proxypypi.cache.projectlist import ProjectList
from proxypypi.cache.storage import Storage
from proxypypi.config import Config
from proxypypi.ops.metrics import Metrics
from proxypypi.private.auth import Authenticator
from proxypypi.private.store import PrivateStore
from proxypypi.upstream.pool import Pool


@attrs.define
class Proxy:
    """
    Everything a request may need: settings, upstreams, caches, storage.
    """

    config: Config
    clock: IReactorTime
    storage: Storage
    pool: Pool
    pages: PageCache
    downloads: Manager
    project_list: ProjectList
    started_at: float = 0.0
    #: Told of file responses and commits; bounds the cache when
    #: ``--max-cache-size`` is set (see `proxypypi.cache.eviction`).
    usage: Usage = attrs.field(factory=NoEviction)
    #: Uploaded projects; they shadow every upstream (`proxypypi.private.store`).
    private: PrivateStore = attrs.field(kw_only=True)
    #: Who may upload (and read, with ``--auth-read``); ``None``: nobody.
    auth: Authenticator | None = attrs.field(default=None, kw_only=True)
    #: Counters for ``/metrics`` and the status page (`proxypypi.ops.metrics`).
    metrics: Metrics = attrs.field(factory=Metrics, kw_only=True)

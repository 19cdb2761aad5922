"""
The collaborators of one running proxy, handed to the resource tree.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime

from .auth import Authenticator
from .config import Config
from .downloads import Manager
from .eviction import NoEviction, Usage
from .index import PageCache
from .metrics import Metrics
from .private import PrivateStore
from .projectlist import ProjectList
from .storage import Storage
from .upstream import Pool


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
    #: ``--max-cache-size`` is set (see `proxypypi.eviction`).
    usage: Usage = attrs.field(factory=NoEviction)
    #: Uploaded projects; they shadow every upstream (`proxypypi.private`).
    private: PrivateStore = attrs.field(kw_only=True)
    #: Who may upload (and read, with ``--auth-read``); ``None``: nobody.
    auth: Authenticator | None = attrs.field(default=None, kw_only=True)
    #: Counters for ``/metrics`` and the status page (`proxypypi.metrics`).
    metrics: Metrics = attrs.field(factory=Metrics, kw_only=True)

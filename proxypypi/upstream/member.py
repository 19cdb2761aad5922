# -*- test-case-name: tests.test_upstream -*-
"""
One member of an upstream group (an index or a mirror of it), with its
health, and where the files it lists live on the other mirrors.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import attrs
from packaging.utils import NormalizedName
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.web.iweb import IAgent, IResponse

from proxypypi.config.model import UpstreamConfig
from proxypypi.upstream.fetch import (
    FetchError,
    request,
)
from proxypypi.upstream.health import Health
from proxypypi.upstream.origin import Origin


@attrs.define(eq=False)
class Upstream:
    """
    One member of an upstream group, with its health.

    :ivar group: the rank of its group, from 0.
    :ivar idle_timeout: seconds without a byte mid-body before a response
        from this member is abandoned.
    :ivar credit: the member's running credit in the smooth weighted
        round robin of `Pool.plan`.
    """

    config: UpstreamConfig
    group: int
    agent: IAgent = attrs.field(repr=False)
    clock: IReactorTime = attrs.field(repr=False)
    idle_timeout: float = 10.0
    jitter: Callable[[], float] = attrs.field(default=random.random, repr=False)
    probe_spread: int = 1
    credit: float = 0.0
    health: Health = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.health = Health(
            self.url, self.clock, self.probe, jitter=self.jitter, probe_spread=self.probe_spread
        )

    @property
    def url(self) -> str:
        """
        The member's base URL without credentials: its name in pages'
        sources, logs, errors and ``/health`` (its agent sends them).
        """
        return self.config.address

    @property
    def weight(self) -> float:
        return self.config.weight

    def page_url(self, name: NormalizedName) -> str:
        return f"{self.url}{name}/"

    def probe(self) -> Deferred[None]:
        """
        The health probe: ``HEAD`` of the base URL (cheap even where a
        ``GET`` would be the whole project list).  Any answer below 500 means
        the member is up: some mirrors refuse ``HEAD`` or list no projects,
        and still serve pages and files.
        """

        def check(response: IResponse) -> None:
            response.deliverBody(Protocol())
            if response.code >= 500:
                raise FetchError(f"HTTP {response.code}")

        d = request(self.agent, self.clock, self.url, {}, self.config.first_byte_timeout, b"HEAD")
        return d.addCallback(check)

    def origin(self, url: str) -> Origin:
        """
        An origin fetching ``url`` through this member, reporting to its
        health.
        """
        return Origin(
            url,
            self.agent,
            self.config.first_byte_timeout,
            health=self.health,
            idle_timeout=self.idle_timeout,
        )



def _root(base: str) -> tuple[str, str, str]:
    """
    Scheme, host and path prefix under which a member serves everything:
    its base URL without a final ``simple/`` segment (file paths of the
    public index and its mirrors are relative to that).
    """
    parts = urlsplit(base)
    path = parts.path
    if path.endswith("/simple/"):
        path = path[: -len("simple/")]
    return parts.scheme.lower(), parts.netloc.lower(), path


def rebase(url: str, source_base: str, target_base: str) -> str:
    """
    The URL of the file at ``url`` (listed by the member at ``source_base``)
    on the mirror at ``target_base``.

    Mirrors keep the index's relative file paths, so a URL under the source
    member's root moves under the target's root.  A URL elsewhere (a
    separate file host) keeps its path and query on the target's host.
    """
    parts = urlsplit(url)
    scheme, netloc, path = _root(source_base)
    t_scheme, t_netloc, t_path = _root(target_base)
    if (parts.scheme.lower(), parts.netloc.lower()) == (scheme, netloc) and parts.path.startswith(
        path
    ):
        new_path = t_path + parts.path[len(path) :]
    else:
        new_path = parts.path
    return urlunsplit((t_scheme, t_netloc, new_path, parts.query, ""))



"""
A hostile upstream for unit tests: one in-memory member that answers every
request as scripted (any status, headers and body), and the page fetcher
over it.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from proxypypi.config.model import UpstreamConfig
from proxypypi.upstream.pages import PageFetcher, PageResult
from proxypypi.upstream.pool import Pool
from tests.support.pumping import pump

#: The hostile member's base URL.
HOSTILE = "http://hostile.example/simple/"

JSON_TYPE = "application/vnd.pypi.simple.v1+json"

#: The file the hostile pages list.
WHEEL = "proto_alpha-1.0-py3-none-any.whl"


class Scripted(Resource):
    """
    Answers every request with ``code``, ``headers`` and ``body``.
    """

    isLeaf = True

    def __init__(self, code: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__()
        self.code, self.headers, self.body = code, headers, body

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


class HostileMember:
    """
    A `PageFetcher` over one member that is ``resource``.
    """

    def __init__(self, resource: Resource, **fetch_settings: Any) -> None:
        self.clock = Clock()
        self.agent = RequestTraversalAgent(resource)
        self.pool = Pool.from_config([[UpstreamConfig(HOSTILE)]], lambda _: self.agent, self.clock)
        self.fetcher = PageFetcher(self.pool, **fetch_settings)

    def fetch(self, name: Any = "proto-alpha") -> Deferred[PageResult]:
        """
        Fetch ``name``'s page and let the member answer.
        """
        d = Deferred.fromCoroutine(self.fetcher.fetch(name))
        pump(self.agent, clock=self.clock, until=d, what="the page fetch to end")
        return d


class Routes(Resource):
    """
    A hostile upstream on a real port: each path answers as scripted
    (``routes``: path to a `Scripted`), anything else 404; every request's
    path and ``Authorization`` header are recorded.
    """

    isLeaf = True

    def __init__(self, routes: dict[str, Scripted] | None = None) -> None:
        super().__init__()
        self.routes = routes or {}
        self.seen: list[tuple[str, str | None]] = []

    def render(self, request: Request) -> bytes:
        path = request.path.decode("utf-8", "replace")
        self.seen.append((path, request.getHeader("authorization")))
        route = self.routes.get(path)
        if route is None:
            request.setResponseCode(404)
            return b"not here"
        return route.render(request)


def json_page(url: str, name: str = "proto-alpha", filename: str = WHEEL) -> Scripted:
    """
    The JSON page of ``name`` listing one file, ``filename`` at ``url``.
    """
    body = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": name,
            "files": [{"filename": filename, "url": url, "hashes": {}}],
        }
    ).encode()
    return Scripted(200, {"content-type": JSON_TYPE}, body)

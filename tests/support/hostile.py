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
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from proxypypi.config.model import UpstreamConfig
from proxypypi.upstream.pages import PageFetcher, PageResult
from proxypypi.upstream.pool import Pool
from tests.support.pumping import QUIET, pump

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

    def start(self, name: Any = "proto-alpha") -> Deferred[PageResult]:
        """
        Fetch ``name``'s page, letting the member answer all it can (the
        fetch may still wait, on a held parse for one).
        """
        d = Deferred.fromCoroutine(self.fetcher.fetch(name))
        pump(self.agent, clock=self.clock, until=QUIET, what="the member to answer")
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


class _RawAnswer(Protocol):
    """
    Reads a request head, answers with the bytes scripted for its path
    (as they are: no length, no chunking unless written), and closes.
    """

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.head = b""

    def dataReceived(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" not in self.head or self.transport is None:
            return
        path = self.head.split(b" ", 2)[1].decode("ascii", "replace")
        self.transport.write(self.answers.get(path, b"HTTP/1.1 404 Not Found\r\n\r\n"))
        self.transport.loseConnection()


async def serve_raw(answers: dict[str, bytes]) -> tuple[IListeningPort, str]:
    """
    An upstream on 127.0.0.1 that writes raw answers by path (the body
    ends when the connection does), for bodies a ``twisted.web`` server
    would never send.
    """
    from twisted.internet import reactor

    factory = Factory.forProtocol(lambda: _RawAnswer(answers))
    factory.noisy = False
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    return port, f"http://127.0.0.1:{port.getHost().port}/"

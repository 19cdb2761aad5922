"""
The proxy as the composition root builds it (`build_proxy`, `build_site`),
in memory: the upstream is the fake index behind treq's in-memory agent,
a Clock drives time, disk work runs at once (`tests.support.disk`).
Requests are raw bytes fed to the production site, or go through StubTreq
or an agent; nothing listens on a socket.
"""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.server import Site

from proxypypi.cache.storage import Storage
from proxypypi.cache.usage import UsageService
from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.service.compose import build_proxy, build_site
from proxypypi.simple.negotiate import JSON_V1
from proxypypi.testing import Dist, FakeIndex, make_wheel
from tests.support.auth import basic, htpasswd_line
from tests.support.disk import sync_run
from tests.support.pumping import QUIET, pump
from tests.support.uploads import BOUNDARY, multipart, twine_fields
from tests.support.wire import Answer, parse_answer

#: Where the proxy is reached.
BASE = "http://proxy.example"

#: The one upstream the harnesses configure (served by the fake index).
UPSTREAM = "http://upstream.example/simple/"

#: The ``Accept`` of a client that wants the JSON pages.
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json"


#: The samples of a ``/metrics`` scrape, by name and sorted labels.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """
    Every sample of a scrape (read with the Prometheus text parser, as a
    scraper would).
    """
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


class ProxyCase(SynchronousTestCase):
    """
    A test of the proxy the composition root builds, reached through
    StubTreq.  ``setUp`` in the subclass makes `clock`, the fake upstream
    `index` and the in-memory `upstream` agent reaching it, then calls
    `make_proxy`.
    """

    clock: Clock
    index: FakeIndex
    upstream: RequestTraversalAgent

    def make_proxy(self, storage_class: type[Storage] = Storage, **settings: Any) -> None:
        """
        Build the proxy and its site (again), on a new storage directory.

        :param storage_class: the `Storage` to build, for a test that wants
            one of its own (`tests.support.disk.FillableStorage`).
        :param settings: other `Config` fields.
        """
        self.config = Config(
            upstreams=((UpstreamConfig(UPSTREAM),),),
            storage=os.path.abspath(self.mktemp()),
            **settings,
        )
        storage = storage_class(self.config.storage, sync_run)
        storage.prepare()
        self.proxy = build_proxy(self.config, self.clock, storage, lambda cfg: self.upstream)
        self.site = build_site(self.proxy)
        # StubTreq makes its methods at run time: typed Any.
        self.client: Any = StubTreq(self.site.resource)
        self.data = self.config.storage

    def start_usage(self) -> None:
        """
        Run the usage tracker's service (its start-up scan, then its
        periodic passes on the clock), as the real service does.
        """
        usage = UsageService(self.proxy.usage, self.clock)
        usage.startService()
        self.addCleanup(usage.stopService)

    def settle(self) -> None:
        """
        Carry bytes between client, proxy and upstream until nothing more
        happens without time passing.
        """
        pump(
            self.upstream,
            self.client,
            clock=self.clock,
            until=QUIET,
            what="the client, the proxy and the upstream to settle",
        )

    def request(self, method: str, path: str, **headers: str) -> tuple[Any, bytes]:
        """
        One request through StubTreq (redirects not followed), and its
        body; header names are given with ``_`` for ``-``.
        """
        d: Deferred[Any] = self.client.request(
            method,
            BASE + path,
            headers={k.replace("_", "-"): [v] for k, v in headers.items()},
            allow_redirects=False,
        )
        self.settle()
        response = self.successResultOf(d)
        body = self.client.content(response)
        self.settle()
        return response, self.successResultOf(body)


class ProxyHarness(ProxyCase):
    """
    A proxy with an htpasswd file (alice/secret) in front of a fake index
    that publishes ``proto-alpha`` 1.0 and 2.0.
    """

    settings: dict[str, Any] = {}

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_750_000_000)
        self.index = FakeIndex(self.clock)
        self.upstream_alpha = make_wheel("proto-alpha", "2.0")
        self.index.add(make_wheel("proto-alpha", "1.0"))
        self.index.add(self.upstream_alpha)
        self.index.add(make_wheel("proto-beta", "1.0"))
        self.upstream = RequestTraversalAgent(self.index.resource())
        self.auth_file = os.path.abspath(self.mktemp())
        with open(self.auth_file, "wb") as f:
            f.write(htpasswd_line("alice", "secret") + htpasswd_line("bob", "hunter2"))
        self.make_proxy(**self.settings)

    def make_proxy(self, storage_class: type[Storage] = Storage, **settings: Any) -> None:
        settings.setdefault("auth_file", self.auth_file)
        super().make_proxy(storage_class, **settings)

    # Raw HTTP against the real site

    def connect(self, peer: str = "127.0.0.1") -> tuple[Any, StringTransport]:
        """
        A connection to the site from the client address ``peer``.
        """
        address = IPv4Address("TCP", peer, 40000)
        protocol = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def head(
        self,
        length: int | None,
        *,
        path: str = "/",
        method: str = "POST",
        auth: str | None = "Basic alice:secret",
        content_type: str | None = f"multipart/form-data; boundary={BOUNDARY}",
        extra: str = "",
    ) -> bytes:
        """
        The head of one request, announcing a body of ``length`` bytes, or
        a chunked one when ``length`` is ``None``.

        :param auth: the ``Authorization`` value; ``Basic user:password``
            is encoded as clients send it.
        :param extra: more header lines, each ending with CRLF.
        """
        head = f"{method} {path} HTTP/1.1\r\nHost: proxy.example\r\n"
        if auth is not None:
            if auth.startswith("Basic ") and ":" in auth:
                user, password = auth[len("Basic ") :].split(":", 1)
                auth = basic(user, password)
            head += f"Authorization: {auth}\r\n"
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        if length is None:
            head += "Transfer-Encoding: chunked\r\n"
        else:
            head += f"Content-Length: {length}\r\n"
        return (head + extra + "\r\n").encode()

    def raw(
        self,
        body: bytes,
        *,
        length: int | None = None,
        chunked: bool = False,
        peer: str = "127.0.0.1",
        **head: Any,
    ) -> Answer:
        """
        Send one request and return the response (the body is sent whole,
        or in chunks of 16 KiB with ``chunked``).

        :param length: the ``Content-Length`` announced, if not the body's.
        :param peer: the client's address.
        :param head: for `head`.
        """
        protocol, transport = self.connect(peer)
        announced = None if chunked else len(body) if length is None else length
        protocol.dataReceived(self.head(announced, **head))
        if chunked:
            for i in range(0, len(body), 16384):
                piece = body[i : i + 16384]
                if transport.disconnecting:
                    break
                protocol.dataReceived(b"%x\r\n%s\r\n" % (len(piece), piece))
            if not transport.disconnecting:
                protocol.dataReceived(b"0\r\n\r\n")
        else:
            protocol.dataReceived(body)
        response = parse_answer(transport.value())
        assert response is not None, transport.value()
        return response

    def upload(self, dist: Dist, **kwargs: Any) -> Answer:
        fields = kwargs.pop("fields", None) or twine_fields(dist)
        return self.raw(multipart(fields, (dist.filename, dist.data)), **kwargs)

    # Reads through StubTreq

    def get(self, path: str, **headers: str) -> tuple[Any, bytes]:
        return self.request("GET", path, **headers)

    def page(self, project: str, **headers: str) -> dict[str, Any]:
        response, body = self.get(f"/simple/{project}/", accept=JSON_V1, **headers)
        self.assertEqual(response.code, 200, body)
        page: dict[str, Any] = json.loads(body)
        return page

    def assertRefused(self, response: Answer, code: int, fragment: str) -> None:
        """
        A one-line refusal, the same line in the status and the body.
        """
        self.assertEqual(response.code, code, response)
        line = response.body.decode()
        self.assertEqual(len(line.strip().splitlines()), 1, line)
        self.assertIn(fragment, line)
        self.assertEqual(response.phrase, line.strip())


class SiteAgent(RequestTraversalAgent):
    """
    treq's in-memory agent, answering through the given site (the
    production `ProxySite`, say) rather than a plain one it would build.
    """

    def __init__(self, site: Site) -> None:
        super().__init__(site.resource)
        self._serverFactory = site


class CountingSite(Site):
    """
    The fake upstream's site: it sums the body bytes it sends.
    """

    sent = 0

    def log(self, request: Any) -> None:
        self.sent += request.sentLength


class MeteredHarness(ProxyHarness):
    """
    `ProxyHarness` with reads through the production site and a counted
    upstream; the usage tracker's service runs (its scan is synchronous
    here).
    """

    def setUp(self) -> None:
        super().setUp()
        self.corp = make_wheel("corp-lib", "1.0")
        # The same bytes as the harness's upstream proto-beta (wheels are
        # built deterministically).
        self.beta = make_wheel("proto-beta", "1.0")

    def make_proxy(self, storage_class: type[Storage] = Storage, **settings: Any) -> None:
        self.upstream_site = CountingSite(self.index.resource(), reactor=MemoryReactorClock())
        self.upstream = SiteAgent(self.upstream_site)
        super().make_proxy(storage_class, **settings)
        self.agent = SiteAgent(self.site)
        self.start_usage()

    def settle(self) -> None:
        """
        Carry bytes between the agent, the production site and the upstream
        until nothing more happens without time passing.
        """
        pump(
            self.upstream,
            self.agent,
            clock=self.clock,
            until=QUIET,
            what="the agent, the site and the upstream to settle",
        )

    def send(self, path: str, method: str = "GET", **headers: str) -> Deferred[IResponse]:
        """
        One request through the plain agent: no redirects followed, and no
        gzip unless asked for (treq's client would add it), so the bodies
        read are the bytes sent.
        """
        h = Headers({k.replace("_", "-"): [v] for k, v in headers.items()})
        d: Deferred[IResponse] = self.agent.request(method.encode(), (BASE + path).encode(), h)
        return d

    def body_of(self, d: Deferred[IResponse]) -> tuple[IResponse, bytes]:
        self.settle()
        response = self.successResultOf(d)
        body = treq.content(response)
        self.settle()
        return response, self.successResultOf(body)

    def get(self, path: str, method: str = "GET", **headers: str) -> tuple[IResponse, bytes]:
        return self.body_of(self.send(path, method, **headers))

    def scrape(self) -> Samples:
        response, body = self.get("/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        return parse(body.decode())

    def upload_corp(self, password: str = "secret") -> Answer:
        return self.upload(self.corp, auth=f"Basic alice:{password}")

    def file_path(self, dist: Dist) -> str:
        return f"/files/{dist.project}/{dist.filename}"

    def slow_download(self, seconds: float) -> Deferred[IResponse]:
        """
        Start the download of the upstream's ``proto-alpha`` 2.0 at 100
        bytes a second, and let ``seconds`` of it pass.

        :returns: the client's response.
        """
        self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)
        self.index.throttle = 100
        self.index.chunk_size = 100
        d = self.send(self.file_path(self.upstream_alpha))
        self.settle()
        self.clock.advance(seconds)
        self.settle()
        return d

    def finish_downloads(self) -> None:
        """
        Let time pass, a second a round, until no download is in flight.
        """
        pump(
            self.upstream,
            self.agent,
            clock=self.clock,
            advance=1,
            until=lambda: not self.proxy.downloads.in_flight(),
            what="every download to finish",
        )

"""
https upstreams through an HTTP proxy's ``CONNECT`` tunnel: the service's
own agents against a small CONNECT proxy written here and a TLS fake index
with a self-signed certificate, real sockets on 127.0.0.1 only; and the
tunnel's protocol driven by hand (timeouts, bytes after the head,
cancellation) with a clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.server import Site
from zope.interface import implementer

from proxypypi.config.model import UpstreamConfig
from proxypypi.config.urls import basic_authorization
from proxypypi.simple.negotiate import JSON_V1
from proxypypi.testing import Dist, FakeIndex, make_wheel
from proxypypi.upstream.agents import _ProxiedAgent, upstream_agents
from proxypypi.upstream.fetch import FetchError, UpstreamTimeout, describe_failure, is_unreachable
from proxypypi.upstream.tunnel import (
    MAX_HEAD,
    TunnelEndpoint,
    TunnelError,
    authority,
    parse_response_head,
)
from tests.support.tls import self_signed

# Twisted's ssl: endpoint still hands pyOpenSSL objects to pyOpenSSL.
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


_LOST = Failure(ConnectionDone())


class _Relay(Protocol):
    """The proxy's connection to the target: passes bytes back to the client."""

    def __init__(self, client: _ConnectProxy) -> None:
        self.client = client

    def dataReceived(self, data: bytes) -> None:
        assert self.client.transport is not None
        self.client.transport.write(data)

    def connectionLost(self, reason: Failure = _LOST) -> None:
        assert self.client.transport is not None
        self.client.transport.loseConnection()


class _ConnectProxy(Protocol):
    """
    One client of `ProxyServer`: reads the ``CONNECT`` head, then relays
    both ways to 127.0.0.1 at the requested port (whatever the host name:
    the proxy, not the service, resolves it).
    """

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.buffer = b""
        self.relay: _Relay | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            assert self.relay.transport is not None
            self.relay.transport.write(data)
            return
        self.buffer += data
        head, found, rest = self.buffer.partition(b"\r\n\r\n")
        if not found:
            return
        self.buffer = b""
        lines = head.split(b"\r\n")
        self.server.heads.append(lines)
        assert self.transport is not None
        if self.server.answer is not None:
            self.transport.write(self.server.answer)
            self.transport.loseConnection()
            return
        if self.server.credentials is not None:
            wanted = b"Proxy-Authorization: Basic " + base64.b64encode(self.server.credentials)
            if wanted not in lines:
                self.transport.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\n\r\n'
                )
                self.transport.loseConnection()
                return
        port = int(lines[0].split()[1].rpartition(b":")[2])
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        relay = _Relay(self)
        d = TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: relay)
        )
        d.addCallback(lambda _: self._connected(relay, rest))

    def _connected(self, relay: _Relay, rest: bytes) -> None:
        self.relay = relay
        assert self.transport is not None and relay.transport is not None
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            relay.transport.write(rest)
        self.transport.resumeProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = _LOST) -> None:
        if self.relay is not None and self.relay.transport is not None:
            self.relay.transport.loseConnection()


@attrs.define
class ProxyServer:
    """
    A tiny CONNECT proxy on loopback.

    :ivar credentials: ``user:password`` required as Basic
        ``Proxy-Authorization`` (407 without), or ``None``.
    :ivar answer: bytes sent instead of opening any tunnel, then closed.
    :ivar heads: the request head of every ``CONNECT``, as lines.
    """

    credentials: bytes | None = None
    answer: bytes | None = None
    heads: list[list[bytes]] = attrs.Factory(list)

    def factory(self) -> IProtocolFactory:
        return Factory.forProtocol(lambda: _ConnectProxy(self))


@attrs.define
class Fixture:
    index: FakeIndex
    dist: Dist
    upstream: str
    pem: bytes
    proxy: ProxyServer
    proxy_port: int


@pytest_twisted.async_yield_fixture
async def tunnelled(tmp_path: Any) -> AsyncIterator[Fixture]:
    key, cert, pem = self_signed(str(tmp_path), dns_names=("localhost",))
    index = FakeIndex(reactor)
    dist = make_wheel("tunnelled", "1.0", payload_size=200_000)
    index.add(dist)
    tls: IListeningPort = await serverFromString(
        reactor, f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1"
    ).listen(Site(index.resource()))
    proxy = ProxyServer()
    proxy_port: IListeningPort = await serverFromString(
        reactor, "tcp:0:interface=127.0.0.1"
    ).listen(proxy.factory())
    try:
        yield Fixture(
            index,
            dist,
            f"https://localhost:{_port(tls)}/simple/",
            pem,
            proxy,
            _port(proxy_port),
        )
    finally:
        for port in (proxy_port, tls):
            stopped = port.stopListening()
            if stopped is not None:
                await stopped


def _port(port: IListeningPort) -> int:
    host: Any = port.getHost()
    return int(host.port)


async def _agent_get(
    fixture: Fixture, proxy_url: str, url: str, accept: bytes = b"*/*"
) -> tuple[int, bytes]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    trusting = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(fixture.pem))
    agent_for = upstream_agents(reactor, pool, proxy_url, tls_policy=trusting)
    agent = agent_for(UpstreamConfig(fixture.upstream))
    try:
        response = await agent.request(b"GET", url.encode(), Headers({b"Accept": [accept]}))
        return response.code, await treq.content(response)
    finally:
        await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_page_and_file_through_the_tunnel(tunnelled: Fixture) -> None:
    """
    A page and a file of an https upstream come through the proxy's tunnel,
    the certificate checked for the upstream's name (which only the proxy
    resolves), credentials sent to the proxy on CONNECT.
    """
    tunnelled.proxy.credentials = b"svc:p@ss"
    proxy_url = f"http://svc:p%40ss@127.0.0.1:{tunnelled.proxy_port}"
    code, body = await _agent_get(
        tunnelled, proxy_url, tunnelled.upstream + "tunnelled/", JSON_V1.encode()
    )
    assert code == 200
    (f,) = json.loads(body)["files"]
    assert f["filename"] == tunnelled.dist.filename

    file_url = tunnelled.upstream.replace("/simple/", "/files/") + tunnelled.dist.filename
    code, data = await _agent_get(tunnelled, proxy_url, file_url)
    assert code == 200
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(tunnelled.dist.data).hexdigest()
    assert f["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()

    target = f"localhost:{tunnelled.upstream.split(':')[2].split('/')[0]}".encode()
    assert [h[0] for h in tunnelled.proxy.heads] == [b"CONNECT " + target + b" HTTP/1.1"] * 2
    assert all(b"Host: " + target in h for h in tunnelled.proxy.heads)
    assert [r.path for r in tunnelled.index.requests] == [
        "/simple/tunnelled/",
        "/files/" + tunnelled.dist.filename,
    ]


@pytest_twisted.ensureDeferred
async def test_proxy_wants_credentials(tunnelled: Fixture) -> None:
    """A 407 is a fetch failure that says so, in one line."""
    tunnelled.proxy.credentials = b"svc:secret"
    with pytest.raises(TunnelError) as e:
        await _agent_get(
            tunnelled, f"http://127.0.0.1:{tunnelled.proxy_port}", tunnelled.upstream + "x/"
        )
    assert isinstance(e.value, FetchError)
    port = tunnelled.upstream.split(":")[2].split("/")[0]
    assert str(e.value) == (
        f"proxy refused CONNECT to localhost:{port}: 407 Proxy Authentication Required; "
        "give its credentials in --upstream-proxy (http://user:password@host:port)"
    )
    assert describe_failure(Failure(e.value)) == str(e.value)
    # No retry cures it: the member is taken out at once.
    assert is_unreachable(e.value)
    assert tunnelled.index.requests == []


@pytest_twisted.ensureDeferred
async def test_proxy_closes_mid_head(tunnelled: Fixture) -> None:
    """A proxy that hangs up half-way through its answer fails the request cleanly."""
    tunnelled.proxy.answer = b"HTTP/1.1 200 Conn"
    with pytest.raises(TunnelError, match="closed the connection before opening the tunnel") as e:
        await _agent_get(
            tunnelled, f"http://127.0.0.1:{tunnelled.proxy_port}", tunnelled.upstream + "x/"
        )
    # A proxy hanging up may be passing trouble: counted, not fatal at once.
    assert not is_unreachable(e.value)


@pytest_twisted.ensureDeferred
async def test_certificate_still_checked(tunnelled: Fixture) -> None:
    """Through the tunnel, an upstream whose certificate is not trusted fails."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent_for = upstream_agents(
        reactor,
        pool,
        f"http://127.0.0.1:{tunnelled.proxy_port}",
        tls_policy=BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(_other_pem())),
    )
    try:
        with pytest.raises(Exception) as e:
            await agent_for(UpstreamConfig(tunnelled.upstream)).request(
                b"GET", (tunnelled.upstream + "x/").encode()
            )
        assert "certificate verify failed" in describe_failure(Failure(e.value))
    finally:
        await pool.closeCachedConnections()
    assert tunnelled.index.requests == []


def _other_pem() -> bytes:
    """A certificate for the same names, but not the upstream's."""
    with tempfile.TemporaryDirectory() as d:
        return self_signed(d, dns_names=("localhost",))[2]


class HeadTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """Status and reason from the status line; headers ignored."""
        self.assertEqual(
            parse_response_head(b"HTTP/1.1 200 Connection established\r\nVia: x"),
            (200, "Connection established"),
        )
        self.assertEqual(parse_response_head(b"HTTP/1.0 200"), (200, ""))
        self.assertEqual(
            parse_response_head(b"HTTP/1.1 407 Proxy Authentication Required"),
            (407, "Proxy Authentication Required"),
        )

    def test_not_http(self) -> None:
        """Anything but an HTTP status line is a TunnelError quoting it."""
        for head in (b"", b"SSH-2.0-OpenSSH_9.6", b"HTTP/1.1 abc nope", b"HTTP/1.1"):
            with self.assertRaises(TunnelError) as e:
                parse_response_head(head)
            self.assertIn("not HTTP", str(e.exception))

    def test_authorization(self) -> None:
        """Credentials in the proxy URL become Basic, percent-escapes decoded."""
        self.assertIsNone(basic_authorization("http://proxy.example:3128"))
        self.assertEqual(
            basic_authorization("http://svc:p%40ss@proxy.example:3128"),
            b"Basic " + base64.b64encode(b"svc:p@ss"),
        )

    def test_authority(self) -> None:
        self.assertEqual(authority("mirror.example", 443), "mirror.example:443")
        self.assertEqual(authority("::1", 443), "[::1]:443")


@implementer(IStreamClientEndpoint)
@attrs.define
class _FakeProxyEndpoint:
    """Connects at once to a StringTransport (the proxy side is the test)."""

    transport: StringTransport = attrs.Factory(StringTransport)
    protocol: IProtocol | None = None

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        assert protocol is not None
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        return succeed(protocol)


class _Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class TunnelProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.proxy = _FakeProxyEndpoint()
        self.endpoint = TunnelEndpoint(
            self.clock, self.proxy, "mirror.example", 443, b"Basic eA==", timeout=5
        )

    def test_request_and_leftover_bytes(self) -> None:
        """CONNECT with Host and credentials; bytes after the head reach the protocol."""
        d = self.endpoint.connect(Factory.forProtocol(_Recorder))
        self.assertEqual(
            self.proxy.transport.value(),
            b"CONNECT mirror.example:443 HTTP/1.1\r\nHost: mirror.example:443\r\n"
            b"Proxy-Authorization: Basic eA==\r\n\r\n",
        )
        self.assertNoResult(d)
        assert self.proxy.protocol is not None
        self.proxy.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nVia: p\r\n\r\nhel")
        inner = self.successResultOf(d)
        assert isinstance(inner, _Recorder)
        self.proxy.protocol.dataReceived(b"lo")
        self.assertEqual(inner.data, b"hello")
        self.assertIs(inner.transport, self.proxy.transport)
        self.clock.advance(10)  # the timeout was cancelled
        self.assertFalse(self.proxy.transport.disconnecting)

    def test_timeout(self) -> None:
        """No answer in time: an UpstreamTimeout, the connection dropped."""
        d = self.endpoint.connect(Factory.forProtocol(_Recorder))
        self.clock.advance(5)
        f = self.failureResultOf(d, UpstreamTimeout)
        self.assertIn("did not answer CONNECT to mirror.example:443 within 5s", str(f.value))
        self.assertTrue(self.proxy.transport.disconnecting)

    def test_head_too_long(self) -> None:
        """The answer is read only up to MAX_HEAD bytes."""
        d = self.endpoint.connect(Factory.forProtocol(_Recorder))
        assert self.proxy.protocol is not None
        self.proxy.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD)
        self.failureResultOf(d, TunnelError)
        self.assertTrue(self.proxy.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        """Cancelling drops the proxy connection and the timer."""
        d = self.endpoint.connect(Factory.forProtocol(_Recorder))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(self.proxy.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ProxiedAgentTests(SynchronousTestCase):
    def test_dispatch(self) -> None:
        """https goes to the tunnel agent; http to the proxied one, with credentials."""
        calls: list[tuple[str, bytes, Headers | None]] = []

        @attrs.define
        class Stub:
            name: str

            def request(
                self, method: bytes, uri: bytes, headers: Any = None, body: Any = None
            ) -> Any:
                calls.append((self.name, uri, headers))
                return Deferred()

        agent = _ProxiedAgent(Stub("tunnel"), Stub("plain"), b"Basic eA==")  # type: ignore[arg-type]
        agent.request(b"GET", b"https://mirror.example/simple/")
        agent.request(b"GET", b"http://mirror.example/simple/", Headers({b"Accept": [b"x"]}))
        (name, uri, headers), (name2, uri2, headers2) = calls
        self.assertEqual((name, headers), ("tunnel", None))
        self.assertEqual(name2, "plain")
        assert headers2 is not None
        self.assertEqual(headers2.getRawHeaders(b"proxy-authorization"), [b"Basic eA=="])
        self.assertEqual(headers2.getRawHeaders(b"accept"), [b"x"])

"""
Slow and greedy clients (issue 14, item 3): the deadline of a request's
head and the caps on open connections, on a Clock, against the production
site.  The speed goal (a normal request answered within 100 ms while a
thousand slow connections are open) is the ``slowloris`` benchmark's.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.config.settings import build_config
from proxypypi.config.urls import ConfigError
from proxypypi.service.tap import Options
from proxypypi.web.connections import connection_cap
from tests.support.harness import PIP_ACCEPT, ProxyHarness
from tests.support.wire import Answer, parse_answer

#: A request for a page, as pip sends it.
PAGE = (
    b"GET /simple/proto-alpha/ HTTP/1.1\r\nHost: proxy.example\r\n"
    b"Accept: " + PIP_ACCEPT.encode() + b"\r\n\r\n"
)


class ConnectionCase(ProxyHarness):
    def answer(self, transport: StringTransport) -> Answer:
        response = parse_answer(transport.value())
        assert response is not None, transport.value()
        return response

    def close(self, protocol: Any) -> None:
        protocol.connectionLost(Failure(ConnectionDone()))


class HeadDeadlineTests(ConnectionCase):
    def test_slow_head_cut_at_deadline(self) -> None:
        """
        A head sent a byte every 5 s gets 408 and is closed 20 s after its
        first byte (the idle timer alone kept it open for ever).
        """
        protocol, transport = self.connect()
        for byte in PAGE[:4]:
            self.assertFalse(transport.disconnecting)
            protocol.dataReceived(bytes([byte]))
            self.clock.advance(5)
        self.assertTrue(transport.disconnecting)
        response = self.answer(transport)
        self.assertEqual(response.code, 408)
        self.assertIn("--header-timeout", response.body.decode())

    def test_silent_connection_closed(self) -> None:
        """A connection that sends nothing is closed at the deadline, with no answer."""
        _protocol, transport = self.connect()
        self.clock.advance(19.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_keep_alive_and_slow_bodies_are_not_cut(self) -> None:
        """
        A connection kept alive after its answer is not cut while it is
        idle, only when its next head is late; a body may take longer than
        the deadline (slow uploads are legitimate).
        """
        protocol, transport = self.connect()
        protocol.dataReceived(self.head(100, method="POST", path="/legacy/"))
        for _ in range(10):
            self.clock.advance(5)
            protocol.dataReceived(b"x" * 10)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.answer(transport).code, 400)
        transport.clear()
        self.clock.advance(45)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(PAGE[:5])
        self.clock.advance(20)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.answer(transport).code, 408)

    def test_deadline_is_an_option(self) -> None:
        """--header-timeout sets the deadline."""
        self.make_proxy(header_timeout=3.0)
        protocol, transport = self.connect()
        protocol.dataReceived(PAGE[:5])
        self.clock.advance(3)
        self.assertEqual(self.answer(transport).code, 408)


class CapTests(ConnectionCase):
    def test_per_client_cap(self) -> None:
        """
        The 129th connection from one address gets 503 with Retry-After
        and is closed; another address still gets in, and a closed
        connection makes room.
        """
        first = [self.connect("192.0.2.9")[0] for _ in range(128)]
        protocol, transport = self.connect("192.0.2.9")
        response = self.answer(transport)
        self.assertEqual((response.code, response.headers["retry-after"]), (503, "5"))
        self.assertIn("--max-client-connections", response.body.decode())
        self.assertTrue(transport.disconnecting)
        _, other = self.connect("192.0.2.10")
        self.assertEqual(other.value(), b"")
        self.close(first[0])
        _, again = self.connect("192.0.2.9")
        self.assertEqual(again.value(), b"")

    def test_total_cap_and_trusted_proxy(self) -> None:
        """
        Past --max-connections nobody gets in; a --trusted-proxy (everyone
        comes through it) is not capped per address.
        """
        self.make_proxy(
            max_connections=200, max_client_connections=2, trusted_proxies=("192.0.2.1",)
        )
        opened = [self.connect("192.0.2.1") for _ in range(200)]
        self.assertEqual({t.value() for _, t in opened}, {b""})
        _, refused = self.connect("192.0.2.50")
        response = self.answer(refused)
        self.assertEqual(response.code, 503)
        self.assertIn("--max-connections", response.body.decode())

    def test_thousand_slow_connections_and_a_normal_client(self) -> None:
        """
        With 1,000 slow-header connections open (50 from each of 20
        addresses), a normal client's page request is answered; 20 s
        later every slow one is closed with 408 and none is left counted.
        """
        self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)  # the page is cached
        slow = []
        for n in range(1000):
            protocol, transport = self.connect(f"198.51.100.{n % 20}")
            protocol.dataReceived(PAGE[:20])
            slow.append((protocol, transport))
        self.clock.advance(10)
        protocol, transport = self.connect("203.0.113.5")
        protocol.dataReceived(PAGE)
        self.assertEqual(self.answer(transport).code, 200)
        self.clock.advance(10)
        self.assertEqual({self.answer(t).code for _, t in slow}, {408})
        for p, _ in slow:
            self.close(p)
        self.close(protocol)
        limits = self.site.connections
        assert limits is not None
        self.assertEqual(limits.total, 0)


class OptionTests(SynchronousTestCase):
    def test_options_and_toml_keys(self) -> None:
        """The limits are options of twistd and keys of the TOML file."""
        options = Options()
        options.parseOptions(
            ["--upstream", "http://127.0.0.1:1/simple/", "--storage", self.mktemp()]
            + ["--header-timeout", "5"]
            + ["--max-connections", "300", "--max-client-connections", "7"]
        )
        config = options["config_obj"]
        self.assertEqual(
            (config.header_timeout, config.max_connections, config.max_client_connections),
            (5.0, 300, 7),
        )
        settings = {"upstream": "http://127.0.0.1:1/simple/", "max-client-connections": 0}
        with self.assertRaises(ConfigError):
            build_config(settings)


class CapDefaultTests(SynchronousTestCase):
    def test_default_below_fd_limit(self) -> None:
        """
        By default a quarter of the file descriptors (at least 64) are kept
        for files and upstreams; a configured cap is used as given.
        """
        self.assertEqual(connection_cap(None, 1024), 768)
        self.assertEqual(connection_cap(None, 20000), 15000)
        self.assertEqual(connection_cap(None, 100), 36)
        self.assertEqual(connection_cap(None, -1), 786432)
        self.assertEqual(connection_cap(5000, 1024), 5000)

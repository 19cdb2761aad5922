"""
What `proxypypi.internals` relies on in Twisted's private state is still
there: each test names the attribute, so a Twisted upgrade that removes or
renames one fails here, loudly, rather than in production.
"""

from __future__ import annotations

import socket

from twisted.internet import abstract, protocol, tcp
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import client, http
from twisted.web.test.requesthelper import DummyChannel

from proxypypi.internals import (
    QuietConnectionPool,
    accept_one_per_wake,
    buffered,
    cache_host,
    raise_send_limit,
    release_writes,
    request_gone,
    take_over_writes,
)


class ClientFactoryTests(SynchronousTestCase):
    def test_pool_builds_its_factories_from_the_class_attribute(self) -> None:
        """HTTPConnectionPool._factory is an _HTTP11ClientFactory; ours is quiet."""
        self.assertTrue(issubclass(client.HTTPConnectionPool._factory, client._HTTP11ClientFactory))
        self.assertFalse(QuietConnectionPool._factory.noisy)
        self.assertTrue(issubclass(QuietConnectionPool._factory, client._HTTP11ClientFactory))


class TransportTests(SynchronousTestCase):
    def transport(self) -> tcp.Server:
        """
        A real TCP server transport on one end of a socket pair, never
        registered with a reactor.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        theirs = socket.create_connection(listener.getsockname())
        self.addCleanup(theirs.close)
        ours, _ = listener.accept()
        self.addCleanup(ours.close)
        server = tcp.Server(ours, object(), ("127.0.0.1", 1), None, 1, MemoryReactor())
        return server

    def test_send_limit(self) -> None:
        """SEND_LIMIT is a class attribute that an instance may raise (never lower)."""
        self.assertIsInstance(abstract.FileDescriptor.SEND_LIMIT, int)
        t = self.transport()
        raise_send_limit(t, 1024 * 1024)
        self.assertEqual(t.SEND_LIMIT, 1024 * 1024)
        raise_send_limit(t, 10)
        self.assertEqual(t.SEND_LIMIT, 1024 * 1024)

    def test_host_cached(self) -> None:
        """getHost is looked up on the instance, so a cached answer replaces the call."""
        t = self.transport()
        cache_host(t)
        self.assertIn("getHost", vars(t))
        self.assertIs(t.getHost(), t.getHost())

    def test_write_buffers_and_takeover(self) -> None:
        """dataBuffer and _tempDataBuffer hold pending bytes; doWrite can be redirected."""
        t = self.transport()
        self.assertFalse(buffered(t))
        t._tempDataBuffer.append(b"x")
        self.assertTrue(buffered(t))
        calls: list[int] = []

        def do_write() -> None:
            calls.append(1)

        take_over_writes(t, do_write)
        t.doWrite()
        self.assertEqual(calls, [1])
        self.assertFalse(release_writes(t, lambda: None))
        self.assertTrue(release_writes(t, do_write))
        self.assertNotIn("doWrite", vars(t))
        self.assertEqual(type(t).doWrite, tcp.Connection.doWrite)


class PortTests(SynchronousTestCase):
    def test_one_accept_per_wake(self) -> None:
        """
        Port.doRead accepts up to numberAccepts connections per call and
        resets it; pinned, it accepts one per call, the rest stay queued.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        built: list[object] = []
        factory = protocol.Factory.forProtocol(protocol.Protocol)
        factory.buildProtocol = lambda addr: built.append(addr) or protocol.Protocol()  # type: ignore[method-assign]
        port = tcp.Port._fromListeningDescriptor(
            MemoryReactor(), listener.fileno(), socket.AF_INET, factory
        )
        port.startListening()
        self.assertEqual(port.numberAccepts, 100)
        accept_one_per_wake(port)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        for c in clients:
            self.addCleanup(c.close)
        port.doRead()
        self.assertEqual(len(built), 1)
        port.doRead()
        self.assertEqual(len(built), 2)
        for selectable in port.reactor.readers:  # type: ignore[attr-defined]
            selectable.socket.close()


class RequestTests(SynchronousTestCase):
    def test_disconnected(self) -> None:
        """http.Request records a lost connection in _disconnected."""
        request = http.Request(DummyChannel())
        self.assertFalse(request_gone(request))
        request.connectionLost(None)
        self.assertTrue(request_gone(request))

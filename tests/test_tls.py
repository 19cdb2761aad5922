"""
Listening: on TLS and plain http at once, with real sockets on 127.0.0.1
(a self-signed certificate made for the test, the real service with two
``--listen`` endpoints, a client that trusts only that certificate); and
endpoints that cannot be used, refused with a message that says why.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import Certificate
from twisted.internet.testing import EventLoggingObserver, MemoryReactor
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.resource import Resource

from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.config.urls import ConfigError
from proxypypi.service.compose import listen_endpoint, make_service
from proxypypi.service.lifecycle import WebServer
from proxypypi.simple.negotiate import JSON_V1
from proxypypi.web.site import ProxySite
from tests.support.proxies import Upstream
from tests.support.tls import self_signed


# Twisted's ssl: endpoint still hands pyOpenSSL objects to pyOpenSSL.
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
@pytest_twisted.ensureDeferred
async def test_tls_and_plain_listeners(upstream: Upstream, tmp_path: Any) -> None:
    """One service answers on an ssl: endpoint and a tcp: endpoint at once."""
    key, cert, pem = self_signed(str(tmp_path))
    config = Config(
        upstreams=((UpstreamConfig(upstream.simple),),),
        listen=(
            f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1",
            "tcp:0:interface=127.0.0.1",
        ),
        storage=os.path.join(str(tmp_path), "data"),
        workers=1,
    )
    service: Any = make_service(config, reactor)
    service.startService()
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        webs = [s for s in service if isinstance(s, WebServer)]
        tls_port, plain_port = [(await w.when_listening()).getHost().port for w in webs]
        trusting = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(pem))
        client = HTTPClient(Agent(reactor, contextFactory=trusting, pool=pool))
        tls = f"https://127.0.0.1:{tls_port}/"
        plain = f"http://127.0.0.1:{plain_port}/"

        response = await client.get(tls + "simple/proto-alpha/", headers={"Accept": [JSON_V1]})
        assert response.code == 200
        page = json.loads(await treq.content(response))
        (f,) = page["files"]
        response = await client.get(tls + "files/proto-alpha/" + f["filename"])
        assert await treq.content(response) == upstream.dists[f["filename"]].data

        # The status page over TLS advertises the https address.
        response = await client.get(tls)
        assert f"https://127.0.0.1:{tls_port}/simple/" in (await treq.content(response)).decode()

        response = await client.get(plain + "health")
        assert response.code == 200
        response = await client.get(plain + "simple/proto-alpha/")
        assert response.code == 200
        response = await client.get(plain + "metrics")
        metrics = (await treq.content(response)).decode()
        assert 'proxypypi_requests_total{code="200",route="project_page"} 2.0' in metrics
    finally:
        await pool.closeCachedConnections()
        await service.stopService()


class ListenTests(SynchronousTestCase):
    def test_unusable_listen_endpoint(self) -> None:
        """A TLS endpoint whose files are missing is refused by name, with what to check."""
        with self.assertRaises(ConfigError) as e:
            listen_endpoint(MemoryReactor(), "ssl:0:privateKey=missing.pem:certKey=missing.pem")
        self.assertIn("missing.pem", str(e.exception))
        self.assertIn("readable by this user", str(e.exception))

    def test_listen_failure_ends_the_process(self) -> None:
        """
        A port that cannot be bound (in use, say) ends the process at start
        with one line naming the endpoint, before anything else starts.
        """

        class Taken:
            def listen(self, factory: object) -> Deferred[object]:
                return fail(CannotListenError("127.0.0.1", 3141, OSError(98, "in use")))

        server = WebServer(Taken(), ProxySite(Resource()), MemoryReactor(),  # type: ignore[arg-type]
                           "tcp:3141")  # fmt: skip
        with self.assertRaises(SystemExit) as e:
            server.privilegedStartService()
        self.assertEqual(
            str(e.exception),
            "proxypypi: cannot listen on tcp:3141 (in use); stop whatever uses it, or choose "
            "another with --listen (e.g. --listen tcp:3142:interface=127.0.0.1)",
        )

    def test_late_listen_failure_stops_the_service(self) -> None:
        """An endpoint that fails once the reactor runs stops it, with one critical line."""
        later: Deferred[object] = Deferred()

        class Late:
            def listen(self, factory: object) -> Deferred[object]:
                return later

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reactor = MemoryReactor()
        reactor.running = True
        server = WebServer(Late(), ProxySite(Resource()), reactor, "unix:/x")  # type: ignore[arg-type]
        server.startService()
        later.errback(CannotListenError("", 0, OSError(13, "denied")))
        self.assertTrue(reactor.hasStopped)
        self.assertEqual(events[0]["log_level"], LogLevel.critical)
        self.assertIn("cannot listen on unix:/x (denied)", events[0]["reason"])

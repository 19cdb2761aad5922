"""
Attacks by clients (issue 14, "Clients"), each replayed against the
production site in memory: the answer is a clear refusal, never a 500, a
traceback or a dropped connection.
"""

from __future__ import annotations

import os

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from proxypypi.service.compose import build_proxy, build_site
from proxypypi.testing import make_wheel
from tests.support.disk import HeldRunner, UnwritableSpool
from tests.support.harness import PIP_ACCEPT, ProxyHarness
from tests.support.uploads import multipart, twine_fields
from tests.support.wire import Answer, parse_answer


class HeldLoginsHarness(ProxyHarness):
    """
    The proxy with its password checks held until the test runs them, as
    a busy bcrypt pool would hold them.
    """

    def setUp(self) -> None:
        super().setUp()
        self.held = HeldRunner()
        self.proxy = build_proxy(
            self.config,
            self.clock,
            self.proxy.storage,
            lambda cfg: self.upstream,
            auth_run=self.held,
        )
        self.site = build_site(self.proxy)

    def send(self, data: bytes, peer: str = "127.0.0.1") -> StringTransport:
        """
        Open a connection from ``peer`` and send ``data``; a client that
        has its answer hangs up (or a flood from one address would meet
        the cap on its connections first).
        """
        protocol, transport = self.connect(peer)
        protocol.dataReceived(data)
        if parse_answer(transport.value()) is not None:
            protocol.connectionLost(Failure(ConnectionDone()))
        return transport

    def answer(self, transport: StringTransport) -> Answer:
        response = parse_answer(transport.value())
        assert response is not None, transport.value()
        return response


class MalformedRequestTests(ProxyHarness):
    def test_range_of_thousands_of_digits(self) -> None:
        """
        ``Range: bytes=<5000 digits>-`` on a file is unsatisfiable (416),
        and an end of 5000 digits is clamped (206); neither is a 500.
        """
        self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)
        path = f"/files/proto-alpha/{self.upstream_alpha.filename}"
        size = len(self.upstream_alpha.data)
        response, _ = self.get(path, range="bytes=" + "9" * 5000 + "-")
        self.assertEqual(response.code, 416)
        self.assertEqual(response.headers.getRawHeaders("content-range"), [f"bytes */{size}"])
        response, body = self.get(path, range="bytes=1-" + "9" * 5000)
        self.assertEqual((response.code, body), (206, self.upstream_alpha.data[1:]))

    def test_project_name_too_long_to_store(self) -> None:
        """
        Names of 201 to 255 bytes (valid, but too long for a stored page's
        file name) are 404 at once, without asking the upstream.
        """
        for length in (201, 251, 255):
            response, body = self.get(f"/simple/{'a' * length}/", accept=PIP_ACCEPT)
            self.assertEqual(response.code, 404, body)
            response, _ = self.get(f"/files/{'a' * length}/a-1.0.tar.gz")
            self.assertEqual(response.code, 404)
        self.assertEqual(self.index.count("/simple/"), 0)

    def test_head_on_upload_url(self) -> None:
        """
        HEAD (and GET) on the upload URLs are 405 naming the one method
        allowed; HEAD where GET works is still answered.
        """
        for path in ("/legacy/", "/legacy"):
            for method in ("HEAD", "GET", "PUT"):
                response, _ = self.request(method, path)
                self.assertEqual(response.code, 405, (method, path))
                self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])
        response, _ = self.request("HEAD", "/simple/proto-alpha/")
        self.assertEqual(response.code, 200)


class ReadOnlyStorageTests(ProxyHarness):
    def test_upload_to_read_only_storage(self) -> None:
        """
        When the spool directory cannot be written (nor anything in it
        removed), an upload gets 507 naming the reason, not an empty reply.
        """
        self.make_proxy(UnwritableSpool)
        storage = self.proxy.storage
        assert isinstance(storage, UnwritableSpool)
        storage.broken = True
        self.site = build_site(self.proxy)  # whose uploads spool in the broken tmp/
        response = self.upload(make_wheel("corp-lib", "1.0"))
        self.assertRefused(response, 507, "cannot store the upload here")
        self.assertFalse(self.proxy.private.is_private("corp-lib"))


class SpoolBeforeCredentialsTests(HeldLoginsHarness):
    """
    Item 1: no body byte reaches the disk before its credentials are
    checked, however long bcrypt takes.
    """

    def setUp(self) -> None:
        super().setUp()
        self.wheel = make_wheel("corp-lib", "1.0", payload_size=20_000)
        self.body = multipart(twine_fields(self.wheel), (self.wheel.filename, self.wheel.data))
        self.tmp = self.proxy.storage.tmp_dir

    def test_made_up_credentials_fill_nothing(self) -> None:
        """
        Twenty uploads with made-up credentials whose checks wait: nothing
        in tmp/ and every connection paused; once checked, 401 (or 503 for
        those past the queue's bound), and still nothing in tmp/.
        """
        transports = [
            self.send(self.head(len(self.body), auth=f"Basic mallory:guess{i}") + self.body)
            for i in range(20)
        ]
        self.assertEqual(os.listdir(self.tmp), [])
        # Past the bound of 16 waiting checks, the answer is known at once.
        states = [t.producerState for t in transports]
        self.assertEqual(states, ["paused"] * 16 + ["producing"] * 4)
        self.assertEqual(len(self.held.jobs), 16)
        self.held.run_all()
        codes = [self.answer(t).code for t in transports]
        self.assertEqual(codes, [401] * 16 + [503] * 4)
        self.assertEqual(os.listdir(self.tmp), [])

    def test_valid_upload_waits_for_its_check(self) -> None:
        """
        A valid upload is received once its check is done, and stored.
        """
        transport = self.send(self.head(len(self.body)) + self.body)
        self.assertEqual((os.listdir(self.tmp), transport.value()), ([], b""))
        self.held.run_all()
        self.assertEqual(self.answer(transport).code, 200)
        self.assertEqual(transport.producerState, "producing")
        self.assertTrue(self.proxy.private.is_private("corp-lib"))

    def test_continue_only_after_the_check(self) -> None:
        """
        ``Expect: 100-continue`` is answered once the credentials check
        out, not before: the client sends nothing until then.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(self.head(len(self.body), extra="Expect: 100-continue\r\n"))
        self.assertEqual(transport.value(), b"")
        self.held.run_all()
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        protocol.dataReceived(self.body)
        self.assertEqual(self.answer(transport).code, 200)


class LoginFloodTests(HeldLoginsHarness):
    """
    Item 2: a flood of wrong passwords neither queues without bound nor
    keeps valid users waiting behind it.
    """

    def ask(self, password: str, peer: str, user: str = "alice") -> StringTransport:
        """
        A request of the private-file API with these credentials, from ``peer``.
        """
        path = "/api/private/corp-lib"
        auth = f"Basic {user}:{password}"
        return self.send(self.head(0, method="GET", path=path, auth=auth, content_type=None), peer)

    def test_flood_of_wrong_passwords(self) -> None:
        """
        200 wrong passwords from one address: 16 wait for bcrypt, the rest
        get 503 with Retry-After at once.  Once they failed, that address
        gets 429 without any bcrypt until its minute is over, while another
        user's login is checked with nothing queued ahead of it.
        """
        attacker, user = "203.0.113.66", "198.51.100.7"
        flood = [self.ask(f"guess{i}", attacker) for i in range(200)]
        self.assertEqual(len(self.held.jobs), 16)
        busy = [self.answer(t) for t in flood[16:]]
        self.assertEqual({(a.code, a.headers["retry-after"]) for a in busy}, {(503, "1")})
        self.held.run_all()
        self.assertEqual({self.answer(t).code for t in flood[:16]}, {401})
        throttled = self.answer(self.ask("guess-again", attacker))
        self.assertEqual((throttled.code, throttled.headers["retry-after"]), (429, "60"))
        self.assertIn("too many failed logins", throttled.body.decode())
        valid = self.ask("secret", user)
        self.assertEqual(len(self.held.jobs), 1)
        self.held.run_all()
        self.assertRefused(self.answer(valid), 404, "not a private project")
        self.clock.advance(60)
        self.ask("guess-later", attacker)
        self.assertEqual(len(self.held.jobs), 1)

    def test_users_logged_in_pass_a_throttled_address(self) -> None:
        """
        With --auth-read, credentials that checked out recently are still
        accepted from an address that is throttled, with no bcrypt.
        """
        self.make_proxy(auth_read=True)
        peer = "203.0.113.66"
        page = self.head(0, method="GET", path="/simple/", content_type=None)
        self.assertEqual(self.answer(self.send(page, peer)).code, 200)
        for i in range(10):
            self.assertEqual(self.answer(self.ask(f"guess{i}", peer)).code, 401)
        self.assertEqual(self.answer(self.ask("guess", peer)).code, 429)
        self.assertEqual(self.answer(self.send(page, peer)).code, 200)

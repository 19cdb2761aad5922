"""
`proxypypi.private.logins.LoginGate`: the bound on waiting password checks
and the slow-down of client addresses that keep failing, on a Clock.
"""

from __future__ import annotations

import os

import attrs
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.private.auth import HtpasswdChecker
from proxypypi.private.logins import LoginGate, TryLater
from tests.support.auth import htpasswd_line
from tests.support.disk import HeldRunner


@attrs.define
class FakeChecker:
    """
    A checker with a settable count of waiting checks, remembering one
    password.
    """

    pending: int = 0
    remembered: bytes = b"remembered"

    def remembers(self, user: bytes, password: bytes) -> bool:
        return password == self.remembered


class GateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.checker = FakeChecker()
        self.gate = LoginGate(self.checker, self.clock, max_pending=4, max_failures=3, window=60)

    def admit(self, client: str | None = "192.0.2.1", password: bytes = b"x") -> TryLater | None:
        return self.gate.admit(b"alice", password, client)

    def test_queue_bound(self) -> None:
        """With as many checks waiting as allowed, the next gets 503 in a second."""
        self.checker.pending = 3
        self.assertIsNone(self.admit())
        self.checker.pending = 4
        later = self.admit()
        assert later is not None
        self.assertEqual((later.code, later.retry_after), (503, 1))

    def test_failing_address_waits_for_its_window(self) -> None:
        """
        Past the failures allowed, an address waits until its window ends,
        told how long; other addresses, and unknown ones, are not held up.
        """
        for _ in range(3):
            self.assertIsNone(self.admit())
            self.gate.failed("192.0.2.1")
        self.clock.advance(20)
        later = self.admit()
        assert later is not None
        self.assertEqual((later.code, later.retry_after), (429, 40))
        self.assertIsNone(self.admit("192.0.2.2"))
        self.assertIsNone(self.admit(None))
        self.clock.advance(39.5)
        self.assertEqual(self.admit().retry_after, 1)  # type: ignore[union-attr]
        self.clock.advance(0.5)
        self.assertIsNone(self.admit())

    def test_failures_spread_out_are_forgiven(self) -> None:
        """Failures in different windows do not add up."""
        for _ in range(5):
            self.gate.failed("192.0.2.1")
            self.gate.failed("192.0.2.1")
            self.clock.advance(61)
        self.assertIsNone(self.admit())

    def test_remembered_credentials_always_pass(self) -> None:
        """Credentials that need no bcrypt pass a full queue and a throttled address."""
        self.checker.pending = 100
        for _ in range(5):
            self.gate.failed("192.0.2.1")
        self.assertIsNone(self.admit(password=b"remembered"))

    def test_addresses_remembered_are_bounded(self) -> None:
        """Countless failing addresses cost bounded memory: the oldest are forgotten."""
        gate = LoginGate(self.checker, self.clock, max_failures=1, max_clients=10)
        for i in range(100):
            gate.failed(f"10.0.0.{i}")
        self.assertIsNone(gate.admit(b"alice", b"x", "10.0.0.0"))
        self.assertIsNotNone(gate.admit(b"alice", b"x", "10.0.0.99"))


class CheckerQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(htpasswd_line("alice", "secret"))
        self.held = HeldRunner()
        self.clock = Clock()
        self.checker = HtpasswdChecker(path, self.held, self.clock)

    def test_same_credentials_share_one_check(self) -> None:
        """
        Ten requests with the same credentials at once (pip with
        --auth-read) wait for one bcrypt, and count as one pending check.
        """
        ds = [
            self.checker.requestAvatarId(UsernamePassword(b"alice", b"secret")) for _ in range(10)
        ]
        wrong = self.checker.requestAvatarId(UsernamePassword(b"alice", b"other"))
        self.assertEqual((len(self.held.jobs), self.checker.pending), (2, 2))
        self.assertFalse(self.checker.remembers(b"alice", b"secret"))
        self.held.run_all()
        self.assertEqual({self.successResultOf(d) for d in ds}, {b"alice"})
        self.failureResultOf(wrong, UnauthorizedLogin)
        self.assertEqual(self.checker.pending, 0)
        self.assertTrue(self.checker.remembers(b"alice", b"secret"))
        self.clock.advance(301)
        self.assertFalse(self.checker.remembers(b"alice", b"secret"))

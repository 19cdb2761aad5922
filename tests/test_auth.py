"""
The htpasswd checker, the portal around it and HTTP Basic parsing.

Timing is checked by construction rather than with a stopwatch: an unknown
user and a wrong password must each cost exactly one bcrypt verification
of the same cost.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.private import auth
from proxypypi.private.auth import (
    Authenticator,
    AuthFileError,
    HtpasswdChecker,
    User,
    parse_basic,
    parse_htpasswd,
)
from proxypypi.service.tap import Options
from tests.support.auth import counting_checkpw, htpasswd_line
from tests.support.disk import HeldRunner, sync_run


class CheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.path = os.path.abspath(self.mktemp())
        self.write(htpasswd_line("alice", "secret") + htpasswd_line("bob", "hunter2"))
        self.calls: list[bytes] = []
        self.checker = HtpasswdChecker(
            self.path, sync_run, self.clock, verify=counting_checkpw(self.calls)
        )
        self.checker.load()

    def write(self, content: bytes) -> None:
        """
        Replace the file the way htpasswd and editors do (a new inode).
        """
        tmp = self.path + ".new"
        with open(tmp, "wb") as f:
            f.write(content)
        os.replace(tmp, self.path)

    def check(self, user: str, password: str | bytes) -> Deferred[Any]:
        raw = password if isinstance(password, bytes) else password.encode()
        return self.checker.requestAvatarId(UsernamePassword(user.encode(), raw))

    def test_valid(self) -> None:
        """A right password gives the user name."""
        self.assertEqual(self.successResultOf(self.check("alice", "secret")), b"alice")

    def test_wrong_password_and_unknown_user_alike(self) -> None:
        """
        Both fail the same way after one bcrypt of the same cost; the
        unknown user is checked against a dummy hash.
        """
        f1 = self.failureResultOf(self.check("alice", "wrong"), UnauthorizedLogin)
        f2 = self.failureResultOf(self.check("mallory", "secret"), UnauthorizedLogin)
        self.assertEqual(str(f1.value), str(f2.value))
        self.assertEqual(len(self.calls), 2)
        real, dummy = self.calls
        self.assertEqual(real[3:7], dummy[3:7])  # bcrypt of the same cost
        with open(self.path, "rb") as f:
            self.assertNotIn(dummy, f.read())

    def test_runs_through_runner(self) -> None:
        """bcrypt never runs on the caller's thread: the runner decides."""
        runner = HeldRunner()
        checker = HtpasswdChecker(
            self.path, runner, self.clock, verify=counting_checkpw(self.calls)
        )
        d = checker.requestAvatarId(UsernamePassword(b"bob", b"hunter2"))
        self.assertNoResult(d)
        self.assertEqual(self.calls, [])
        runner.run_all()
        self.assertEqual(self.successResultOf(d), b"bob")

    def test_success_remembered(self) -> None:
        """
        A successful check is remembered (twine's next files, an installer's
        next requests) until it expires; wrong passwords always pay.
        """
        self.successResultOf(self.check("alice", "secret"))
        self.successResultOf(self.check("alice", "secret"))
        self.failureResultOf(self.check("alice", "secret!"), UnauthorizedLogin)
        self.assertEqual(len(self.calls), 2)
        self.clock.advance(auth.CACHE_SECONDS + 1)
        self.successResultOf(self.check("alice", "secret"))
        self.assertEqual(len(self.calls), 3)

    def test_file_changes_apply_at_once(self) -> None:
        """
        Adding a user or changing a password needs no restart, and a
        remembered password stops working as soon as the file changes.
        """
        self.successResultOf(self.check("alice", "secret"))
        self.write(htpasswd_line("alice", "new-secret") + htpasswd_line("carol", "pw"))
        self.failureResultOf(self.check("alice", "secret"), UnauthorizedLogin)
        self.successResultOf(self.check("alice", "new-secret"))
        self.successResultOf(self.check("carol", "pw"))
        self.failureResultOf(self.check("bob", "hunter2"), UnauthorizedLogin)

    def test_missing_file(self) -> None:
        """A missing file stops start-up with a clear message; later it refuses all."""
        os.unlink(self.path)
        self.failureResultOf(self.check("alice", "secret"), UnauthorizedLogin)
        with self.assertRaises(AuthFileError) as caught:
            HtpasswdChecker(self.path, sync_run, self.clock).load()
        self.assertIn("proxypypi-admin adduser", str(caught.exception))

    def test_long_password(self) -> None:
        """Like htpasswd -B, only the first 72 bytes of a password count."""
        self.write(htpasswd_line("long", "a" * 72))
        self.successResultOf(self.check("long", b"a" * 80))
        self.failureResultOf(self.check("long", b"a" * 71), UnauthorizedLogin)

    def test_portal(self) -> None:
        """Through the portal, a login gives a User avatar."""
        authenticator = Authenticator.from_htpasswd(self.path, sync_run, self.clock)
        creds = UsernamePassword(b"bob", b"hunter2")
        iface, avatar, logout = self.successResultOf(
            authenticator.portal.login(creds, None, auth.IUser)
        )
        self.assertEqual((iface, avatar), (auth.IUser, User("bob")))


class ParseTests(SynchronousTestCase):
    def test_htpasswd(self) -> None:
        """bcrypt entries in every prefix are read; other schemes are refused."""
        y = htpasswd_line("a", "x").strip()
        b = y.replace(b"$2y$", b"$2b$")
        data = b"\n".join(
            [
                b"# comment",
                y,
                b"",
                b"b" + b[1:],
                b"md5user:$apr1$abc$defghijklmnopqrstuvwx.",
                b"sha:{SHA}abc=",
                y.replace(b"a:", b"a:other"),
            ]
        )
        entries, refused = parse_htpasswd(data)
        self.assertEqual(sorted(entries), [b"a", b"b"])
        self.assertEqual(entries[b"a"], y[2:])
        self.assertEqual(refused, [b"md5user", b"sha"])

    def test_basic(self) -> None:
        """Only well-formed Basic credentials are taken."""
        good = parse_basic(b"basic YWxpY2U6czpl")
        assert good is not None
        self.assertEqual((good.username, good.password), (b"alice", b"s:e"))
        for bad in (None, b"", b"Bearer x", b"Basic !!!", b"Basic YWxpY2U=", b"Basic OnB3"):
            self.assertIsNone(parse_basic(bad), bad)


class StartupTests(SynchronousTestCase):
    def refusal(self, *options: str) -> str:
        """
        Why the plugin refuses ``options`` given after a storage and an
        upstream.
        """
        with self.assertRaises(SystemExit) as e:
            Options().parseOptions(
                ["--storage", self.mktemp(), "--upstream", "http://u.example/simple/", *options]
            )
        return str(e.exception)

    def test_auth_read_needs_auth_file(self) -> None:
        """--auth-read without users would lock everyone out: refused at start."""
        self.assertIn("--auth-file", self.refusal("--auth-read"))

    def test_unreadable_auth_file(self) -> None:
        """A missing auth file stops twistd with the fix in the message."""
        self.assertIn("proxypypi-admin adduser", self.refusal("--auth-file", self.mktemp()))

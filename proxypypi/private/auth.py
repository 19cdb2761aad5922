# -*- test-case-name: tests.test_auth -*-
"""
Who may upload (and, with ``--auth-read``, read): users of an htpasswd file,
checked through ``twisted.cred``.

The file holds ``user:hash`` lines with bcrypt hashes, exactly as
``htpasswd -B`` writes them (``$2y$``; ``$2a$`` and ``$2b$`` are the same
algorithm).  It is read again whenever it changes on disk, so operators add
or remove users without a restart.

Three properties matter more than the mechanics:

- **No hint.**  Every failure is the same `UnauthorizedLogin`; an unknown
  user costs one bcrypt verification against a dummy hash of the usual cost,
  so the time taken does not tell unknown users from wrong passwords.
- **No blocked reactor.**  bcrypt takes milliseconds to a quarter second by
  design; it always runs through the injected runner (a small thread pool
  of its own in the service, so a flood of bad passwords cannot starve the
  disk threads).
- **No needless bcrypt.**  twine sends the same credentials for every file
  of an upload, and with ``--auth-read`` an installer sends them with every
  request.  A successful check is remembered for a few minutes, keyed by a
  keyed hash of user and password (the password itself is never kept), and
  forgotten as soon as the file changes; requests with the same
  credentials at once share one check.  How many checks may wait, and who
  must wait first, is `proxypypi.private.logins`'s to say.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import Attribute, Interface, implementer

from proxypypi.cache.storage import Runner
from proxypypi.private.logins import LoginGate, TryLater
from proxypypi.waiting import SingleFlight

#: The realm named in ``WWW-Authenticate``.
REALM = "proxypypi"

#: bcrypt looks at the first 72 bytes of a password; ``htpasswd -B`` (like
#: every crypt_blowfish) silently ignores the rest, and so do we.
BCRYPT_MAX_PASSWORD = 72

#: The hash prefixes of bcrypt; Apache writes ``$2y$``.
_BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")

#: Seconds a successful check is remembered.
CACHE_SECONDS = 300.0

#: Successful checks remembered at most (oldest dropped first).
CACHE_ENTRIES = 1024

#: Cost of the dummy hash when the file has no bcrypt entry to copy.
_DEFAULT_COST = 10

#: Checks a password against a bcrypt hash (`bcrypt.checkpw`).
Verify = Callable[[bytes, bytes], bool]


class AuthFileError(Exception):
    """
    The htpasswd file cannot be used; the message says why and how to fix it.
    """


class IUser(Interface):
    """
    The avatar of an authenticated request: who is asking.
    """

    name = Attribute("The user name, as written in the htpasswd file.")


@implementer(IUser)
@attrs.frozen
class User:
    """
    An authenticated user.
    """

    name: str


@implementer(IRealm)
class UserRealm:
    """
    Turns an avatar id (the user name the checker vouched for) into a
    `User`.  There is nothing to log out of.
    """

    def requestAvatar(self, avatarId: bytes | tuple[()], mind: object, *interfaces: Any) -> Any:
        if IUser not in interfaces or not isinstance(avatarId, bytes):
            raise NotImplementedError("only IUser avatars of named users are offered")
        return IUser, User(avatarId.decode("utf-8", "replace")), lambda: None


def parse_htpasswd(data: bytes) -> tuple[dict[bytes, bytes], list[bytes]]:
    """
    The bcrypt entries of an htpasswd file, and the users whose entries use
    another scheme (MD5, SHA1, crypt), which are refused.

    Blank lines and ``#`` comments are skipped; a user listed twice keeps
    the first entry, as Apache does.
    """
    entries: dict[bytes, bytes] = {}
    refused: list[bytes] = []
    for raw in data.splitlines():
        line = raw.strip()
        if not line or line.startswith(b"#") or b":" not in line:
            continue
        user, _, hashed = line.partition(b":")
        if user in entries or user in refused:
            continue
        if hashed.startswith(_BCRYPT_PREFIXES) and len(hashed) == 60:
            entries[user] = hashed
        else:
            refused.append(user)
    return entries, refused


def _cost(hashed: bytes) -> int | None:
    try:
        return int(hashed[4:6])
    except ValueError:
        return None


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    """
    What identifies one version of the file: replacing it (a rename, as
    editors and ``htpasswd`` do) changes the inode, editing it in place
    changes size or mtime.
    """
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@attrs.define(eq=False)
class _Users:
    """
    The file as last read (only touched under the checker's lock).
    """

    signature: tuple[int, int, int, int] | None = None
    entries: dict[bytes, bytes] = attrs.field(factory=dict)
    dummy: bytes = b""


@implementer(ICredentialsChecker)
@attrs.define(eq=False)
class HtpasswdChecker:
    """
    Checks user names and passwords against an htpasswd file of bcrypt
    entries.

    :ivar path: the htpasswd file.
    :ivar run: runs the blocking verification off the reactor thread.
    :ivar clock: for the expiry of remembered checks.
    :ivar cache_seconds: how long a successful check is remembered.
    :ivar verify: checks a password against a hash; `bcrypt.checkpw`, or
        a function that counts the verifications (tests).
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    path: str
    run: Runner
    clock: IReactorTime
    cache_seconds: float = CACHE_SECONDS
    verify: Verify = attrs.field(default=bcrypt.checkpw, kw_only=True)
    _users: _Users = attrs.field(factory=_Users, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _key: bytes = attrs.field(factory=lambda: os.urandom(32), init=False)
    _remembered: OrderedDict[bytes, tuple[float, tuple[int, int, int, int]]] = attrs.field(
        factory=OrderedDict, init=False
    )
    #: Checks running or queued, by cache key: the same credentials sent
    #: by several requests at once cost one bcrypt.
    _flights: SingleFlight[bytes, Any] = attrs.field(factory=SingleFlight, init=False)

    def load(self) -> int:
        """
        Read the file now (blocking; for start-up, where a bad file should
        stop the service with a clear message).

        :returns: how many users may log in.
        :raises AuthFileError: when the file cannot be read.
        """
        try:
            with self._lock:
                self._reload()
        except OSError as e:
            raise AuthFileError(
                f"cannot read the auth file {self.path!r} ({e.strerror}); create it with "
                "'proxypypi-admin adduser USER --auth-file FILE' or fix --auth-file"
            ) from e
        return len(self._users.entries)

    def _reload(self) -> tuple[int, int, int, int]:
        """
        Read the file again if it changed.  Called with the lock held, in a
        thread (or at start-up).

        :raises OSError: when it cannot be read.
        """
        with open(self.path, "rb") as f:
            signature = _signature(os.fstat(f.fileno()))
            if signature == self._users.signature:
                return signature
            data = f.read()
        entries, refused = parse_htpasswd(data)
        for user in refused:
            self.log.warn(
                "auth file {path}: {user} has no bcrypt entry and cannot log in; "
                "set it again with 'proxypypi-admin adduser {user} --auth-file {path}'",
                path=self.path,
                user=user.decode("utf-8", "replace"),
            )
        if not entries:
            self.log.warn("auth file {path} has no usable (bcrypt) entry", path=self.path)
        costs = Counter(c for c in map(_cost, entries.values()) if c is not None)
        # The dummy costs what most real entries cost, so an unknown user
        # takes as long as a known one with a wrong password.
        cost = max(costs.most_common(), key=lambda item: (item[1], item[0]))[0] if costs else None
        cost = min(max(cost or _DEFAULT_COST, 4), 31)
        dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost))
        self._users = _Users(signature, entries, dummy)
        self.log.info(
            "auth file {path}: {count} users", path=self.path, count=len(self._users.entries)
        )
        return signature

    def _verify(self, user: bytes, password: bytes) -> tuple[int, int, int, int] | None:
        """
        Check one user and password (blocking: runs in a thread).

        :returns: the signature of the file that vouched for the user, or
            ``None`` when the check failed, whatever the reason.
        """
        with self._lock:
            try:
                signature = self._reload()
            except OSError as e:
                self.log.error(
                    "cannot read the auth file {path} ({error}); refusing every login",
                    path=self.path,
                    error=e.strerror,
                )
                return None
            users = self._users
        hashed = users.entries.get(user)
        candidate = password[:BCRYPT_MAX_PASSWORD]
        try:
            ok = self.verify(candidate, hashed if hashed is not None else users.dummy)
        except ValueError:
            ok = False
        return signature if ok and hashed is not None else None

    def _cache_key(self, user: bytes, password: bytes) -> bytes:
        message = len(user).to_bytes(4, "big") + user + password
        return hashlib.blake2b(message, key=self._key, digest_size=32).digest()

    def _current_signature(self) -> tuple[int, int, int, int] | None:
        try:
            return _signature(os.stat(self.path))
        except OSError:
            return None

    @property
    def pending(self) -> int:
        """
        Password checks waiting for a thread or running.
        """
        return self._flights.count()

    def remembers(self, user: bytes, password: bytes) -> bool:
        """
        Whether these credentials checked out recently: checking them again
        costs no bcrypt.
        """
        remembered = self._remembered.get(self._cache_key(user, password))
        return remembered is not None and remembered[0] > self.clock.seconds()

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        """
        Vouch for the user name when the password matches.

        :returns: a Deferred firing with the user name, or failing with
            `UnauthorizedLogin` (always the same, whatever went wrong).
        """
        user = bytes(credentials.username)
        password = bytes(credentials.password)
        key = self._cache_key(user, password)
        remembered = self._remembered.get(key)
        if remembered is not None:
            until, signature = remembered
            if until > self.clock.seconds() and signature == self._current_signature():
                return succeed(user)
            del self._remembered[key]

        def checked(signature: tuple[int, int, int, int] | None) -> bytes:
            if signature is None:
                raise UnauthorizedLogin()
            self._remembered[key] = (self.clock.seconds() + self.cache_seconds, signature)
            self._remembered.move_to_end(key)
            while len(self._remembered) > CACHE_ENTRIES:
                self._remembered.popitem(last=False)
            return user

        d = self._flights.run(key, lambda: self.run(self._verify, user, password))
        result: Deferred[bytes | tuple[()]] = d.addCallback(checked)
        return result


def check_auth_file(path: str) -> int:
    """
    Read an htpasswd file once, as a start-up check (blocking).

    :returns: how many users may log in.
    :raises AuthFileError: when it cannot be read.
    """

    def no_runner(*args: Any) -> Deferred[Any]:
        raise AssertionError("a start-up check verifies no password")

    return HtpasswdChecker(path, no_runner, Clock()).load()


def parse_basic(header: bytes | None) -> UsernamePassword | None:
    """
    The credentials of an ``Authorization: Basic`` header, or ``None`` when
    there are none or they are malformed.
    """
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon or not user:
        return None
    return UsernamePassword(user, password)


@attrs.define(eq=False)
class Authenticator:
    """
    HTTP Basic authentication of requests against a `Portal`.
    """

    portal: Portal
    realm: str = REALM
    #: Bounds the logins waiting for bcrypt and slows down clients that
    #: keep failing; none: every login is checked.
    gate: LoginGate | None = None
    log = Logger()

    @classmethod
    def from_htpasswd(
        cls,
        path: str,
        run: Runner,
        clock: IReactorTime,
        *,
        load: bool = True,
        verify: Verify = bcrypt.checkpw,
    ) -> Authenticator:
        """
        The usual set-up: one `HtpasswdChecker` behind a `UserRealm`.

        :param load: read the file now, so a missing file stops start-up.
        :param verify: the checker's `HtpasswdChecker.verify`.
        :raises AuthFileError: when ``load`` and the file cannot be read.
        """
        checker = HtpasswdChecker(path, run, clock, verify=verify)
        if load:
            checker.load()
        return cls(Portal(UserRealm(), [checker]), gate=LoginGate(checker, clock))

    def authenticate(
        self, request: IRequest, client: str | None = None
    ) -> Deferred[User | TryLater | None]:
        """
        Who sent ``request``: the `User` when its Basic credentials are
        valid, ``None`` otherwise (missing, malformed or wrong alike), or
        `TryLater` when they could not be checked now.  Fires synchronously
        for credentials checked recently.

        :param client: the client's address, for the gate's count of
            failures.
        """
        credentials = parse_basic(request.getHeader(b"authorization"))
        if credentials is None:
            return succeed(None)
        gate = self.gate
        if gate is not None:
            later = gate.admit(credentials.username, credentials.password, client)
            if later is not None:
                return succeed(later)

        def logged_in(result: tuple[Any, Any, Any]) -> User | None:
            _interface, avatar, _logout = result
            return avatar if isinstance(avatar, User) else None

        def refused(failure: Any) -> None:
            if not failure.check(UnauthorizedLogin):
                self.log.failure("error while checking credentials", failure)
            elif gate is not None:
                gate.failed(client)
            return None

        d: Deferred[Any] = self.portal.login(credentials, None, IUser)
        return d.addCallbacks(logged_in, refused)

    def challenge(self) -> bytes:
        """
        The ``WWW-Authenticate`` value of a 401.
        """
        return f'Basic realm="{self.realm}", charset="UTF-8"'.encode()

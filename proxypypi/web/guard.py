# -*- test-case-name: tests.test_auth -*-
"""
Authentication on the web side: the ``401`` answer, the check that guards
every read with ``--auth-read``, and the caching headers that must change
when responses depend on who asked.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET

from proxypypi.internals import request_gone
from proxypypi.private.auth import Authenticator, User
from proxypypi.private.logins import TryLater
from proxypypi.web.address import client_key
from proxypypi.web.body import NOT_CHECKED, reason_phrase
from proxypypi.web.deferred import render_async
from proxypypi.web.errors import error
from proxypypi.web.proxy import Proxy

#: The one answer to missing, malformed and wrong credentials alike.
UNAUTHORIZED = "valid credentials required (user name and password of this index)"

#: The answer to writes when no auth file was given.
UPLOADS_DISABLED = (
    "uploads are disabled on this index; start it with --auth-file FILE, an htpasswd "
    "file of bcrypt entries (proxypypi-admin adduser USER --auth-file FILE)"
)


def answer(request: IRequest, code: int, message: str) -> bytes:
    """
    A one-line error whose message is also the status line's reason
    phrase (twine and uv show that to their users).
    """
    body = error(request, code, message)
    request.setResponseCode(code, reason_phrase(message))
    return body


def unauthorized(request: IRequest, auth: Authenticator | None) -> bytes:
    """
    ``401`` with the Basic challenge; it never says what was wrong.
    """
    if auth is not None:
        request.setHeader(b"www-authenticate", auth.challenge())
    return answer(request, 401, UNAUTHORIZED)


def refused(request: IRequest, auth: Authenticator | None, verdict: object) -> bytes:
    """
    The answer to a request whose credentials did not give a `User`:
    ``401``, or, when they could not be checked now, the `TryLater`
    answer with its ``Retry-After``.
    """
    if isinstance(verdict, TryLater):
        request.setHeader(b"retry-after", b"%d" % verdict.retry_after)
        return answer(request, verdict.code, verdict.message)
    return unauthorized(request, auth)


def check_credentials(proxy: Proxy, request: IRequest) -> Deferred[User | TryLater | None]:
    """
    What the credentials of ``request`` give (see `Authenticator.authenticate`);
    failures count against the client's address.
    """
    if proxy.auth is None:
        return succeed(None)
    return proxy.auth.authenticate(request, client_key(request, proxy.config.trusted_proxies))


def writer(proxy: Proxy, request: IRequest) -> Deferred[User | bytes]:
    """
    Who may change things with ``request``: the `User`, or the error body
    to send (``403`` when uploads are disabled, ``401`` or a `TryLater`
    answer otherwise).
    """
    auth = proxy.auth
    if auth is None:
        return succeed(answer(request, 403, UPLOADS_DISABLED))

    def checked(user: object) -> User | bytes:
        return user if isinstance(user, User) else refused(request, auth, user)

    # Checked already while the body arrived (SpoolingRequest): no second bcrypt.
    early = getattr(request, "checked_user", NOT_CHECKED)
    if early is not NOT_CHECKED:
        return succeed(checked(early))
    return check_credentials(proxy, request).addCallback(checked)


def cache_scope(proxy: Proxy) -> str:
    """
    ``private`` when reads need credentials (a shared cache must not hand
    one user's response to another), ``public`` otherwise.
    """
    return "private" if proxy.config.auth_read else "public"


class ReadGuard(Resource):
    """
    Lets a request through to ``wrapped`` only with valid credentials;
    ``401`` otherwise.  Traversal below ``wrapped`` continues once the
    check is done (it is synchronous for credentials checked recently).
    """

    isLeaf = True

    def __init__(self, wrapped: IResource, proxy: Proxy) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.proxy = proxy

    def render(self, request: IRequest) -> int:
        async def check() -> bytes | int:
            if self.proxy.auth is None:
                return answer(request, 403, "reads need credentials, but no --auth-file is set")
            user = await check_credentials(self.proxy, request)
            if not isinstance(user, User):
                return refused(request, self.proxy.auth, user)
            if request_gone(request):
                return NOT_DONE_YET
            request.render(getChildForRequest(self.wrapped, request))  # type: ignore[attr-defined]
            return NOT_DONE_YET

        return render_async(request, check)


def guard_reads(proxy: Proxy, resource: IResource) -> IResource:
    """
    ``resource`` itself, or behind a `ReadGuard` with ``--auth-read``.
    """
    if not proxy.config.auth_read:
        return resource
    return ReadGuard(resource, proxy)

"""
Error answers: one line of plain text that names the problem.

Installers show the status line and the body to their users, so the body
says what went wrong and, where there is one, what to do about it.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from proxypypi.text import printable


def error(request: IRequest, code: int, message: str) -> bytes:
    """
    Set up an error response and return its body: one line of plain text
    (control characters escaped, `printable`), whatever was
    set up for the response it replaces (a gzip form's ``Content-Encoding``
    or a file's ``ETag`` would misdescribe it).
    """
    request.setResponseCode(code)
    for name in (b"content-encoding", b"etag", b"accept-ranges", b"content-range"):
        request.responseHeaders.removeHeader(name)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    # The message may quote an upstream's URL or reason: shown escaped.
    body = (printable(message.rstrip()) + "\n").encode("utf-8")
    request.setHeader(b"content-length", str(len(body)).encode())
    return body


def raw_response(code: int, phrase: str, message: str, *, retry_after: int | None = None) -> bytes:
    """
    A whole one-line error response as bytes, for answers written straight
    to a connection, before or instead of any request (a body refused
    while it arrives, a late head, a connection over a cap); the
    connection is closed after it.
    """
    body = (message + "\n").encode("utf-8")
    retry = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    head = (
        f"HTTP/1.1 {code} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Cache-Control: no-store\r\n"
        f"{retry}Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def redirect(request: IRequest, location: str) -> bytes:
    """
    A permanent redirect to ``location`` (relative, so it survives any
    path prefix a reverse proxy adds), keeping the request's query string.
    """
    query = request.uri.partition(b"?")[2]
    target = location.encode("utf-8") + (b"?" + query if query else b"")
    request.setResponseCode(301)
    request.setHeader(b"location", target)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"moved to " + target + b"\n"


class ErrorResource(Resource):
    """
    A leaf that answers every method with one error.
    """

    isLeaf = True

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self.code = code
        self.message = message

    def render(self, request: IRequest) -> bytes:
        return error(request, self.code, self.message)


#: `_allowed_methods` by class.
_ALLOWED: dict[type, tuple[str, ...]] = {}


def _allowed_methods(kind: type) -> tuple[str, ...]:
    """
    The methods a kind of resource answers, from its ``render_*`` methods
    (once per class: ``dir`` is slow, and this is on every request).
    twisted.web's Resource defines ``render_HEAD`` as "render_GET", even
    on resources without one: HEAD is answered exactly when GET is.
    """
    known = _ALLOWED.get(kind)
    if known is None:
        allowed = sorted(
            name[len("render_") :]
            for name in dir(kind)
            if name.startswith("render_") and name != "render_HEAD"
        )
        known = _ALLOWED[kind] = (*allowed, "HEAD") if "GET" in allowed else tuple(allowed)
    return known


class Page(Resource):
    """
    A resource whose unsupported methods get a one-line 405 (twisted.web's
    own answer is a deprecated, unescaped HTML page).
    """

    def render(self, request: IRequest) -> bytes | int:
        method = request.method.decode("ascii", "replace")
        allowed = _allowed_methods(type(self))
        handler = getattr(self, "render_" + method, None) if method in allowed else None
        if handler is None:
            request.setHeader(b"allow", ", ".join(allowed).encode())
            return error(request, 405, f"{method} is not allowed here; use {', '.join(allowed)}")
        result: bytes | int = handler(request)
        return result

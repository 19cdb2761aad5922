"""
Error answers: one line of plain text that names the problem.

Installers show the status line and the body to their users, so the body
says what went wrong and, where there is one, what to do about it.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource


def error(request: IRequest, code: int, message: str) -> bytes:
    """
    Set up an error response and return its body.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    body = (message.rstrip() + "\n").encode("utf-8")
    request.setHeader(b"content-length", str(len(body)).encode())
    return body


def redirect(request: IRequest, location: str) -> bytes:
    """
    A permanent redirect to C{location} (relative, so it survives any
    path prefix a reverse proxy adds).
    """
    request.setResponseCode(301)
    request.setHeader(b"location", location.encode("utf-8"))
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"moved to " + location.encode("utf-8") + b"\n"


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

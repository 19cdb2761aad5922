"""
Glue between twisted.web's synchronous ``render`` and our Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET, Request

from proxypypi.web.errors import error

log = Logger()


def render_async(request: IRequest, work: Callable[[], Coroutine[Any, Any, bytes | int]]) -> int:
    """
    Run ``work`` and send what it returns: bytes to write and finish, or
    ``NOT_DONE_YET`` when it took over the request (a producer).  An
    unexpected exception becomes a 500 with a one-line body, never a
    traceback for the client.
    """
    gone: list[bool] = []
    cast(Request, request).notifyFinish().addErrback(lambda _: gone.append(True))

    def send(result: bytes | int) -> None:
        if gone or result == NOT_DONE_YET:
            return
        assert isinstance(result, bytes)
        request.write(result)
        request.finish()

    def failed(f: Failure) -> None:
        log.failure("error while answering {uri}", f, uri=request.uri)
        if not gone and not getattr(request, "startedWriting", False):
            send(error(request, 500, "internal error; see the proxy's log"))

    Deferred.fromCoroutine(work()).addCallbacks(send, failed)
    return NOT_DONE_YET


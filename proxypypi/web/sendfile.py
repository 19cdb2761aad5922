# -*- test-case-name: tests.test_sendfile -*-
"""
Complete files sent by the kernel: ``os.sendfile`` from the file straight
to a plain TCP socket.

twisted.web has no sendfile (twisted/twisted#11395), so every byte of a
cached file would otherwise be read into Python and written out again,
which halves throughput on large files.  For a complete file on a plain
(non-TLS) TCP connection, `SendfileProducer` takes over the connection's
writability callback for the length of the body: the headers already
queued in Twisted's buffer are flushed the normal way first, then each
time the socket can take more, ``os.sendfile`` moves as much as the socket
buffer accepts, without a copy through user space.  Anything else (TLS,
in-memory transports in tests, a file still downloading) uses
`proxypypi.web.producers.TailProducer`.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.internet import main, tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from proxypypi.interfaces import IFileSource
from proxypypi.internals import buffered, release_writes, take_over_writes

#: Bytes offered to the kernel per call; it sends what the socket takes.
SEND_CHUNK = 16 * 1024 * 1024


def can_sendfile(request: Any, source: IFileSource) -> bool:
    """
    Whether ``request``'s body can be sent with ``os.sendfile``: the file is
    complete and the connection is a plain TCP socket of the reactor.
    """
    transport = getattr(getattr(request, "channel", None), "transport", None)
    return (
        source.is_complete()
        and type(transport) is tcp.Server
        and not getattr(transport, "TLS", False)
        and hasattr(os, "sendfile")
    )


@implementer(IPushProducer)
@attrs.define(eq=False)
class SendfileProducer:
    """
    Send bytes ``[start, end)`` of a complete file as a response body.

    Registered with the request as a streaming producer so that the request
    machinery knows a body is in progress; Twisted never has to pause it,
    since nothing accumulates in Twisted's buffer.
    """

    request: Any
    source: IFileSource
    clock: IReactorTime
    start: int
    end: int
    stall_timeout: float = 300.0
    log = Logger()

    _fd: int | None = None
    _offset: int = 0
    _transport: Any = None
    _timer: IDelayedCall | None = None
    _finished: bool = False

    def begin(self) -> None:
        """
        Open the file and start sending.

        :raises OSError: when the file cannot be opened (nothing was sent).
        """
        self._fd = self.source.open()
        self._offset = self.start
        self._transport = self.request.channel.transport
        self.request.registerProducer(self, True)
        self.request.write(b"")  # status line and headers, into Twisted's buffer
        if self._offset >= self.end:
            self._complete()
            return
        take_over_writes(self._transport, self._do_write)
        self._transport.startWriting()
        self._timer = self.clock.callLater(self.stall_timeout, self._stalled)

    def _do_write(self) -> object:
        t = self._transport
        if buffered(t) or t.disconnecting:
            result = type(t).doWrite(t)
            if result is not None or buffered(t) or t.disconnecting:
                return result
            t.startWriting()  # the flush above may have stopped writing
        assert self._fd is not None
        try:
            sent = os.sendfile(
                t.fileno(), self._fd, self._offset, min(SEND_CHUNK, self.end - self._offset)
            )
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        if sent == 0:
            self.log.error(
                "file for {uri} ended at byte {offset} before {end}",
                uri=self.request.uri,
                offset=self._offset,
                end=self.end,
            )
            return main.CONNECTION_LOST
        self._offset += sent
        self.request.sentLength += sent
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.stall_timeout)
        if self._offset >= self.end:
            self._complete()
        return None

    def _release(self) -> None:
        t = self._transport
        if t is not None and release_writes(t, self._do_write) and not buffered(t):
            t.stopWriting()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _complete(self) -> None:
        self._release()
        if not self._finished:
            self._finished = True
            self.request.unregisterProducer()
            self.request.finish()

    def _stalled(self) -> None:
        self._timer = None
        self.log.info("client of {uri} stopped reading; closing", uri=self.request.uri)
        self._release()
        self._transport.abortConnection()

    # IPushProducer: nothing accumulates in Twisted's buffer, so pausing
    # never needs to do anything; the socket's own readiness paces us.

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self._finished = True
        self._release()

# -*- test-case-name: tests.test_producers -*-
"""
Streaming a file that may still be growing to one HTTP client.

Every client gets its own `TailProducer` with its own file descriptor and
offset, reading with ``os.pread``: the file on disk is the only buffer, so a
slow client costs no memory and never slows the download, and readers never
disturb one another (``STYLE.md`` §2.b.4).

It is a push producer, not a pull producer, because it must be able to wait
for bytes that have not been downloaded yet; a pull producer cannot wait
(``STYLE.md`` §2.b.3).

A file that is already complete, on a plain TCP connection, goes out with
``os.sendfile`` instead (`proxypypi.web.sendfile`): the kernel copies it,
which this producer cannot do while the file may still grow.
"""

from __future__ import annotations

import enum
import os
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from proxypypi.interfaces import IFileSource, IFileSourceListener

__all__ = ["CHUNK_SIZE", "DEFAULT_STALL_TIMEOUT", "StreamingRequest", "TailProducer"]

#: Bytes read and written per step; matches the transport's 64 KiB buffer,
#: beyond which larger chunks measured no faster (``STYLE.md`` §2.f).
CHUNK_SIZE = 64 * 1024

#: Seconds without progress after which a response is abandoned.
DEFAULT_STALL_TIMEOUT = 300.0


class StreamingRequest(Protocol):
    """
    The parts of ``twisted.web.http.Request`` a `TailProducer` uses.

    ``IRequest`` does not declare the consumer methods or ``notifyFinish``,
    so this names exactly what is needed; every ``http.Request`` provides it.
    The connection is reached through the request's ``transport`` attribute,
    looked up with ``getattr`` because not every request has one.
    """

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...


class _State(enum.Enum):
    #: Created; `TailProducer.start` not called yet.
    NEW = "new"
    #: Registered with the request and sending.
    STREAMING = "streaming"
    #: Finished, aborted, or the client went away; all resources released.
    DONE = "done"


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, not {value!r}")


@implementer(IPushProducer, IFileSourceListener)
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class TailProducer:
    """
    Send the bytes ``[start, end)`` of an `IFileSource` as the body of one
    response, following the file as it grows.

    The caller sets the status and headers (``Content-Length`` first, or the
    response goes chunked) and calls `start`.  From then on the producer
    writes whenever the client can take bytes and the source has them, waits
    as a listener when it has caught up with the download, and ends the
    response in exactly one of three ways:

    - all bytes sent: unregister, then ``finish()`` the request;
    - the client went away (`stopProducing`, or ``notifyFinish`` failing):
      just release resources, since ``finish()`` would raise;
    - the source failed, the client or the source stalled for longer than
      ``stall_timeout``, or the file turned out shorter than promised: abort
      the connection, so the client sees a truncated body (and resumes with
      ``Range``) rather than a complete-looking one (``PROTOCOL.md`` §4
      trap 17).

    In every case the file descriptor is closed, the producer stops
    listening to the source, and the stall timer is cancelled; the source
    itself (a download shared with other clients) is never touched.

    :ivar request: The request whose body this produces.
    :ivar source: The file to send.
    :ivar start: Offset of the first byte to send.
    :ivar end: Offset just past the last byte to send, or ``None`` to send
        until the source is complete.
    :ivar clock: Time source for the stall timer.
    :ivar stall_timeout: Seconds the response may go without writing a byte
        (client not reading, or download not progressing) before it is
        aborted.  Twisted's own idle timeout is off while a response is in
        progress (``STYLE.md`` §2.b.7), so without this a stuck response
        would hold its connection and file descriptor forever.
    :ivar chunk_size: Most bytes read and written per step.
    """

    _log = Logger()

    _request: StreamingRequest
    _source: IFileSource
    _clock: IReactorTime = attrs.field(kw_only=True)
    _start: int = attrs.field(default=0, kw_only=True, validator=_non_negative)
    _end: int | None = attrs.field(default=None, kw_only=True)
    _stall_timeout: float = attrs.field(
        default=DEFAULT_STALL_TIMEOUT, kw_only=True, validator=_positive
    )
    _chunk_size: int = attrs.field(default=CHUNK_SIZE, kw_only=True, validator=_positive_int)

    _state: _State = attrs.field(default=_State.NEW, init=False)
    _fd: int | None = attrs.field(default=None, init=False)
    _offset: int = attrs.field(default=0, init=False)
    _paused: bool = attrs.field(default=False, init=False)
    _pumping: bool = attrs.field(default=False, init=False)
    _listening: bool = attrs.field(default=False, init=False)
    _last_progress: float = attrs.field(default=0.0, init=False)
    _stall_call: IDelayedCall | None = attrs.field(default=None, init=False)

    @_end.validator
    def _check_end(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and value < self._start:
            raise ValueError(f"end {value!r} is before start {self._start!r}")

    @property
    def offset(self) -> int:
        """
        Offset of the next byte to send; for logs and tests.
        """
        return self._offset

    @property
    def done(self) -> bool:
        """
        Whether the response has ended, one way or another, and every
        resource has been released.
        """
        return self._state is _State.DONE

    def start(self) -> None:
        """
        Open the file, register with the request as a streaming producer and
        send whatever is available now.

        May end the response before returning: when everything is already
        on disk and the client keeps up, or when the range is empty.

        :raises OSError: when the file cannot be opened; nothing has been
            registered or written then, so the caller can still answer with
            an error status.
        :raises RuntimeError: when called twice.
        """
        if self._state is not _State.NEW:
            raise RuntimeError("TailProducer.start called twice")
        fd = self._source.open()
        try:
            self._request.registerProducer(self, True)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._state = _State.STREAMING
        self._offset = self._start
        self._request.notifyFinish().addErrback(self._connection_lost)
        if not self._source.is_complete() and self._source.failure() is None:
            self._source.add_listener(self)
            self._listening = True
        self._last_progress = self._clock.seconds()
        self._stall_call = self._clock.callLater(self._stall_timeout, self._check_stall)
        failure = self._source.failure()
        if failure is not None:
            self.source_failed(failure)
            return
        # Send the headers now, even with no byte on disk yet: installers'
        # read timeouts (15 s for pip) cover the wait for the headers.
        self._request.write(b"")
        self._pump()

    # IPushProducer

    def pauseProducing(self) -> None:
        """
        The client's buffer is full: stop writing.

        The transport calls this from inside ``request.write``, so it only
        sets a flag that the write loop checks after every write.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        """
        The client's buffer drained: continue writing.
        """
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        """
        The connection is gone: release everything, without finishing.
        """
        self._client_gone()

    # IFileSourceListener

    def data_available(self) -> None:
        """
        The download grew or completed: send more, unless the client is not
        reading, in which case `resumeProducing` will pick it up.
        """
        if not self._paused:
            self._pump()

    def source_failed(self, reason: Failure) -> None:
        """
        The download failed: abort the client connection, so the client
        cannot mistake what it got for the whole file.
        """
        self._abort("source failed: {reason}", reason=reason.getErrorMessage())

    # Internals

    def _pump(self) -> None:
        """
        Write until paused, caught up with the source, or done.

        Re-entrant calls (``data_available`` or ``resumeProducing`` arriving
        from inside ``request.write``) return at once: the running loop
        re-reads every piece of state after each write, so it sees whatever
        they changed.
        """
        if self._pumping or self._state is not _State.STREAMING:
            return
        self._pumping = True
        try:
            self._pump_loop()
        finally:
            self._pumping = False

    def _pump_loop(self) -> None:
        fd = self._fd
        assert fd is not None
        while self._state is _State.STREAMING and not self._paused:
            # Checked first: whatever a failed source holds must not reach
            # the client as if it were good.
            failure = self._source.failure()
            if failure is not None:
                self.source_failed(failure)
                return
            limit = self._source.available()
            if self._end is not None:
                limit = min(limit, self._end)
            if self._offset < limit:
                try:
                    data = os.pread(fd, min(self._chunk_size, limit - self._offset), self._offset)
                except OSError as e:
                    self._abort("read failed at {offset}: {error}", offset=self._offset, error=e)
                    return
                if not data:
                    # The source vouched for bytes the file does not hold.
                    self._abort("file ended early at {offset}", offset=self._offset)
                    return
                self._offset += len(data)
                self._last_progress = self._clock.seconds()
                self._request.write(data)
                continue
            if self._end is not None and self._offset >= self._end:
                self._finish()
                return
            if self._source.is_complete():
                if self._end is None:
                    self._finish()
                else:
                    # Complete, yet shorter than the length we promised.
                    self._abort(
                        "file complete at {size} bytes, short of {end}",
                        size=self._offset,
                        end=self._end,
                    )
                return
            # Caught up with the download: data_available will call again.
            return

    def _check_stall(self) -> None:
        """
        The stall timer fired: abort if nothing was written for
        ``stall_timeout`` seconds, else look again when that could first be
        true.
        """
        self._stall_call = None
        if self._state is not _State.STREAMING:
            return
        idle = self._clock.seconds() - self._last_progress
        if idle >= self._stall_timeout:
            self._abort(
                "no progress for {idle:.0f}s at offset {offset} ({cause})",
                idle=idle,
                offset=self._offset,
                cause="client not reading" if self._paused else "waiting for download",
            )
        else:
            self._stall_call = self._clock.callLater(self._stall_timeout - idle, self._check_stall)

    def _connection_lost(self, reason: Failure) -> None:
        # notifyFinish failed: the request's connection was lost.
        self._client_gone()

    def _client_gone(self) -> None:
        if self._state is _State.DONE:
            return
        self._state = _State.DONE
        self._release()

    def _finish(self) -> None:
        self._state = _State.DONE
        self._release()
        self._request.unregisterProducer()
        self._request.finish()

    def _abort(self, why: str, **fields: object) -> None:
        """
        End the response by dropping the connection, so the client sees a
        truncated body, never a complete-looking one.
        """
        if self._state is not _State.STREAMING:
            return
        self._state = _State.DONE
        self._log.warn("aborting response: " + why, **fields)
        self._release()
        self._request.unregisterProducer()
        transport = getattr(self._request, "transport", None)
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        elif transport is not None:
            transport.loseConnection()

    def _release(self) -> None:
        """
        Close the file, stop listening and cancel the stall timer.
        """
        if self._listening:
            self._listening = False
            self._source.remove_listener(self)
        if self._stall_call is not None:
            if self._stall_call.active():
                self._stall_call.cancel()
            self._stall_call = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

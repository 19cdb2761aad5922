# -*- test-case-name: tests.test_downloads -*-
"""
Single-flight file downloads that clients can read while they land.

However many clients ask for a file, one `Download` fetches it: it appends
the upstream body to a partial file as it arrives, and every client tails
that file with its own producer (`proxypypi.web.producers.TailProducer`).  A
broken upstream connection is resumed with an HTTP ``Range`` request, from
the next origin (another mirror of the same group) when there is one; the
hash from the index page is checked before the last byte is released, and
only a verified file is renamed into place.

A hash mismatch cannot be failed over: by then the clients hold every byte
but the last, and some of those bytes are wrong.  So the clients'
connections are aborted (an installer sees a truncated download and never a
corrupt file), nothing is committed, the origins that supplied the bytes are
reported as failed, and the `Manager` remembers them, so the next request
for the file starts a fresh download from the other origins first.

Each origin may carry an `OriginHealth` (the upstream member behind it):
the download tells it of every request it starts and ends, and whether it
worked.  This module never imports the upstream pool; the pool hands it
origins that already know whom to report to.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse
from zope.interface import implementer

from proxypypi.cache.storage import FileKey, Storage, write_all
from proxypypi.interfaces import IFileSource, IFileSourceListener
from proxypypi.upstream.fetch import (
    BodyReceiver,
    FetchError,
    Timing,
    describe_failure,
    header,
    is_unreachable,
    request,
)
from proxypypi.upstream.origin import Origin

#: How many times one download may (re)connect before giving up.
MAX_ATTEMPTS = 6


class FileNotFoundUpstream(FetchError):
    """
    The upstream says the file listed on its page does not exist.
    """


class IntegrityError(FetchError):
    """
    The bytes do not match what the index page promised.
    """




def _hashers(hashes: Mapping[str, str]) -> dict[str, Any]:
    """
    A running hash for every algorithm of the page's hashes we can compute.
    """
    out: dict[str, Any] = {}
    for name, digest in hashes.items():
        if name in hashlib.algorithms_available and digest:
            out[name] = hashlib.new(name)
    if "sha256" not in out:
        out["sha256"] = hashlib.sha256()
    return out



@implementer(IFileSource)
@attrs.define(eq=False)
class Download:
    """
    One file being fetched into storage, readable while it grows.

    :ivar hashes: the hashes the index page gave; every one we can compute
        must match before the file is committed.
    :ivar size: the size the page gave, if any; a response of another
        length is refused.
    """

    key: FileKey
    origins: Sequence[Origin]
    hashes: Mapping[str, str]
    size: int | None
    storage: Storage
    clock: IReactorTime
    idle_timeout: float
    log = Logger()

    _fd: int | None = None
    _path: str = ""
    _written: int = 0
    _total: int | None = None
    _complete: bool = False
    _verified: bool = False
    _failure: Failure | None = None
    _hash: dict[str, Any] = attrs.field(factory=dict)
    _listeners: list[IFileSourceListener] = attrs.field(factory=list)
    _header_waiters: list[Deferred[None]] = attrs.field(factory=list)
    _headers_known: bool = False
    _finished: bool = False
    _done_waiters: list[Deferred[None]] = attrs.field(factory=list)
    _receiver: BodyReceiver | None = None
    _cancelled: bool = False
    #: Origins whose bytes are in the partial file.
    _contributors: list[Origin] = attrs.field(factory=list)
    #: After a hash mismatch: the URLs of the origins that supplied the
    #: bytes, which the manager avoids next time.
    bad_origins: tuple[str, ...] = ()

    # IFileSource

    def open(self) -> int:
        try:
            return os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            # Committed (renamed) in the disk thread a moment ago; our path
            # is updated when that thread's result reaches the reactor.
            final = self.storage.file_path(self.key.project, self.key.filename)
            return os.open(final, os.O_RDONLY)

    def available(self) -> int:
        if self._verified:
            return self._written
        # Hold back the last byte until the hash is verified: no client
        # ever holds a complete-looking file that might be corrupt.
        return max(0, self._written - 1)

    def expected_size(self) -> int | None:
        return self._total if self._total is not None else self.size

    def is_complete(self) -> bool:
        return self._complete

    def failure(self) -> Failure | None:
        return self._failure

    def add_listener(self, listener: IFileSourceListener) -> None:
        if not self._complete and self._failure is None:
            self._listeners.append(listener)

    def remove_listener(self, listener: IFileSourceListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # Life cycle

    def start(self) -> None:
        """
        Begin fetching.  Failures are reported to waiters and listeners.
        """
        self._hash = _hashers(self.hashes)
        d = Deferred.fromCoroutine(self._run())
        d.addErrback(self._fail)
        d.addCallback(self._finished_all)

    def _finished_all(self, _: object) -> None:
        self._finished = True
        waiters, self._done_waiters = self._done_waiters, []
        for w in waiters:
            w.callback(None)

    def when_done(self) -> Deferred[None]:
        """
        A new Deferred that fires (with ``None``) once the download is
        committed or has failed.
        """
        d: Deferred[None] = Deferred()
        if self._finished:
            d.callback(None)
        else:
            self._done_waiters.append(d)
        return d

    def wait_for_headers(self) -> Deferred[None]:
        """
        A new Deferred firing once the response can start: the upstream
        answered with the file's headers (its size, when it gave one).
        Fails with the download's failure if that never happens.
        """
        d: Deferred[None] = Deferred()
        if self._failure is not None:
            d.errback(self._failure)
        elif self._headers_known:
            d.callback(None)
        else:
            self._header_waiters.append(d)
        return d

    def cancel(self) -> None:
        """
        Give up (service shutting down).
        """
        self._cancelled = True
        if self._receiver is not None:
            self._receiver.abort(FetchError("download cancelled"))

    def progress(self) -> tuple[int, int | None]:
        return self._written, self.expected_size()

    async def _run(self) -> None:
        self._fd, self._path = self.storage.open_partial()
        errors: list[str] = []
        # Origins that cannot serve this file at all (404, another size):
        # asking them again would not help.
        excluded: dict[int, FetchError] = {}
        position = 0
        for _attempt in range(MAX_ATTEMPTS):
            index = self._next_origin(position, excluded)
            if index is None:
                break
            origin = self.origins[index]
            position = index + 1
            timing = Timing(self.clock.seconds())
            before = self._written
            try:
                await self._attempt_reporting(origin, timing)
            except (FileNotFoundUpstream, IntegrityError) as e:
                if self._written > before:
                    self._contributed(origin)
                excluded[index] = e
                errors.append(f"{origin.url}: {e}")
                if isinstance(e, IntegrityError) and origin.health is not None:
                    origin.health.report_failure(str(e))
                elif origin.health is not None:
                    origin.health.report_success(timing.latency)
                continue
            except Exception as e:
                if self._written > before:
                    self._contributed(origin)
                # A disk error ends the download; an unknown host name
                # (DNSLookupError is an OSError too) is the origin's fault.
                if self._cancelled or (
                    isinstance(e, OSError) and not isinstance(e, DNSLookupError)
                ):
                    raise
                failure = Failure(e)
                reason = describe_failure(failure)
                errors.append(f"{origin.url}: {reason}")
                if origin.health is not None:
                    origin.health.report_failure(reason, fatal=is_unreachable(failure))
                self.log.warn(
                    "download of {filename} from {url} broke at byte {offset}: {reason}",
                    filename=self.key.filename,
                    url=origin.url,
                    offset=self._written,
                    reason=reason,
                )
                continue
            if self._written > before:
                self._contributed(origin)
            await self._finish()
            if origin.health is not None:
                origin.health.report_success(timing.latency)
            return
        if len(excluded) == len(self.origins):
            # Every origin said no: the most telling answer is the source's.
            raise excluded[min(excluded)]
        raise FetchError(f"gave up after {MAX_ATTEMPTS} attempts: " + "; ".join(errors[-3:]))

    def _next_origin(self, position: int, excluded: Mapping[int, object]) -> int | None:
        """
        The origin for the next attempt: the next one after ``position``
        (cyclically) that is in rotation, else the next one at all, never
        one in ``excluded``.
        """
        count = len(self.origins)
        candidates = [(position + i) % count for i in range(count)]
        candidates = [i for i in candidates if i not in excluded]
        for i in candidates:
            health = self.origins[i].health
            if health is None or health.usable:
                return i
        return candidates[0] if candidates else None

    def _contributed(self, origin: Origin) -> None:
        if origin not in self._contributors:
            self._contributors.append(origin)

    async def _attempt_reporting(self, origin: Origin, timing: Timing) -> None:
        """
        `_attempt`, counted as load on the origin while it runs.
        """
        if self._cancelled:
            raise FetchError("download cancelled")
        if origin.health is not None:
            origin.health.request_started()
        try:
            await self._attempt(origin, timing)
        finally:
            if origin.health is not None:
                origin.health.request_ended()

    async def _attempt(self, origin: Origin, timing: Timing | None = None) -> None:
        headers = {b"accept-encoding": b"identity"}
        if self._written:
            headers[b"range"] = f"bytes={self._written}-".encode()
        response = await request(
            origin.agent, self.clock, origin.url, headers, origin.first_byte_timeout
        )
        if timing is not None:
            timing.latency = self.clock.seconds() - timing.started
        if self._cancelled:
            response.deliverBody(Protocol())  # closes the connection
            raise FetchError("download cancelled")
        skip = self._accept_response(response)
        self._headers_ready()
        idle = origin.idle_timeout if origin.idle_timeout is not None else self.idle_timeout
        receiver = BodyReceiver(lambda data: self._write_skipping(data, skip), self.clock, idle)
        self._receiver = receiver
        response.deliverBody(receiver)
        try:
            await receiver.done
        finally:
            self._receiver = None
        # The page's size counts too: a body without Content-Length that
        # ends early is resumed, not mistaken for a corrupt file.
        total = self.expected_size()
        if total is not None and self._written < total:
            raise FetchError(f"body ended at byte {self._written} of {total}")

    def _accept_response(self, response: IResponse) -> list[int]:
        """
        Check a response's status and length against what we know; return
        how many leading bytes to skip (a 200 answer to a resumed request
        repeats what we already have).
        """
        if response.code in (404, 410):
            response.deliverBody(Protocol())
            raise FileNotFoundUpstream(f"HTTP {response.code} for a file the page lists")
        if response.code not in (200, 206):
            response.deliverBody(Protocol())
            raise FetchError(f"HTTP {response.code}")
        if header(response, b"content-encoding") not in (None, "identity"):
            response.deliverBody(Protocol())
            raise FetchError("upstream sent an encoded body for a file")
        total: int | None = None
        skip = 0
        if response.code == 206:
            start, total = _content_range(header(response, b"content-range"))
            if start != self._written:
                response.deliverBody(Protocol())
                raise FetchError(f"asked for bytes from {self._written}, got from {start}")
        else:
            skip = self._written
            if response.length != -1 and isinstance(response.length, int):
                total = response.length
        known = self.expected_size()
        if total is not None and known is not None and total != known:
            response.deliverBody(Protocol())
            raise IntegrityError(f"upstream says {total} bytes, the index page says {known}")
        if total is not None:
            self._total = total
        return [skip]

    def _headers_ready(self) -> None:
        if not self._headers_known:
            self._headers_known = True
            waiters, self._header_waiters = self._header_waiters, []
            for d in waiters:
                d.callback(None)

    def _write_skipping(self, data: bytes, skip: list[int]) -> None:
        if skip[0]:
            cut = min(skip[0], len(data))
            skip[0] -= cut
            data = data[cut:]
            if not data:
                return
        self._write(data)

    def _write(self, data: bytes) -> None:
        total = self.expected_size()
        if total is not None and self._written + len(data) > total:
            raise IntegrityError(f"upstream sent more than the {total} bytes announced")
        assert self._fd is not None
        write_all(self._fd, data)
        for h in self._hash.values():
            h.update(data)
        self._written += len(data)
        self._notify()

    async def _finish(self) -> None:
        for name, h in self._hash.items():
            want = self.hashes.get(name)
            if want is not None and h.hexdigest() != want.lower():
                self._blame(f"{name} mismatch on {self.key.filename}")
                raise IntegrityError(f"{name} mismatch: index says {want}, got {h.hexdigest()}")
        # Verified: clients may have the last byte now, without waiting for
        # the fsync and rename of the commit.
        self._verified = True
        self._notify()
        fd, self._fd = self._fd, None
        assert fd is not None
        self._path = await self.storage.commit(fd, self._path, self.key.project, self.key.filename)
        self.storage.wrote()
        self._total = self._written
        self._complete = True
        self._headers_ready()
        self.log.info(
            "stored {filename} ({size} bytes)", filename=self.key.filename, size=self._written
        )
        self._notify()
        self._listeners.clear()

    def _blame(self, reason: str) -> None:
        """
        The bytes are wrong: every origin that supplied some is at fault
        (which one cannot be told).
        """
        self.bad_origins = tuple(o.url for o in self._contributors)
        for origin in self._contributors:
            if origin.health is not None:
                origin.health.report_failure(reason)

    def _fail(self, failure: Failure) -> None:
        if isinstance(failure.value, OSError):
            self.storage.failed_write(failure.value)
        if isinstance(failure.value, OSError) and failure.value.errno == errno.ENOSPC:
            self.log.error(
                "disk full while storing {filename}: free space in the storage directory; "
                "cached files are still served",
                filename=self.key.filename,
            )
        else:
            self.log.error(
                "download of {filename} failed: {reason}",
                filename=self.key.filename,
                reason=describe_failure(failure),
            )
        self._failure = failure
        self.storage.discard(self._fd, self._path)
        self._fd = None
        waiters, self._header_waiters = self._header_waiters, []
        for d in waiters:
            d.errback(failure)
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.source_failed(failure)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener.data_available()


def _content_range(value: str | None) -> tuple[int, int | None]:
    """
    Parse ``bytes START-END/TOTAL`` of a 206 response.
    """
    if not value or not value.startswith("bytes "):
        raise FetchError(f"bad Content-Range {value!r}")
    try:
        span, _, total = value[6:].partition("/")
        start = int(span.split("-", 1)[0])
        return start, (None if total.strip() == "*" else int(total))
    except ValueError as e:
        raise FetchError(f"bad Content-Range {value!r}") from e



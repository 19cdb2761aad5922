# -*- test-case-name: tests.test_downloads -*-
"""
Single-flight file downloads that clients can read while they land.

However many clients ask for a file, one `Download` fetches it: it appends
the upstream body to a partial file as it arrives, and every client tails
that file with its own producer (`proxypypi.web.producers.TailProducer`).
How the bytes are fetched (origins, resumption with ``Range``) is
`proxypypi.cache.transfer`; this module keeps the file and its life cycle.
The hash from the index page is checked before the last byte is released,
and only a verified file is renamed into place.

A download goes through these phases, as a state machine (the house way,
as in `proxypypi.upstream.health`)::

    fetching --headers--> streaming --verified--> verified --committed--> complete
        |                     |                       |
        +------cancel---------+---> cancelling        |
        |                     |          |            |
        +---------------------+----------+--failed----+---> failed

In ``streaming`` the last byte written is held back from readers; in
``verified`` every byte may be read while the commit (fsync and rename)
runs in the disk threads.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import attrs
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from proxypypi.cache.complete import open_no_links
from proxypypi.cache.phases import Inputs, Phase, hashers
from proxypypi.cache.storage import Claim, FileKey, Storage, write_all
from proxypypi.interfaces import IFileSource, IFileSourceListener
from proxypypi.upstream.fetch import BodyReceiver, BodyTooLarge, FetchError, describe_failure
from proxypypi.upstream.origin import Origin
from proxypypi.waiting import Waiters


class IntegrityError(FetchError):
    """
    The bytes do not match what the index page promised.
    """


class Abandoned(FetchError):
    """
    No client is reading any more, and the upstream sends too slowly for
    the download to be worth finishing for the cache alone.
    """


#: The largest ``.metadata`` file accepted (PEP 658): core metadata is a
#: few kilobytes, with the longest descriptions a few hundred.
MAX_METADATA_BYTES = 8 * 1024 * 1024

#: A download no client reads is dropped when, this many seconds after it
#: started, it has averaged less than `ABANDON_RATE` bytes a second: it
#: would tie up a connection and a partial file for hours, for nobody.
ABANDON_AFTER = 30.0
ABANDON_RATE = 64 * 1024


@implementer(IFileSource)
@attrs.define(eq=False)
class Download:
    """
    One file being fetched into storage, readable while it grows.

    :ivar origins: where the file may be fetched from, in order.
    :ivar hashes: the hashes the index page gave; every one we can compute
        must match before the file is committed.
    :ivar size: the size the page gave, if any; a response of another
        length is refused.
    :ivar limit: the most bytes accepted, whatever size the page or the
        response gives (``None``: unbounded).
    :ivar written: bytes in the partial file so far.
    :ivar receiver: the body being read now, if any (aborted on cancel).
    :ivar bad_origins: after a hash mismatch, the URLs of the origins that
        supplied the bytes, which the manager avoids next time.
    """

    key: FileKey
    origins: Sequence[Origin]
    hashes: Mapping[str, str]
    size: int | None
    storage: Storage
    clock: IReactorTime
    idle_timeout: float
    #: The partial file this process claimed (`Storage.claim`); bytes a
    #: dead holder left in it are kept, hashed again, and resumed from.
    claim: Claim
    limit: int | None = None
    log = Logger()

    written: int = 0
    _started: float = 0.0
    receiver: BodyReceiver | None = None
    bad_origins: tuple[str, ...] = ()
    _fd: int | None = None
    _path: str = ""
    _total: int | None = None
    _failure: Failure | None = None
    _hash: dict[str, Any] = attrs.field(factory=dict)
    _listeners: list[IFileSourceListener] = attrs.field(factory=list)
    _headers: Waiters[None] = attrs.field(factory=Waiters)
    _done: Waiters[None] = attrs.field(factory=Waiters)
    #: Origins whose bytes are in the partial file.
    _contributors: list[Origin] = attrs.field(factory=list)
    _machine: Inputs = attrs.field(init=False)
    #: Kept by the machine's transitions; readers (listeners called from
    #: inside a transition among them) read it here, since the machine
    #: cannot be asked while it is busy.
    _phase: Phase = Phase.FETCHING

    def __attrs_post_init__(self) -> None:
        self._machine = _DownloadMachine(self)

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def stored_here(self) -> bool:
        """
        This process fetches (and commits) the file.
        """
        return True

    # IFileSource

    def open(self) -> int:
        try:
            return os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            # Committed (renamed) in the disk thread a moment ago; our path
            # is updated when that thread's result reaches the reactor.
            final = self.storage.file_path(self.key.project, self.key.filename)
            return open_no_links(final)

    def available(self) -> int:
        if self.phase in (Phase.VERIFIED, Phase.COMPLETE):
            return self.written
        # Hold back the last byte until the hash is verified: no client
        # ever holds a complete-looking file that might be corrupt.
        return max(0, self.written - 1)

    def expected_size(self) -> int | None:
        return self._total if self._total is not None else self.size

    def is_complete(self) -> bool:
        return self.phase is Phase.COMPLETE

    def failure(self) -> Failure | None:
        return self._failure

    def add_listener(self, listener: IFileSourceListener) -> None:
        if self.phase not in (Phase.COMPLETE, Phase.FAILED):
            self._listeners.append(listener)

    def remove_listener(self, listener: IFileSourceListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # Life cycle

    def start(self, fetch: Callable[[Download], Coroutine[Any, Any, None]]) -> None:
        """
        Begin fetching with ``fetch`` (`proxypypi.cache.transfer.transfer`),
        which fills and finishes the download.  Failures are reported to
        waiters and listeners.
        """
        self._hash = hashers(self.hashes)
        self._started = self.clock.seconds()
        self._fd, self._path = self.claim.fd, self.claim.path
        self.written = self.claim.size()
        d = Deferred.fromCoroutine(self._resume_then(fetch))
        d.addErrback(self._machine.failed)
        d.addBoth(lambda _: self._done.fire(None))

    async def _resume_then(self, fetch: Callable[[Download], Coroutine[Any, Any, None]]) -> None:
        if self.written:
            # Taken over from a process that died mid-download: hash what it
            # wrote, then ask for the rest.
            await self.storage.run(self._hash_existing)
            self.log.info(
                "resuming the download of {filename} at byte {offset}, where another "
                "worker stopped",
                filename=self.key.filename,
                offset=self.written,
            )
        await fetch(self)

    def _hash_existing(self) -> None:
        with open(self._path, "rb") as f:
            while chunk := f.read(1024 * 1024):
                for h in self._hash.values():
                    h.update(chunk)

    def when_done(self) -> Deferred[None]:
        """
        A new Deferred that fires (with ``None``) once the download is
        committed or has failed.
        """
        return self._done.wait()

    def wait_for_headers(self) -> Deferred[None]:
        """
        A new Deferred firing once the response can start: the upstream
        answered with the file's headers (its size, when it gave one).
        Fails with the download's failure if that never happens.
        """
        if self._failure is not None:
            return fail(self._failure)
        return self._headers.wait()

    def cancel(self) -> None:
        """
        Give up (service shutting down).
        """
        self._machine.cancel()

    @property
    def cancelling(self) -> bool:
        """
        Whether the download was told to give up.
        """
        return self.phase is Phase.CANCELLING

    def progress(self) -> tuple[int, int | None]:
        return self.written, self.expected_size()

    # What the transfer reports

    def headers_arrived(self, total: int | None) -> None:
        """
        An origin answered; ``total`` is the size it announced, if any
        (already checked against the page's).

        :raises BodyTooLarge: when the file is larger than `limit`.
        """
        size = total if total is not None else self.size
        if size is not None and self.limit is not None and size > self.limit:
            raise BodyTooLarge(f"the file has {size} bytes, over the {self.limit} accepted")
        if total is not None:
            self._total = total
        self._machine.headers_arrived()

    def contributed(self, origin: Origin) -> None:
        """
        Some of the bytes in the partial file came from ``origin``.
        """
        if origin not in self._contributors:
            self._contributors.append(origin)

    def write(self, data: bytes) -> None:
        """
        Append ``data`` to the partial file and tell the readers.

        :raises IntegrityError: when it goes past the size announced.
        :raises BodyTooLarge: when it goes past `limit`.
        :raises Abandoned: when nobody reads it and it is too slow to keep.
        """
        total = self.expected_size()
        if total is not None and self.written + len(data) > total:
            raise IntegrityError(f"upstream sent more than the {total} bytes announced")
        if self.limit is not None and self.written + len(data) > self.limit:
            raise BodyTooLarge(f"the file is larger than the {self.limit} bytes accepted")
        if not self._listeners:
            self._check_worth()
        assert self._fd is not None
        write_all(self._fd, data)
        for h in self._hash.values():
            h.update(data)
        self.written += len(data)
        self._notify()

    def _check_worth(self) -> None:
        """
        :raises Abandoned: when the download, read by no client, has been
            too slow for too long (`ABANDON_AFTER`, `ABANDON_RATE`).
        """
        elapsed = self.clock.seconds() - self._started
        if elapsed >= ABANDON_AFTER and self.written < ABANDON_RATE * elapsed:
            raise Abandoned(
                f"no client reads it and the upstream sends {self.written / elapsed:.0f} "
                f"bytes a second; dropped"
            )

    async def finish(self) -> None:
        """
        Every byte is in: check the hashes, release the last byte, commit.

        :raises IntegrityError: on a mismatch (the contributors are blamed).
        """
        for name, h in self._hash.items():
            want = self.hashes.get(name)
            if want is not None and h.hexdigest() != want.lower():
                self._blame(f"{name} mismatch on {self.key.filename}")
                raise IntegrityError(f"{name} mismatch: index says {want}, got {h.hexdigest()}")
        # Verified: clients may have the last byte now, without waiting for
        # the fsync and rename of the commit.
        self._machine.bytes_verified()
        fd, self._fd = self._fd, None
        assert fd is not None
        self._path = await self.storage.commit(fd, self._path, self.key.project, self.key.filename)
        self.storage.wrote()
        self._total = self.written
        self._machine.committed()

    def _blame(self, reason: str) -> None:
        """
        The bytes are wrong: every origin that supplied some is at fault
        (which one cannot be told).
        """
        self.bad_origins = tuple(o.url for o in self._contributors)
        for origin in self._contributors:
            if origin.health is not None:
                origin.health.report_failure(reason)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener.data_available()

    # Behaviour of the transitions (called by the machine only)

    def _headers_known(self) -> None:
        self._headers.fire(None)

    def _completed(self) -> None:
        self._headers.fire(None)
        self.log.info(
            "stored {filename} ({size} bytes)", filename=self.key.filename, size=self.written
        )
        self._notify()
        self._listeners.clear()

    def _stop_reading(self) -> None:
        if self.receiver is not None:
            self.receiver.abort(FetchError("download cancelled"))

    def _failed(self, failure: Failure) -> None:
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
        self._headers.fire(failure)
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.source_failed(failure)


# The transition table.

_builder = TypeMachineBuilder(Inputs, Download)
_fetching = _builder.state("fetching")
_streaming = _builder.state("streaming")
_verified = _builder.state("verified")
_complete = _builder.state("complete")
_cancelling = _builder.state("cancelling")
_failed = _builder.state("failed")


def _headers_known(inputs: Inputs, core: Download) -> None:
    core._phase = Phase.STREAMING
    core._headers_known()


def _verified_all(inputs: Inputs, core: Download) -> None:
    core._phase = Phase.VERIFIED
    core._notify()


def _completed(inputs: Inputs, core: Download) -> None:
    core._phase = Phase.COMPLETE
    core._completed()


def _stop_reading(inputs: Inputs, core: Download) -> None:
    core._phase = Phase.CANCELLING
    core._stop_reading()


def _give_up(inputs: Inputs, core: Download, failure: Failure) -> None:
    core._phase = Phase.FAILED
    core._failed(failure)


_fetching.upon(Inputs.headers_arrived).to(_streaming)(_headers_known)
# A resumed attempt (another origin, or the same after a break).
_streaming.upon(Inputs.headers_arrived).loop().returns(None)
_streaming.upon(Inputs.bytes_verified).to(_verified)(_verified_all)
_verified.upon(Inputs.committed).to(_complete)(_completed)
for _state in (_fetching, _streaming):
    _state.upon(Inputs.cancel).to(_cancelling)(_stop_reading)
for _state in (_fetching, _streaming, _verified, _cancelling):
    _state.upon(Inputs.failed).to(_failed)(_give_up)
# The transfer notices the cancellation at its next step and fails; a
# commit already under way finishes; a finished download stays as it is.
_cancelling.upon(Inputs.headers_arrived).loop().returns(None)
for _state in (_verified, _cancelling, _complete, _failed):
    _state.upon(Inputs.cancel).loop().returns(None)

_DownloadMachine = _builder.build()

# -*- test-case-name: tests.test_shared -*-
"""
A download that another process runs: with worker processes sharing one
storage, the first to claim a file's download (`Storage.claim`, an
exclusive ``flock`` on its partial file) fetches it, and every other
process serves its own clients from that partial file as it grows.

`ForeignDownload` watches the partial file (its size, a few times a
millisecond's worth of work every `POLL` seconds) and its claim:

- the claim released and the file renamed into place: complete;
- the claim released and the file gone: the holder failed (a bad hash, no
  upstream): our clients are cut off, as the holder's are, and never get a
  complete-looking wrong file;
- the claim released and the file still there: the holder died; this
  process claims it and carries on (`take_over`), resuming with ``Range``
  from the bytes on disk.

The last byte is held back until the file is renamed into place, which the
holder does only after every hash matched, as a `Download` holds it back
until its own check.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from proxypypi.cache.download import Download
from proxypypi.cache.storage import Claim, FileKey, Storage
from proxypypi.interfaces import IFileSource, IFileSourceListener
from proxypypi.upstream.fetch import FetchError
from proxypypi.waiting import Waiters

#: Seconds between two looks at a partial file another process writes.
POLL = 0.01


class ForeignDownloadFailed(FetchError):
    """
    The process that held the download gave it up.
    """


def write_size(storage: Storage, key: FileKey, total: int) -> None:
    """
    Tell the other processes the size a download's upstream announced (the
    holder's part), for the ``Content-Length`` of their responses.
    """
    path = storage.download_path(key) + ".size"
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(total))
    os.replace(tmp, path)


def read_size(storage: Storage, key: FileKey) -> int | None:
    try:
        with open(storage.download_path(key) + ".size") as f:
            value = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) and value >= 0 else None


@implementer(IFileSource)
@attrs.define(eq=False)
class ForeignDownload:
    """
    A download in flight in another process, read from its partial file.

    :ivar take_over: makes this process's own `Download` of the file from
        a claim on its partial file (the holder died).
    """

    key: FileKey
    size: int | None
    storage: Storage
    clock: IReactorTime
    take_over: Callable[[Claim], Download]
    bad_origins: tuple[str, ...] = ()
    _fd: int | None = None
    _inode: int = 0
    _seen: int = 0
    _total: int | None = None
    _complete: bool = False
    _failure: Failure | None = None
    _own: Download | None = None
    _listeners: list[IFileSourceListener] = attrs.field(factory=list)
    _headers: Waiters[None] = attrs.field(factory=Waiters)
    _done: Waiters[None] = attrs.field(factory=Waiters)
    _poll: LoopingCall | None = None

    def start(self) -> None:
        """
        Start watching; fails at once when the partial file is gone already.
        """
        path = self.storage.download_path(self.key)
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self._look_after_release()
            return
        self._inode = os.fstat(self._fd).st_ino
        self._poll = LoopingCall(self._look)
        self._poll.clock = self.clock
        self._poll.start(POLL, now=True)

    # IFileSource

    def open(self) -> int:
        if self._own is not None:
            return self._own.open()
        if self._complete or self._fd is None:
            return os.open(self._final, os.O_RDONLY)
        return os.dup(self._fd)

    def available(self) -> int:
        if self._own is not None:
            return self._own.available()
        return self._seen if self._complete else max(0, self._seen - 1)

    def expected_size(self) -> int | None:
        if self._own is not None:
            return self._own.expected_size()
        return self.size if self.size is not None else self._total

    def is_complete(self) -> bool:
        return self._own.is_complete() if self._own is not None else self._complete

    def failure(self) -> Failure | None:
        return self._own.failure() if self._own is not None else self._failure

    def add_listener(self, listener: IFileSourceListener) -> None:
        if self._own is not None:
            self._own.add_listener(listener)
        elif not self._complete and self._failure is None:
            self._listeners.append(listener)

    def remove_listener(self, listener: IFileSourceListener) -> None:
        if self._own is not None:
            self._own.remove_listener(listener)
        if listener in self._listeners:
            self._listeners.remove(listener)

    # What a Download offers its manager and the resources

    def wait_for_headers(self) -> Deferred[None]:
        if self._failure is not None:
            return fail(self._failure)
        return self._headers.wait()

    def when_done(self) -> Deferred[None]:
        return self._done.wait()

    def progress(self) -> tuple[int, int | None]:
        return (self._own.written if self._own is not None else self._seen), self.expected_size()

    def cancel(self) -> None:
        if self._own is not None:
            self._own.cancel()
        else:
            self._fail(ForeignDownloadFailed("the service is stopping"))

    @property
    def stored_here(self) -> bool:
        """
        This process took the download over (its holder died).
        """
        return self._own is not None

    # Watching

    @property
    def _final(self) -> str:
        return self.storage.file_path(self.key.project, self.key.filename)

    def _look(self) -> None:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if self._total is None and self.size is None:
            self._total = read_size(self.storage, self.key)
        if size > self._seen or (self._total is not None and not self._headers.fired):
            self._seen = max(size, self._seen)
            self._headers.fire(None)
            self._notify()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # still held
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._look_after_release()

    def _look_after_release(self) -> None:
        """
        The holder let go: done, failed, or dead.
        """
        if self._same_file(self._final):
            self._seen = os.stat(self._final).st_size
            self._finish()
            return
        path = self.storage.download_path(self.key)
        if self._fd is not None and self._same_file(path):
            claim = self.storage.claim(self.key)
            if claim is None:
                return  # another process took it over first
            self._adopt(claim)
            return
        self._fail(ForeignDownloadFailed("the worker fetching this file gave up; try again"))

    def _same_file(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        # Started after the holder finished: any file in place is it.
        return self._fd is None or st.st_ino == self._inode

    def _adopt(self, claim: Claim) -> None:
        self._stop_polling()
        own = self._own = self.take_over(claim)
        for listener in self._listeners:
            own.add_listener(listener)
        self._listeners.clear()
        own.wait_for_headers().addBoth(self._headers.fire)
        own.when_done().addBoth(self._done.fire)

    def _finish(self) -> None:
        self._stop_polling()
        self._complete = True
        self._headers.fire(None)
        self._notify()
        self._listeners.clear()
        self._done.fire(None)

    def _fail(self, error: Exception) -> None:
        self._stop_polling()
        self._failure = Failure(error)
        self._headers.fire(self._failure)
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.source_failed(self._failure)
        self._done.fire(None)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener.data_available()

    def _stop_polling(self) -> None:
        """
        Stop watching, and let go of the partial file: our readers hold
        descriptors of their own, or read the file in its final place.
        """
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

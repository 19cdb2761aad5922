# -*- test-case-name: tests.test_web -*-
"""
A file being written that clients may read while it grows: the forms of
the project list as its refresh writes them, so the first client gets the
first names as soon as the upstream sends them, not after the last.
"""

from __future__ import annotations

import os

import attrs
from twisted.python.failure import Failure
from zope.interface import implementer

from proxypypi.cache.storage import fsync_dir, write_all
from proxypypi.interfaces import IFileSource, IFileSourceListener


@implementer(IFileSource)
@attrs.define(eq=False)
class GrowingFile:
    """
    A partial file written on the reactor thread and read by any number of
    producers; its length is unknown until it is committed, so responses
    from it go chunked, and one that fails is cut off (never passing for a
    whole file).

    :ivar partial: the file being written (in ``DATA/tmp``).
    :ivar final: where it goes once complete.
    """

    partial: str
    final: str
    _fd: int | None
    written: int = 0
    _complete: bool = False
    _failure: Failure | None = None
    _listeners: list[IFileSourceListener] = attrs.field(factory=list)

    # IFileSource

    def open(self) -> int:
        try:
            return os.open(self.partial, os.O_RDONLY)
        except FileNotFoundError:
            # Committed a moment ago.
            return os.open(self.final, os.O_RDONLY)

    def available(self) -> int:
        return self.written

    def expected_size(self) -> int | None:
        return self.written if self._complete else None

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

    # Writing

    def append(self, data: bytes) -> None:
        """
        Write ``data`` at the end and tell the readers.
        """
        if not data:
            return
        assert self._fd is not None
        write_all(self._fd, data)
        self.written += len(data)
        for listener in list(self._listeners):
            listener.data_available()

    def commit(self) -> None:
        """
        Make the file permanent: fsync, close, rename into place.
        Blocking; `completed` tells the readers once it returned.
        """
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.partial, self.final)
        fsync_dir(os.path.dirname(self.final))

    def completed(self) -> None:
        """
        The commit is done: readers may end their responses.
        """
        self._complete = True
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.data_available()

    def fail(self, failure: Failure) -> None:
        """
        The file will never be complete: drop it and cut its readers off.
        """
        if self._complete or self._failure is not None:
            return
        self._failure = failure
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.source_failed(failure)

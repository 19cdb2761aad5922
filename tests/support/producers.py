"""
A fake `proxypypi.interfaces.IFileSource`: a real file the test appends
to, as a download would, so the response code (`proxypypi.web.producers`,
`proxypypi.web.fileresponse`) is tested against every state of a download
without any upstream.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from proxypypi.interfaces import IFileSource, IFileSourceListener


class DownloadFailed(Exception):
    """
    The upstream went away in the middle of a file (for tests).
    """


@implementer(IFileSource)
class FakeFileSource:
    """
    An `IFileSource` backed by a real file that the test appends to, as a
    download would.

    :ivar held_back: How many of the written bytes `available` withholds,
        as a real download withholds its unverified tail.
    :ivar opened: Every descriptor handed out by `open`.
    :ivar listeners: The current listeners.
    """

    def __init__(self, path: str, expected_size: int | None = None) -> None:
        self.path = path
        self._expected_size = expected_size
        self.written = 0
        self.held_back = 0
        self.complete = False
        self._failure: Failure | None = None
        self.listeners: list[IFileSourceListener] = []
        self.opened: list[int] = []
        self.open_error: OSError | None = None
        with open(path, "wb"):
            pass

    def append(self, data: bytes) -> None:
        """
        Write ``data`` at the end of the file and tell the listeners.
        """
        assert not self.complete and self._failure is None
        with open(self.path, "ab") as f:
            f.write(data)
        self.written += len(data)
        for listener in list(self.listeners):
            listener.data_available()

    def finish(self) -> None:
        """
        Mark the file complete and verified, tell the listeners and drop them.
        """
        self.complete = True
        self.held_back = 0
        listeners, self.listeners = self.listeners, []
        for listener in listeners:
            listener.data_available()

    def fail(self, reason: Exception | None = None) -> None:
        """
        Fail the download, tell the listeners and drop them.
        """
        self._failure = Failure(reason or DownloadFailed("upstream went away"))
        listeners, self.listeners = self.listeners, []
        for listener in listeners:
            listener.source_failed(self._failure)

    def open_fds(self) -> set[int]:
        """
        The descriptors handed out by `open` that are still open.
        """
        return {fd for fd in self.opened if _is_open(fd)}

    # IFileSource

    def open(self) -> int:
        if self.open_error is not None:
            raise self.open_error
        fd = os.open(self.path, os.O_RDONLY)
        self.opened.append(fd)
        return fd

    def available(self) -> int:
        return self.written - self.held_back

    def expected_size(self) -> int | None:
        return self.written if self.complete else self._expected_size

    def is_complete(self) -> bool:
        return self.complete

    def failure(self) -> Failure | None:
        return self._failure

    def add_listener(self, listener: IFileSourceListener) -> None:
        assert not self.complete and self._failure is None, "listener on a finished source"
        self.listeners.append(listener)

    def remove_listener(self, listener: IFileSourceListener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as e:
        assert e.errno == errno.EBADF
        return False
    return True


def make_source(testcase: SynchronousTestCase, expected_size: int | None = None) -> FakeFileSource:
    """
    A new empty `FakeFileSource` in a temporary directory removed after
    ``testcase`` (trial's ``mktemp`` would litter the working directory when
    run under pytest).
    """
    directory = tempfile.mkdtemp(prefix="proxypypi-test-")
    testcase.addCleanup(shutil.rmtree, directory)
    return FakeFileSource(os.path.join(directory, "file"), expected_size)

# -*- test-case-name: tests.test_fileresponse,tests.test_downloads -*-
"""
A file already committed to storage, as an `proxypypi.interfaces.IFileSource`.
"""

from __future__ import annotations

import errno
import os

import attrs
from twisted.python.failure import Failure
from zope.interface import implementer

from proxypypi.interfaces import IFileSource, IFileSourceListener


@implementer(IFileSource)
@attrs.define(eq=False)
class CompleteFile:
    """
    A file already committed to storage, as it was when looked at.

    A private file may be replaced (``--allow-overwrite``) between the look
    and the opening: `open` refuses a file that is no longer the one
    looked at, so a response never sends one file's bytes under another's
    length.  Once open, the descriptor keeps the file's bytes whatever
    replaces it.
    """

    path: str
    size: int
    identity: tuple[int, int]
    #: When it was last written; with the size, an entity tag for files
    #: that carry no hash (the project list).
    mtime_ns: int = 0

    @classmethod
    def at(cls, path: str) -> CompleteFile | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(path, st.st_size, (st.st_dev, st.st_ino), st.st_mtime_ns)

    def open(self) -> int:
        """
        :raises OSError: when the file cannot be opened, or was replaced
            since it was looked at.
        """
        fd = os.open(self.path, os.O_RDONLY)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self.identity or st.st_size != self.size:
            os.close(fd)
            raise OSError(errno.ESTALE, "the file was replaced while it was being opened")
        return fd

    def available(self) -> int:
        return self.size

    def expected_size(self) -> int | None:
        return self.size

    def is_complete(self) -> bool:
        return True

    def failure(self) -> Failure | None:
        return None

    def add_listener(self, listener: IFileSourceListener) -> None:
        pass

    def remove_listener(self, listener: IFileSourceListener) -> None:
        pass



# -*- test-case-name: tests.test_fileresponse,tests.test_downloads -*-
"""
A file already committed to storage, as an `proxypypi.interfaces.IFileSource`.
"""

from __future__ import annotations

import errno
import os
import stat

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

    Symbolic links are never followed, neither the file nor its directory
    (``files/<project>/``): a link planted in the storage must not make the
    proxy serve whatever it points at.  Only a regular file counts.
    """

    path: str
    size: int
    identity: tuple[int, int]
    #: When it was last written; with the size, an entity tag for files
    #: that carry no hash (the project list).
    mtime_ns: int = 0

    @classmethod
    def at(cls, path: str) -> CompleteFile | None:
        """
        The regular file at ``path``, or ``None`` (missing, a link, or its
        directory a link).
        """
        try:
            if not stat.S_ISDIR(os.lstat(os.path.dirname(path)).st_mode):
                return None
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return cls(path, st.st_size, (st.st_dev, st.st_ino), st.st_mtime_ns)

    def open(self) -> int:
        """
        :raises OSError: when the file cannot be opened, is a link (or in a
            directory that is one), or was replaced since it was looked at.
        """
        fd = open_no_links(self.path)
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




def open_no_links(path: str) -> int:
    """
    Open ``path`` for reading without following a symbolic link, neither
    the file nor the directory it is in.

    :raises OSError: ``ELOOP`` (or ``ENOTDIR``) for a link.
    """
    directory = os.open(
        os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    )
    try:
        return os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=directory)
    finally:
        os.close(directory)

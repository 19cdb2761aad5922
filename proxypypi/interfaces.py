"""
Interfaces where proxypypi has, or is designed to have, more than one
implementation.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from zope.interface import Interface


class IFileSourceListener(Interface):
    """
    Someone reading an `IFileSource` who wants to hear when it changes.
    """

    def data_available() -> None:
        """
        More bytes became available, or the source became complete.
        """

    def source_failed(reason: Failure) -> None:
        """
        The source will never be complete: the bytes read so far must not
        be presented as a whole file.
        """


class IFileSource(Interface):
    """
    A distribution file on disk, either complete or still being written by
    a download.  Each reader opens its own file descriptor with `open` and
    reads with ``os.pread``, so readers never disturb each other.
    """

    def open() -> int:
        """
        Open a new read-only file descriptor on the bytes.  The caller owns
        it and must close it.  The descriptor stays valid when a partial
        file is committed (renamed) under its final name.

        :raises OSError: when the file cannot be opened.
        """

    def available() -> int:
        """
        How many bytes, from offset 0, may be sent to clients now.  For a
        download in progress this holds back the tail until the hash is
        verified, so no client sees a complete-looking unverified file.
        """

    def expected_size() -> int | None:
        """
        The total size of the file, if known (always known once complete).
        """

    def is_complete() -> bool:
        """
        Whether every byte is on disk and verified.
        """

    def failure() -> Failure | None:
        """
        Why the source failed, if it did.
        """

    def add_listener(listener: IFileSourceListener) -> None:
        """
        Call ``listener`` on every change until it is removed or the source
        completes or fails.  A complete source never calls listeners.
        """

    def remove_listener(listener: IFileSourceListener) -> None:
        """
        Stop calling ``listener``; unknown listeners are ignored.
        """

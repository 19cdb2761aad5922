# -*- test-case-name: tests.test_shared -*-
"""
Coordination of the worker processes that share a storage: named locks
(one upstream fetch of a page, or of the project list, however many
workers are asked for it at once; one change of the private projects at a
time) and generation files (a change one worker made, seen by the others
at their next look).

Each lock is an exclusive ``flock`` on a file under ``DATA/locks/``, which
the kernel releases when its holder dies, so a killed worker never leaves
a lock behind.  Names share `STRIPES` files (a name's hash picks one), so
the directory stays small however many projects pass through; two names
on one file at the same moment only make one fetch wait for the other.  A
process that finds a lock held waits for it, polling, for a bounded time,
then reads what the holder stored.
"""

from __future__ import annotations

import fcntl
import hashlib
import os

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from proxypypi.cache.storage import write_atomically

#: Seconds between two tries of a lock another process holds.
STEP = 0.02

#: Files the names are spread over.
STRIPES = 65536


@attrs.define(eq=False)
class Held:
    """
    A lock this process holds (or, past the wait, does not: ``fd`` is
    ``None`` and releasing it does nothing).
    """

    fd: int | None

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


@attrs.define
class Locks:
    """
    The locks of one storage's ``locks/`` directory.

    :ivar timeout: the longest wait for a lock; past it, the waiter goes
        on without (its holder is stuck, not dead: a dead one's lock is
        gone), which at worst costs a second upstream fetch.
    """

    directory: str
    clock: IReactorTime
    timeout: float = 90.0

    def path(self, name: str) -> str:
        stripe = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % STRIPES
        return os.path.join(self.directory, f"{stripe:04x}")

    def try_lock(self, name: str) -> Held | None:
        """
        The lock ``name`` if no process holds it.  Blocking, briefly (an
        open and a ``flock``).
        """
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path(name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return Held(fd)

    async def acquire(self, name: str) -> tuple[Held, bool]:
        """
        The lock ``name``, once no other process holds it.

        :returns: the lock, and whether another process held it first (and
            so may have stored what the caller came for).
        """
        waited = 0.0
        while True:
            held = self.try_lock(name)
            if held is not None:
                return held, waited > 0
            if waited >= self.timeout:
                return Held(None), True
            await deferLater(self.clock, STEP, lambda: None)
            waited += STEP


@attrs.define
class Generation:
    """
    A file replaced whenever some state shared by the workers changes: a
    worker that finds it replaced (one ``stat``) reads that state again.
    """

    path: str
    _seen: tuple[int, int] | None = None

    def changed(self) -> bool:
        """
        Whether the file was replaced since this process last looked (or
        bumped it); looking counts as seeing.
        """
        now = _identity(self.path)
        if now == self._seen:
            return False
        self._seen = now
        return True

    def bump(self) -> None:
        """
        Replace the file (atomically), as seen here.  Blocking.
        """
        write_atomically(self.path, os.urandom(8))
        self._seen = _identity(self.path)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns

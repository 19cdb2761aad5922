# -*- test-case-name: tests.test_eviction,tests.test_metrics -*-
"""
What the cache knows of its files in use and its size: one interface,
`IUsageTracker`, with two implementations, chosen once by the composition
root:

- `proxypypi.cache.eviction.Evictor` when ``--max-cache-size`` is set: it
  keeps the access order and evicts the least recently used files;
- `SizeAccounting` otherwise: only the size of ``DATA/files``, for
  ``/metrics`` and the status page.

Either is told by the resource tree when a response reads a file, by the
download manager when a download writes one and when it is committed, and
is driven by a `UsageService` in the service tree.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from proxypypi.cache.storage import FileKey, Storage, stored_files

#: Seconds between scans of ``DATA/files`` for its size, when eviction
#: (which keeps a running total) is off.
STORAGE_SCAN_INTERVAL = 600.0


@attrs.frozen
class UsageFigures:
    """
    The cache's size as far as known, without walking the disk.

    :ivar files: upstream files in ``DATA/files`` (``None``: not known yet).
    :ivar bytes: their size (``None``: not known yet).
    :ivar evicted_files: files evicted since start.
    :ivar evicted_bytes: bytes evicted since start.
    """

    files: int | None
    bytes: int | None
    evicted_files: int = 0
    evicted_bytes: int = 0


class IUsageTracker(Interface):
    """
    Keeps track of the upstream files in ``DATA/files``: which are in use,
    what was stored, and how much there is.
    """

    interval = Attribute("Seconds between two calls of `tick` by the `UsageService`.")

    def reading(key: FileKey) -> Callable[[], None]:
        """
        A response starts reading ``key``; it counts as an access, and the
        file is in use until the returned callable is called.
        """

    def writing(key: FileKey) -> Callable[[], None]:
        """
        A download starts writing ``key``; the file is in use until the
        returned callable is called.
        """

    def stored(key: FileKey, size: int) -> None:
        """
        A download of ``key`` was committed with ``size`` bytes.
        """

    def figures() -> UsageFigures:
        """
        The size of the cache as far as known now; cheap (no disk access).
        """

    def last_used(key: FileKey) -> float | None:
        """
        When ``key`` was last read or stored, if that is recorded (only
        eviction keeps an access order); cheap (no disk access).
        """

    def tick() -> Deferred[None] | None:
        """
        One background pass (a scan, an eviction): never fails, since a
        ``TimerService`` would stop for good on the first failure.
        """

    def close() -> None:
        """
        Stop recording (the service is stopping).
        """


def _nothing() -> None:
    pass


def _scan_size(files_dir: str) -> tuple[int, int]:
    """
    Count and total size of the files the service may have stored under
    ``files_dir``, without keeping a record per file.  Blocking.
    """
    count = total = 0
    for _project, _name, st in stored_files(files_dir):
        count += 1
        total += st.st_size
    return count, total


@implementer(IUsageTracker)
@attrs.define(eq=False)
class SizeAccounting:
    """
    The size of ``DATA/files`` without eviction: scanned off the reactor
    thread now and then (`tick`), and kept current in between by the
    commits of downloads (`stored`).  A file replaced in place, or removed
    by another hand, is set right by the next scan.

    :ivar files: number of files, ``None`` before the first scan.
    :ivar bytes: their total size, ``None`` before the first scan.
    """

    storage: Storage
    clock: IReactorTime
    interval: float = STORAGE_SCAN_INTERVAL
    files: int | None = None
    bytes: int | None = None
    scanned_at: float | None = None
    log = Logger()
    _scanning: bool = False

    def reading(self, key: FileKey) -> Callable[[], None]:
        return _nothing

    def writing(self, key: FileKey) -> Callable[[], None]:
        return _nothing

    def stored(self, key: FileKey, size: int) -> None:
        if self.files is not None and self.bytes is not None:
            self.files += 1
            self.bytes += size

    def figures(self) -> UsageFigures:
        return UsageFigures(self.files, self.bytes)

    def last_used(self, key: FileKey) -> float | None:
        return None

    def tick(self) -> Deferred[None]:
        """
        Measure ``DATA/files`` in the disk thread pool.  Never fails;
        errors are logged.
        """
        if self._scanning:
            return succeed(None)
        self._scanning = True
        d: Deferred[tuple[int, int]] = self.storage.run(_scan_size, self.storage.files_dir)

        def done(result: tuple[int, int]) -> None:
            self.files, self.bytes = result
            self.scanned_at = self.clock.seconds()

        def failed(f: Failure) -> None:
            self.log.failure("cannot measure {path}", f, path=self.storage.files_dir)

        def finished(_: object) -> None:
            self._scanning = False

        scanned: Deferred[None] = d.addCallbacks(done, failed)
        scanned.addBoth(finished)
        return scanned

    def close(self) -> None:
        pass


class UsageService(TimerService):
    """
    Calls `IUsageTracker.tick` every `IUsageTracker.interval` seconds, the
    first time at start-up, and closes the tracker on stop.
    """

    def __init__(self, tracker: IUsageTracker, clock: IReactorTime) -> None:
        super().__init__(tracker.interval, tracker.tick)
        self.tracker = tracker
        self.clock = clock

    def stopService(self) -> Deferred[object] | None:
        stopped: Deferred[object] | None = super().stopService()
        self.tracker.close()
        return stopped

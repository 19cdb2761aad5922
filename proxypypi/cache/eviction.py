# -*- test-case-name: tests.test_eviction -*-
"""
Bounded disk (``--max-cache-size``): the least recently used upstream files
are evicted in the background once the cache grows past its limit.

Only ``DATA/files/`` is ever looked at: private uploads live elsewhere
(``DATA/private/``) and are never counted or removed, and pages are never
touched, so an evicted file stays listed and is fetched again on demand.
A file that a response is reading, or that a download is writing, is never
evicted.

Access order is kept in an append-only journal, ``DATA/access.journal``:
one JSON line ``[time, project, filename]`` per access or commit, rewritten
atomically (compacted) once it is mostly stale lines.  Why a journal and not
the files' own times:

- ``atime`` is not updated on ``noatime`` mounts and only once a day on
  ``relatime`` (the Linux default), and *is* updated by anything that reads
  the files (a backup, ``proxypypi-admin verify``), which would scramble the
  order;
- touching ``mtime`` with ``os.utime`` on every access avoids that, but makes
  every incremental backup (``rsync``, which compares mtime and size) copy
  every file served since the last one, and gives ``mtime`` a meaning no
  other tool expects.

The journal costs one small unsynced ``write`` per access on the reactor
thread (microseconds, like the download chunks of ``STYLE.md`` §2.e).  A
crash loses at most the last few accesses, which only blurs the order a
little; a torn last line is cut off when the journal is read back.  Files
the journal does not know (stored before the limit was set) count as used
at their ``mtime``, which is when they were stored.

Eviction itself is crash-safe: a victim is renamed into ``DATA/tmp/``
(atomic, and on the reactor thread, in the same turn as the check that
nobody reads it, so no request can find it half-gone), then unlinked in the
disk thread pool.  After a crash, ``tmp/`` is emptied at start-up and the
start-up scan no longer sees the file.

Sizes: ``DATA/files`` is scanned once at start-up in the disk thread pool,
then a running total is updated on every commit and eviction.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

import attrs
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from proxypypi.cache.downloads import FileKey
from proxypypi.cache.storage import Storage, stored_files, unlink_all, write_synced

if TYPE_CHECKING:
    from proxypypi.proxy import Proxy

__all__ = [
    "JOURNAL",
    "EvictionService",
    "Evictor",
    "NoEviction",
    "Usage",
    "install",
]

#: The access journal, directly under the storage directory.
JOURNAL = "access.journal"

#: Seconds between background passes (eviction, journal compaction, and a
#: retry of the start-up scan if it failed).  Commits that push the total
#: over the limit start a pass at once; this is the safety net.
INTERVAL = 60.0

#: A pass evicts down to this fraction of the limit, so that one more
#: commit does not start another pass straight away.
LOW_WATER = 0.9

#: Most files renamed away in one reactor turn; a larger backlog continues
#: in the next turn, so the reactor never stalls on a long pass.
BATCH = 256

#: Accesses and commits remembered while the start-up scan runs.
MAX_EARLY = 100_000

#: Stale journal lines tolerated beyond two per tracked file before the
#: journal is compacted.
COMPACT_SLACK = 10_000


class Usage(Protocol):
    """
    What the resource tree and the download manager report about files.
    """

    def serving(self, request: IRequest, key: FileKey) -> None:
        """
        A response for ``key`` starts; it counts as an access, and the file
        is in use until the request finishes.
        """

    def stored(self, key: FileKey, size: int) -> None:
        """
        A download of ``key`` was committed with ``size`` bytes.
        """


class NoEviction:
    """
    The `Usage` of an unbounded cache: nothing to record.
    """

    def serving(self, request: IRequest, key: FileKey) -> None:
        pass

    def stored(self, key: FileKey, size: int) -> None:
        pass


@attrs.define
class _Entry:
    size: int
    used: float


#: What the start-up scan found: every file's size and mtime, the journal's
#: last access per file, and how many lines the journal had.
_Scan = tuple[dict[FileKey, tuple[int, float]], dict[FileKey, float], int]


def _line(key: FileKey, used: float) -> bytes:
    return (json.dumps([used, key.project, key.filename]) + "\n").encode()


def scan_files(files_dir: str) -> dict[FileKey, tuple[int, float]]:
    """
    Size and mtime of every file the service may have stored under
    ``files_dir``: normalized project directories, safe file names, no
    temporary files.  Anything else is not ours to evict (see
    ``proxypypi-admin verify``).  Blocking.
    """
    return {
        FileKey(project, name): (st.st_size, st.st_mtime)
        for project, name, st in stored_files(files_dir)
    }


def read_journal(path: str) -> tuple[dict[FileKey, float], int]:
    """
    The last recorded access of every file in the journal at ``path``, and
    its number of lines.  A torn last line (a crash mid-write) is cut off
    the file, so appends start on a fresh line; unreadable lines are
    skipped.  Blocking.
    """
    used: dict[FileKey, float] = {}
    lines = 0
    end = 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return used, lines
    with f:
        # Line by line: the journal can hold a few lines per stored file.
        for raw in f:
            if not raw.endswith(b"\n"):
                os.truncate(path, end)
                break
            end += len(raw)
            lines += 1
            try:
                when, project, filename = json.loads(raw)
            except ValueError:
                continue
            if isinstance(when, int | float) and isinstance(project, str):
                if isinstance(filename, str):
                    used[FileKey(project, filename)] = float(when)
    return used, lines


def _scan(files_dir: str, journal: str) -> _Scan:
    sizes = scan_files(files_dir)
    used, lines = read_journal(journal)
    return sizes, used, lines


@attrs.define(eq=False)
class Evictor:
    """
    The size and access order of the upstream files in storage, and the
    eviction of the least recently used ones past ``limit``.

    :ivar limit: bytes of upstream files to keep.
    :ivar busy: the files being downloaded right now (never evicted).
    :ivar low_water: a pass evicts down to this fraction of ``limit``.
    """

    storage: Storage
    clock: IReactorTime
    limit: int
    busy: Callable[[], Iterable[FileKey]] = lambda: ()
    low_water: float = LOW_WATER
    compact_slack: int = COMPACT_SLACK
    log = Logger()

    _entries: OrderedDict[FileKey, _Entry] = attrs.field(factory=OrderedDict, init=False)
    _total: int = attrs.field(default=0, init=False)
    _readers: Counter[FileKey] = attrs.field(factory=Counter, init=False)
    _loaded: bool = attrs.field(default=False, init=False)
    _loading: bool = attrs.field(default=False, init=False)
    _early: list[tuple[FileKey, int | None, float]] = attrs.field(factory=list, init=False)
    _fd: int | None = attrs.field(default=None, init=False)
    _lines: int = attrs.field(default=0, init=False)
    _compacting: list[bytes] | None = attrs.field(default=None, init=False)
    _scheduled: IDelayedCall | None = attrs.field(default=None, init=False)
    _write_failed: bool = attrs.field(default=False, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    #: Files and bytes evicted since start (``/metrics``, the status page).
    evicted_files: int = attrs.field(default=0, init=False)
    evicted_bytes: int = attrs.field(default=0, init=False)

    @property
    def journal_path(self) -> str:
        return os.path.join(self.storage.root, JOURNAL)

    @property
    def total(self) -> int:
        """
        Bytes of upstream files in storage, as far as known.
        """
        return self._total

    @property
    def count(self) -> int:
        """
        Upstream files in storage, as far as known.
        """
        return len(self._entries)

    @property
    def loaded(self) -> bool:
        """
        Whether the start-up scan is done (nothing is evicted before).
        """
        return self._loaded

    def tracked(self) -> list[FileKey]:
        """
        The files tracked, least recently used first.
        """
        return list(self._entries)

    def in_use(self, key: FileKey) -> bool:
        """
        Whether a response is reading ``key`` or a download is writing it.
        """
        return self._readers[key] > 0 or key in set(self.busy())

    # Usage

    def serving(self, request: IRequest, key: FileKey) -> None:
        self._readers[key] += 1
        cast(Request, request).notifyFinish().addBoth(lambda _: self._release(key))
        try:
            self._touch(key, None)
        except Exception:
            self.log.failure("cannot record an access to {filename}", filename=key.filename)

    def stored(self, key: FileKey, size: int) -> None:
        try:
            self._touch(key, size)
            if self._loaded and self._total > self.limit and self._scheduled is None:
                self._scheduled = self.clock.callLater(0, self._scheduled_pass)
        except Exception:
            self.log.failure("cannot record the commit of {filename}", filename=key.filename)

    def _release(self, key: FileKey) -> None:
        self._readers[key] -= 1
        if self._readers[key] <= 0:
            del self._readers[key]

    def _touch(self, key: FileKey, size: int | None) -> None:
        """
        Record an access (``size`` ``None``) or a commit of ``key``.
        """
        now = self.clock.seconds()
        if not self._loaded:
            # Bounded, should the scan keep failing: a retried scan finds
            # the files on disk anyway; only their order would be lost.
            if len(self._early) < MAX_EARLY:
                self._early.append((key, size, now))
            return
        if not self._apply(key, size, now):
            return
        self._append(_line(key, now))

    def _apply(self, key: FileKey, size: int | None, now: float) -> bool:
        entry = self._entries.get(key)
        if size is None:
            if entry is None:
                # Not stored (yet): its commit will be recorded.
                return False
            entry.used = now
        else:
            if entry is not None:
                self._total -= entry.size
            entry = self._entries[key] = _Entry(size, now)
            self._total += size
        self._entries.move_to_end(key)
        return True

    # The journal

    def _append(self, line: bytes) -> None:
        if self._compacting is not None:
            self._compacting.append(line)
        if self._fd is None:
            return
        try:
            os.write(self._fd, line)
        except OSError as e:
            if not self._write_failed:
                self._write_failed = True
                self.log.warn(
                    "cannot write the access journal {path} ({error}); the order of "
                    "accesses since is kept in memory only",
                    path=self.journal_path,
                    error=os.strerror(e.errno or 0),
                )
            return
        self._write_failed = False
        self._lines += 1

    def needs_compaction(self) -> bool:
        return self._lines > 2 * len(self._entries) + self.compact_slack

    def compact(self) -> Deferred[None]:
        """
        Rewrite the journal with one line per tracked file: the snapshot is
        written and synced to a temporary file in the disk thread pool,
        then renamed over the journal here, on the reactor thread, where
        the accesses recorded in the meantime are appended again, so none
        is lost.  A crash at any point leaves the old journal or the new.
        Never fails; errors are logged.
        """
        if self._compacting is not None or self._fd is None:
            return succeed(None)
        snapshot = b"".join(_line(k, e.used) for k, e in self._entries.items())
        self._compacting = []
        tmp = self.journal_path + ".tmp"
        d: Deferred[None] = self.storage.run(write_synced, tmp, snapshot)

        def swap(_: object) -> None:
            pending = self._compacting or []
            self._compacting = None
            if self._fd is None:
                # Closed meanwhile (service stopping).
                return
            os.replace(tmp, self.journal_path)
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND)
            os.close(self._fd)
            self._fd = fd
            self._lines = snapshot.count(b"\n")
            for line in pending:
                self._append(line)
            self.log.info("compacted the access journal to {count} lines", count=self._lines)

        def failed(f: Failure) -> None:
            self._compacting = None
            self.log.failure("cannot compact the access journal {path}", f, path=tmp)

        d.addCallback(swap)
        d.addErrback(failed)
        return d

    # Start-up

    def load(self) -> Deferred[None]:
        """
        Scan ``DATA/files`` and read the journal in the disk thread pool,
        then start tracking.  Never fails; on an error it is logged, and
        the next background pass tries again.
        """
        if self._loaded or self._loading:
            return succeed(None)
        self._loading = True
        d: Deferred[_Scan] = self.storage.run(_scan, self.storage.files_dir, self.journal_path)

        def done(result: _Scan) -> None:
            self._loading = False
            if not self._closed:
                self._start(*result)

        def failed(f: Failure) -> None:
            self._loading = False
            self.log.failure(
                "cannot scan {path} for the cache size; retrying in the next pass",
                f,
                path=self.storage.files_dir,
            )

        started: Deferred[None] = d.addCallbacks(done, failed)
        started.addErrback(lambda f: self.log.failure("cannot start tracking the cache size", f))
        return started

    def _start(
        self, sizes: dict[FileKey, tuple[int, float]], used: dict[FileKey, float], lines: int
    ) -> None:
        ordered = sorted(
            ((used.get(key, mtime), key, size) for key, (size, mtime) in sizes.items()),
            key=lambda t: t[0],
        )
        for when, key, size in ordered:
            self._entries[key] = _Entry(size, when)
            self._total += size
        self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lines = lines
        self._loaded = True
        early, self._early = self._early, []
        for key, stored_size, when in early:
            if self._apply(key, stored_size, when):
                self._append(_line(key, when))
        self.log.info(
            "cache holds {total} bytes in {count} upstream files; limit {limit} bytes",
            total=self._total,
            count=len(self._entries),
            limit=self.limit,
        )
        if self.needs_compaction():
            self.compact()
        if self._total > self.limit:
            self.evict()

    def close(self) -> None:
        """
        Stop recording (service stopping).
        """
        self._closed = True
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # Eviction

    def _scheduled_pass(self) -> None:
        self._scheduled = None
        try:
            self.evict()
        except Exception:
            self.log.failure("eviction pass failed")

    def evict(self) -> int:
        """
        Evict least recently used files not in use until the total is down
        to ``low_water`` of the limit (at most `BATCH` per call; the rest
        continues in the next reactor turn).

        :returns: the bytes freed.
        """
        if not self._loaded or self._total <= self.limit:
            return 0
        target = int(self.limit * self.low_water)
        busy = set(self.busy())
        victims: list[FileKey] = []
        excess = self._total - target
        for key, entry in self._entries.items():
            if excess <= 0 or len(victims) >= BATCH:
                break
            if key in busy or self._readers[key] > 0:
                continue
            victims.append(key)
            excess -= entry.size
        trash: list[str] = []
        freed = 0
        for key in victims:
            entry = self._entries.pop(key)
            self._total -= entry.size
            path = self.storage.file_path(key.project, key.filename)
            parked = os.path.join(self.storage.tmp_dir, f"evicted-{secrets.token_hex(8)}")
            try:
                os.rename(path, parked)
            except FileNotFoundError:
                # Removed by someone else (``proxypypi-admin verify``):
                # nothing left to free, and no longer tracked.
                continue
            except OSError as e:
                if e.errno != errno.EXDEV:
                    self.log.warn(
                        "cannot evict {path} ({error}); no longer tracking it",
                        path=path,
                        error=os.strerror(e.errno or 0),
                    )
                    continue
                parked = path
            trash.append(parked)
            freed += entry.size
            self.log.debug(
                "evicting {project}/{filename} ({size} bytes)",
                project=key.project,
                filename=key.filename,
                size=entry.size,
            )
        self.evicted_files += len(trash)
        self.evicted_bytes += freed
        if trash:
            unlinked: Deferred[None] = self.storage.run(unlink_all, trash)
            unlinked.addErrback(lambda f: self.log.failure("cannot remove evicted files", f))
            self.log.info(
                "evicted {count} least recently used files ({freed} bytes); "
                "cache holds {total} of {limit} bytes",
                count=len(trash),
                freed=freed,
                total=self._total,
                limit=self.limit,
            )
        if (
            len(victims) == BATCH
            and self._total > target
            and self._scheduled is None
            and not self._closed
        ):
            self._scheduled = self.clock.callLater(0, self._scheduled_pass)
        return freed

    def tick(self) -> None:
        """
        One background pass: finish starting if the scan failed, compact
        the journal when it is mostly stale, evict if over the limit.
        Never raises: a ``LoopingCall`` stops for good on the first error
        (``STYLE.md`` §2.d).
        """
        try:
            if not self._loaded:
                self.load()
                return
            if self.needs_compaction():
                self.compact()
            self.evict()
            if self._total > self.limit and self._scheduled is None:
                self.log.warn(
                    "cache holds {total} bytes, over its limit of {limit}: "
                    "every remaining file is in use",
                    total=self._total,
                    limit=self.limit,
                )
        except Exception:
            self.log.failure("eviction pass failed; trying again in the next one")


class EvictionService(TimerService):
    """
    Runs `Evictor.tick` every ``interval`` seconds (the first at start-up,
    which starts the scan) and closes the journal on stop.
    """

    def __init__(self, evictor: Evictor, interval: float = INTERVAL) -> None:
        super().__init__(interval, evictor.tick)
        self.evictor = evictor
        self.clock = evictor.clock

    def stopService(self) -> Deferred[Any] | None:
        stopped: Deferred[Any] | None = super().stopService()
        self.evictor.close()
        return stopped


def install(proxy: Proxy, limit: int, interval: float = INTERVAL) -> EvictionService:
    """
    Bound ``proxy``'s cache to ``limit`` bytes: hook an `Evictor` into its
    resource tree and download manager; the returned service (to add to
    the service tree) drives it.
    """
    evictor = Evictor(
        proxy.storage,
        proxy.clock,
        limit,
        busy=lambda: (d.key for d in proxy.downloads.in_flight()),
    )
    proxy.usage = evictor
    proxy.downloads.on_stored = evictor.stored
    return EvictionService(evictor, interval)

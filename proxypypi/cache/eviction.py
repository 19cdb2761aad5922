# -*- test-case-name: tests.test_eviction -*-
"""
Bounded disk (``--max-cache-size``): the least recently used upstream files
are evicted in the background once the cache grows past its limit.

Only ``DATA/files/`` is ever looked at: private uploads live elsewhere
(``DATA/private/``) and are never counted or removed, and pages are never
touched, so an evicted file stays listed and is fetched again on demand.
A file that a response is reading, or that a download is writing, is never
evicted.

Access order is kept in the access journal (`proxypypi.cache.journal`);
files the journal does not know (stored before the limit was set) count as
used at their ``mtime``, which is when they were stored.

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
import os
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from proxypypi.cache.journal import JOURNAL, AccessJournal, read_journal
from proxypypi.cache.storage import FileKey, Storage, stored_files, unlink_all
from proxypypi.cache.usage import IUsageTracker, UsageFigures

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


@attrs.define
class _Entry:
    size: int
    used: float


#: What the start-up scan found: every file's size and mtime, the journal's
#: last access per file, and how many lines the journal had.
_Scan = tuple[dict[FileKey, tuple[int, float]], dict[FileKey, float], int]


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


def _scan(files_dir: str, journal: str) -> _Scan:
    sizes = scan_files(files_dir)
    used, lines = read_journal(journal)
    return sizes, used, lines


@implementer(IUsageTracker)
@attrs.define(eq=False)
class Evictor:
    """
    The size and access order of the upstream files in storage, and the
    eviction of the least recently used ones past ``limit``.

    :ivar limit: bytes of upstream files to keep.
    :ivar interval: seconds between background passes (`tick`).
    :ivar low_water: a pass evicts down to this fraction of ``limit``.
    """

    storage: Storage
    clock: IReactorTime
    limit: int
    interval: float = INTERVAL
    low_water: float = LOW_WATER
    compact_slack: int = COMPACT_SLACK
    log = Logger()

    _entries: OrderedDict[FileKey, _Entry] = attrs.field(factory=OrderedDict, init=False)
    _total: int = attrs.field(default=0, init=False)
    #: Responses reading, and downloads writing, each file now.
    _users: Counter[FileKey] = attrs.field(factory=Counter, init=False)
    _loaded: bool = attrs.field(default=False, init=False)
    _loading: bool = attrs.field(default=False, init=False)
    _early: list[tuple[FileKey, int | None, float]] = attrs.field(factory=list, init=False)
    _journal: AccessJournal = attrs.field(init=False)
    _scheduled: IDelayedCall | None = attrs.field(default=None, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    #: Files and bytes evicted since start (``/metrics``, the status page).
    evicted_files: int = attrs.field(default=0, init=False)
    evicted_bytes: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._journal = AccessJournal(self.journal_path, self.storage.run)

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
        return self._users[key] > 0

    # IUsageTracker

    def reading(self, key: FileKey) -> Callable[[], None]:
        release = self._use(key)
        try:
            self._touch(key, None)
        except Exception:
            self.log.failure("cannot record an access to {filename}", filename=key.filename)
        return release

    def writing(self, key: FileKey) -> Callable[[], None]:
        return self._use(key)

    def _use(self, key: FileKey) -> Callable[[], None]:
        self._users[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._users[key] -= 1
                if self._users[key] <= 0:
                    del self._users[key]

        return release

    def figures(self) -> UsageFigures:
        if not self._loaded:
            return UsageFigures(None, None, self.evicted_files, self.evicted_bytes)
        return UsageFigures(
            len(self._entries), self._total, self.evicted_files, self.evicted_bytes
        )

    def last_used(self, key: FileKey) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.used

    def stored(self, key: FileKey, size: int) -> None:
        try:
            self._touch(key, size)
            if self._loaded and self._total > self.limit and self._scheduled is None:
                self._scheduled = self.clock.callLater(0, self._scheduled_pass)
        except Exception:
            self.log.failure("cannot record the commit of {filename}", filename=key.filename)

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
        if self._apply(key, size, now):
            self._journal.append(key, now)

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

    def needs_compaction(self) -> bool:
        return self._journal.lines > 2 * len(self._entries) + self.compact_slack

    def compact(self) -> Deferred[None]:
        """
        Rewrite the journal with one line per tracked file (see
        `AccessJournal.compact`).  Never fails; errors are logged.
        """
        return self._journal.compact([(key, e.used) for key, e in self._entries.items()])

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
        self._journal.open(lines)
        self._loaded = True
        early, self._early = self._early, []
        for key, stored_size, when in early:
            if self._apply(key, stored_size, when):
                self._journal.append(key, when)
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
        self._journal.close()

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
        victims: list[FileKey] = []
        excess = self._total - target
        for key, entry in self._entries.items():
            if excess <= 0 or len(victims) >= BATCH:
                break
            if self._users[key] > 0:
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

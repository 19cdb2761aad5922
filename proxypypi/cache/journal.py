# -*- test-case-name: tests.test_eviction -*-
"""
The access journal, ``DATA/access.journal``: the order in which upstream
files were used, kept across restarts for the eviction of the least
recently used ones (`proxypypi.cache.eviction`).

One JSON line ``[time, project, filename]`` per access or commit, appended
with one small unsynced ``write`` on the reactor thread (microseconds, like
the download chunks of ``STYLE.md`` §2.e), and rewritten atomically
(compacted) once it is mostly stale lines.  A crash loses at most the last
few accesses, which only blurs the order a little; a torn last line is cut
off when the journal is read back.

Why a journal and not the files' own times:

- ``atime`` is not updated on ``noatime`` mounts and only once a day on
  ``relatime`` (the Linux default), and *is* updated by anything that reads
  the files (a backup, ``proxypypi-admin verify``), which would scramble the
  order;
- touching ``mtime`` with ``os.utime`` on every access avoids that, but makes
  every incremental backup (``rsync``, which compares mtime and size) copy
  every file served since the last one, and gives ``mtime`` a meaning no
  other tool expects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxypypi.cache.storage import FileKey, Runner, write_synced

#: The journal's name, directly under the storage directory.
JOURNAL = "access.journal"


def journal_line(key: FileKey, used: float) -> bytes:
    return (json.dumps([used, key.project, key.filename]) + "\n").encode()


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


@attrs.define(eq=False)
class AccessJournal:
    """
    The open journal: appends, and compaction without losing an append.

    :ivar path: the journal file.
    :ivar run: runs the compaction's write and fsync off the reactor thread.
    :ivar lines: lines in the journal, as far as known.
    """

    path: str
    run: Runner
    log = Logger()

    lines: int = attrs.field(default=0, init=False)
    _fd: int | None = attrs.field(default=None, init=False)
    _compacting: list[bytes] | None = attrs.field(default=None, init=False)
    _write_failed: bool = attrs.field(default=False, init=False)

    def open(self, lines: int) -> None:
        """
        Start appending to the journal, which holds ``lines`` lines.
        """
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lines = lines

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def append(self, key: FileKey, used: float) -> None:
        """
        Record a use of ``key``; a failed write is logged once and the
        order kept in memory only until writes work again.
        """
        self._write(journal_line(key, used))

    def _write(self, line: bytes) -> None:
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
                    path=self.path,
                    error=os.strerror(e.errno or 0),
                )
            return
        self._write_failed = False
        self.lines += 1

    def compact(self, snapshot: Iterable[tuple[FileKey, float]]) -> Deferred[None]:
        """
        Rewrite the journal with one line per entry of ``snapshot``: it is
        written and synced to a temporary file in the disk thread pool,
        then renamed over the journal here, on the reactor thread, where
        the accesses recorded in the meantime are appended again, so none
        is lost.  A crash at any point leaves the old journal or the new.
        Never fails; errors are logged.
        """
        if self._compacting is not None or self._fd is None:
            return succeed(None)
        data = b"".join(journal_line(key, used) for key, used in snapshot)
        self._compacting = []
        tmp = self.path + ".tmp"
        d: Deferred[None] = self.run(write_synced, tmp, data)

        def swap(_: object) -> None:
            pending = self._compacting or []
            self._compacting = None
            if self._fd is None:
                # Closed meanwhile (service stopping).
                return
            os.replace(tmp, self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            os.close(self._fd)
            self._fd = fd
            self.lines = data.count(b"\n")
            for line in pending:
                self._write(line)
            self.log.info("compacted the access journal to {count} lines", count=self.lines)

        def failed(f: Failure) -> None:
            self._compacting = None
            self.log.failure("cannot compact the access journal {path}", f, path=tmp)

        d.addCallback(swap)
        d.addErrback(failed)
        return d

# -*- test-case-name: tests.test_downloads -*-
"""
The downloads in flight, one per file however many clients ask, and
however many worker processes share the storage: this process's own
(`proxypypi.cache.download.Download`) or another's, read from its partial
file (`proxypypi.cache.foreign.ForeignDownload`); and the memory of origins
that supplied bad bytes.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime

from proxypypi.cache.download import Download
from proxypypi.cache.foreign import ForeignDownload, write_size
from proxypypi.cache.storage import Claim, FileKey, Storage, unlink_all
from proxypypi.cache.transfer import transfer
from proxypypi.cache.usage import IUsageTracker
from proxypypi.upstream.origin import Origin

#: Files whose hash failed that the manager remembers the origins of.
MAX_TAINTED = 1024



@attrs.define
class Manager:
    """
    The downloads in flight, one per file (single-flight).
    """

    storage: Storage
    clock: IReactorTime
    #: Told of each download's start, end and commit (`IUsageTracker`).
    usage: IUsageTracker
    idle_timeout: float = 30.0
    #: Told of each file stored (`proxypypi.cache.extractor`), if anyone.
    on_stored: Callable[[FileKey], None] | None = None
    _active: dict[FileKey, Download | ForeignDownload] = attrs.field(factory=dict)
    #: Files whose last download failed its hash, and the origins to blame.
    _tainted: OrderedDict[FileKey, frozenset[str]] = attrs.field(factory=OrderedDict)

    def get(
        self,
        key: FileKey,
        origins: Sequence[Origin],
        hashes: Mapping[str, str],
        size: int | None,
        seen: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> Download | ForeignDownload:
        """
        The download of ``key``: the one in flight in this process, the one
        another process runs (read from its partial file), or a new one.

        :param seen: the identity (device, inode) of the file the caller
            found in place and will not serve (damaged), if any: another
            file there now was committed by another process meanwhile.
        :param limit: the most bytes the file may have (`Download.limit`).
        """
        existing = self._active.get(key)
        if existing is not None:
            return existing

        def ours(claim: Claim) -> Download:
            return self._start(key, origins, hashes, size, claim, limit)

        claim = self.storage.claim(key)
        download: Download | ForeignDownload
        if claim is not None and self._identity(key) in (None, seen):
            download = ours(claim)
        else:
            if claim is not None:
                # Another process finished it between our look and our claim.
                self.storage.discard(claim.fd, claim.path)
            download = ForeignDownload(key, size, self.storage, self.clock, ours)
            download.start()
        self._active[key] = download
        released = self.usage.writing(key)
        download.when_done().addCallback(lambda _: self._ended(download, released))
        return download

    def _start(
        self,
        key: FileKey,
        origins: Sequence[Origin],
        hashes: Mapping[str, str],
        size: int | None,
        claim: Claim,
        limit: int | None,
    ) -> Download:
        tainted = self._tainted.get(key, frozenset())
        if tainted:
            # Stable: the untainted origins keep their order, first.
            origins = sorted(origins, key=lambda o: o.url in tainted)
        download = Download(
            key, origins, hashes, size, self.storage, self.clock, self.idle_timeout, claim, limit
        )
        download.start(transfer)
        # A failure reaches the clients through their own waits.
        download.wait_for_headers().addCallbacks(lambda _: self._announce(download), lambda _: None)
        download.when_done().addBoth(lambda _: unlink_all([claim.path + ".size"]))
        return download

    def _identity(self, key: FileKey) -> tuple[int, int] | None:
        try:
            st = os.stat(self.storage.file_path(key.project, key.filename))
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _announce(self, download: Download) -> None:
        """
        Tell the other processes the size, unless the page told them.
        """
        total = download.expected_size()
        if download.size is None and total is not None:
            try:
                write_size(self.storage, download.key, total)
            except OSError:
                pass  # they answer without a Content-Length

    def _ended(self, download: Download | ForeignDownload, released: Callable[[], None]) -> None:
        self._active.pop(download.key, None)
        released()
        self._remember_blame(download)
        # Stored by this process: another's counts it there.
        if download.is_complete() and download.stored_here:
            self.usage.stored(download.key, download.available())
            if self.on_stored is not None:
                self.on_stored(download.key)

    def _remember_blame(self, download: Download | ForeignDownload) -> None:
        key = download.key
        if download.bad_origins:
            self._tainted[key] = self._tainted.get(key, frozenset()) | set(download.bad_origins)
            self._tainted.move_to_end(key)
            while len(self._tainted) > MAX_TAINTED:
                self._tainted.popitem(last=False)
        elif download.is_complete():
            self._tainted.pop(key, None)

    def in_flight(self) -> list[Download | ForeignDownload]:
        return list(self._active.values())

    def running(self, key: FileKey) -> Download | ForeignDownload | None:
        """
        The download of ``key`` in flight, if any (a request that finds one
        joins it rather than starting another).
        """
        return self._active.get(key)

    def cancel_all(self) -> None:
        for download in list(self._active.values()):
            download.cancel()

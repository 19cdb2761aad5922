# -*- test-case-name: tests.test_downloads -*-
"""
The downloads in flight, one per file however many clients ask
(`proxypypi.cache.download.Download`), and the memory of origins that
supplied bad bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime

from proxypypi.cache.download import Download
from proxypypi.cache.storage import FileKey, Storage
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
    _active: dict[FileKey, Download] = attrs.field(factory=dict)
    #: Files whose last download failed its hash, and the origins to blame.
    _tainted: OrderedDict[FileKey, frozenset[str]] = attrs.field(factory=OrderedDict)

    def get(
        self,
        key: FileKey,
        origins: Sequence[Origin],
        hashes: Mapping[str, str],
        size: int | None,
        limit: int | None = None,
    ) -> Download:
        """
        The download of ``key``: the one in flight, or a new one.

        :param limit: the most bytes the file may have (`Download.limit`).
        """
        existing = self._active.get(key)
        if existing is not None:
            return existing
        tainted = self._tainted.get(key, frozenset())
        if tainted:
            # Stable: the untainted origins keep their order, first.
            origins = sorted(origins, key=lambda o: o.url in tainted)
        download = Download(
            key, origins, hashes, size, self.storage, self.clock, self.idle_timeout, limit
        )
        self._active[key] = download
        released = self.usage.writing(key)
        download.start(transfer)
        download.when_done().addCallback(lambda _: self._ended(download, released))
        return download

    def _ended(self, download: Download, released: Callable[[], None]) -> None:
        self._active.pop(download.key, None)
        released()
        self._remember_blame(download)
        if download.is_complete():
            self.usage.stored(download.key, download.available())

    def _remember_blame(self, download: Download) -> None:
        key = download.key
        if download.bad_origins:
            self._tainted[key] = self._tainted.get(key, frozenset()) | set(download.bad_origins)
            self._tainted.move_to_end(key)
            while len(self._tainted) > MAX_TAINTED:
                self._tainted.popitem(last=False)
        elif download.is_complete():
            self._tainted.pop(key, None)

    def in_flight(self) -> list[Download]:
        return list(self._active.values())

    def running(self, key: FileKey) -> Download | None:
        """
        The download of ``key`` in flight, if any (a request that finds one
        joins it rather than starting another).
        """
        return self._active.get(key)

    def cancel_all(self) -> None:
        for download in list(self._active.values()):
            download.cancel()

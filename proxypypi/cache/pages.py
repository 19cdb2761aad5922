# -*- test-case-name: tests.test_index -*-
"""
Project pages: cached on disk, fresh for a while, refreshed from the
upstreams, and never lost.

A page is answered from memory or disk while fresh.  A stale page is
answered at once and refreshed in the background (one refresh per project
however many requests); when no upstream answers, the last page stays in
use.  Files we stored stay listed after the upstream drops them, marked as
removed upstream.  Rendered HTML and JSON are kept with the page, so a hot
page costs no rendering per request.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import attrs
from packaging.utils import NormalizedName
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxypypi.cache.page import CachedPage
from proxypypi.cache.storage import Storage, unlink_all
from proxypypi.simple.model import ProjectPage
from proxypypi.simple.parse import PageParseError
from proxypypi.upstream.fetch import describe_failure
from proxypypi.upstream.pages import PageFetcher, PageResult, ProjectNotFound
from proxypypi.waiting import SingleFlight

#: Default bytes of pages (parsed, and rendered as HTML and JSON, plain and
#: gzip) kept in memory; the least recently used beyond it are read from
#: disk again when asked for.  A 300-file page weighs about 0.6 MB.
MEMORY_BYTES = 128 * 1024 * 1024

#: Seconds a stale page is served without another refresh attempt after
#: one failed (stale-if-error without hammering a dead upstream).
STALE_RETRY_AFTER = 30.0

#: Pages with at least this many files are rendered in the disk threads
#: before they are first served (smaller ones render faster than the
#: hand-over to a thread costs).
PRERENDER_FILES = 500

#: What one listed file costs in memory, parsed and rendered four ways.
BYTES_PER_FILE = 2048


def page_weight(cached: CachedPage) -> int:
    """
    The memory a page is expected to take once rendered (an estimate: the
    renderings are made lazily, after the page is remembered).
    """
    return 4096 + BYTES_PER_FILE * len(cached.page.files)


@attrs.define
class PageCache:
    """
    Project pages from the upstreams, kept on disk and in memory.
    """

    #: Asks the upstreams for pages.
    upstream: PageFetcher
    storage: Storage
    clock: IReactorTime
    ttl: float = 600.0
    negative_ttl: float = 60.0
    forget_removed: bool = False
    offline: bool = False
    #: Bytes of pages held in memory (see `MEMORY_BYTES`).
    memory_budget: int = MEMORY_BYTES
    #: Pages with at least this many files are rendered in the disk
    #: threads before they are first served (see `PRERENDER_FILES`).
    prerender_files: int = PRERENDER_FILES
    log = Logger()

    _memory: OrderedDict[str, CachedPage] = attrs.field(factory=OrderedDict)
    _memory_bytes: int = 0
    _refreshing: SingleFlight[str, CachedPage] = attrs.field(factory=SingleFlight)
    _not_found: dict[str, float] = attrs.field(factory=dict)

    def in_memory(self, name: NormalizedName) -> CachedPage | None:
        """
        The page of ``name`` if it is in memory (no I/O at all).
        """
        cached = self._memory.get(name)
        if cached is not None:
            self._memory.move_to_end(name)
        return cached

    def peek(self, name: NormalizedName) -> CachedPage | None:
        """
        The page we hold for ``name``, fresh or not, without asking any
        upstream; reads the disk on the calling thread when it is not in
        memory (the service itself loads pages with `get`, off the reactor).
        """
        cached = self.in_memory(name)
        if cached is None:
            cached = self._load(name)
            if cached is not None:
                self._remember(cached)
        return cached

    def _load(self, name: NormalizedName) -> CachedPage | None:
        """
        Read and parse the stored page of ``name``.  Blocking, and safe in a
        thread: it touches no shared state.
        """
        raw = self.storage.read_page(name)
        if raw is None:
            return None
        try:
            cached = CachedPage.from_bytes(name, raw)
        except (ValueError, PageParseError) as e:
            self.log.warn(
                "ignoring damaged stored page for {project}: {error}", project=name, error=e
            )
            return None
        if self.offline:
            # Offline, a file that is not on disk cannot be had: listing it
            # would only make an installer choose it and fail.
            cached = cached.only(
                lambda f: self.storage.has_file(name, f.filename), self.clock.seconds()
            )
        return cached

    def _remember(self, cached: CachedPage) -> None:
        name = cached.page.name
        previous = self._memory.pop(name, None)
        if previous is not None:
            self._memory_bytes -= page_weight(previous)
        self._memory[name] = cached
        self._memory_bytes += page_weight(cached)
        while self._memory_bytes > self.memory_budget and len(self._memory) > 1:
            _, evicted = self._memory.popitem(last=False)
            self._memory_bytes -= page_weight(evicted)

    def ready(self, name: NormalizedName) -> CachedPage | None:
        """
        The page of ``name`` if one can be answered without waiting: fresh,
        or stale (a background refresh is then started).  This is the hot
        path of every index request, so it does no I/O at all: a page that
        is not in memory is loaded from disk by `get`, off the reactor.
        """
        cached = self.in_memory(name)
        if cached is not None:
            self._refresh_if_stale(name, cached)
        return cached

    def _refresh_if_stale(self, name: NormalizedName, cached: CachedPage) -> None:
        if not self.is_fresh(cached):
            self._refresh(name, cached).addErrback(lambda _: None)

    def is_fresh(self, cached: CachedPage) -> bool:
        """
        Whether ``cached`` is within its TTL (offline, every page is).
        """
        return self.offline or self.clock.seconds() - cached.fetched_at < self.ttl

    def get(self, name: NormalizedName) -> Deferred[CachedPage]:
        """
        The page of ``name``: fresh from cache, stale from cache (refreshed
        in the background), or fetched now.

        :returns: a Deferred failing with `ProjectNotFound` or
            `proxypypi.upstream.pages.UpstreamUnavailable` when there is nothing
            to serve.
        """
        cached = self.ready(name)
        if cached is not None:
            return succeed(cached)
        return Deferred.fromCoroutine(self._get_from_disk_or_upstream(name))

    async def _get_from_disk_or_upstream(self, name: NormalizedName) -> CachedPage:
        loaded: CachedPage | None = await self.storage.run(self._load, name)
        if loaded is not None:
            # Another request may have brought a newer page meanwhile.
            cached = self.in_memory(name)
            if cached is None:
                cached = loaded
                self._remember(cached)
            self._refresh_if_stale(name, cached)
            return cached
        missing_since = self._not_found.get(name)
        if self.offline or (
            missing_since is not None and self.clock.seconds() - missing_since < self.negative_ttl
        ):
            raise ProjectNotFound(name)
        return await self._refresh(name, None)

    def _refresh(self, name: NormalizedName, cached: CachedPage | None) -> Deferred[CachedPage]:
        return self._refreshing.run(name, lambda: Deferred.fromCoroutine(self._fetch(name, cached)))

    async def _fetch(self, name: NormalizedName, cached: CachedPage | None) -> CachedPage:
        validators = cached.validators() if cached is not None else None
        try:
            result = await self.upstream.fetch(name, validators)
        except ProjectNotFound:
            self._missing(name)
            kept = self._keep_only_stored(cached)
            if kept is None:
                if cached is not None:
                    # Gone everywhere, nothing of it stored: forget the old
                    # page, or it would be served stale forever.
                    await self._forget(name)
                raise
            self.log.warn(
                "upstreams no longer have {project}; serving the files stored here",
                project=name,
            )
            return await self._store(kept)
        except Exception as e:
            if cached is None:
                raise
            self.log.warn(
                "serving stale page of {project}: {reason}",
                project=name,
                reason=describe_failure(Failure(e)),
            )
            # Keep serving it without trying again for a while: a group
            # that is down would otherwise be asked again on every request.
            retry = cached.touched(self.clock.seconds() - self.ttl + STALE_RETRY_AFTER)
            self._remember(retry)
            return retry
        self._not_found.pop(name, None)
        return await self._store(self._merge(name, cached, result))

    def _missing(self, name: NormalizedName) -> None:
        """
        Remember that no upstream has ``name``, and forget the names whose
        negative TTL is over (kept in time order, oldest first, so that is
        cheap), so ever new names cannot grow this without bound.
        """
        now = self.clock.seconds()
        self._not_found.pop(name, None)
        self._not_found[name] = now
        expired = []
        for other, since in self._not_found.items():
            if now - since < self.negative_ttl:
                break
            expired.append(other)
        for other in expired:
            del self._not_found[other]

    def _merge(
        self, name: NormalizedName, cached: CachedPage | None, result: PageResult
    ) -> CachedPage:
        now = self.clock.seconds()
        if result.page is None:
            assert cached is not None
            return cached.touched(now, result.etag, result.last_modified)
        page = result.page
        if cached is not None and self._same_group(cached.source, result):
            old, new = cached.page.last_serial, page.last_serial
            if old is not None and new is not None and new < old:
                self.log.info(
                    "{upstream} sent {project} at serial {new}, older than our {old}; kept ours",
                    upstream=result.source,
                    project=name,
                    new=new,
                    old=old,
                )
                return cached.touched(now)
        if cached is not None and not self.forget_removed:
            page = self._with_removed(cached.page, page)
        return CachedPage(page, result.source, now, result.etag, result.last_modified)

    def _same_group(self, source: str, result: PageResult) -> bool:
        """
        Whether the page we hold came from the group that answered now: the
        members of a group mirror one index, so their serials compare (a
        lagging mirror answers with an older one).
        """
        if source == result.source:
            return True
        member = self.upstream.pool.member_for(source)
        return member is not None and member.group == result.group

    async def _forget(self, name: NormalizedName) -> None:
        """
        Drop the page of ``name`` from disk, then from memory (in that
        order: a `peek` meanwhile must not read it back from disk).
        """
        try:
            await self.storage.run(unlink_all, [self.storage.page_path(name)])
        except OSError as e:
            self.log.error(
                "cannot remove the stored page of {project}: {error}",
                project=name,
                error=os.strerror(e.errno or 0),
            )
        previous = self._memory.pop(name, None)
        if previous is not None:
            self._memory_bytes -= page_weight(previous)

    def _with_removed(self, old: ProjectPage, new: ProjectPage) -> ProjectPage:
        """
        ``new``, plus the files of ``old`` that we stored and the upstream
        no longer lists.
        """
        listed = {f.filename for f in new.files}
        kept = tuple(
            attrs.evolve(f, removed_upstream=True)
            for f in old.files
            if f.filename not in listed and self.storage.has_file(old.name, f.filename)
        )
        if not kept:
            return new
        return attrs.evolve(new, files=new.files + kept)

    def _keep_only_stored(self, cached: CachedPage | None) -> CachedPage | None:
        if cached is None or self.forget_removed:
            return None
        name = cached.page.name
        kept = cached.only(lambda f: self.storage.has_file(name, f.filename), self.clock.seconds())
        if not kept.page.files:
            return None
        files = tuple(attrs.evolve(f, removed_upstream=True) for f in kept.page.files)
        return CachedPage(attrs.evolve(kept.page, files=files), kept.source, kept.fetched_at)

    async def _store(self, cached: CachedPage) -> CachedPage:
        if len(cached.page.files) >= self.prerender_files:
            await self.storage.run(cached.prerender)
        self._remember(cached)
        try:
            # Rendering a large page takes a while: do it off the reactor too.
            raw: bytes = await self.storage.run(cached.to_bytes)
            await self.storage.write_page(cached.page.name, raw)
            self.storage.wrote()
        except OSError as e:
            self.storage.failed_write(e)
            self.log.error(
                "cannot store page of {project} ({error}); serving it from memory",
                project=cached.page.name,
                error=os.strerror(e.errno or 0),
            )
        return cached

# -*- test-case-name: tests.test_index -*-
"""
Project pages: stored on disk, fresh for a while, refreshed from the
upstreams, and never lost.

A page is answered from its forms on disk (`proxypypi.cache.pagestore`)
while fresh; a stale one at once, refreshed in the background (once per
project across the worker processes); when no upstream answers, the last
page stays in use.  Files we stored stay listed after the upstream drops
them, marked as removed upstream.  Memory holds small facts per page
(`proxypypi.cache.pagememory`), not pages.
"""

from __future__ import annotations

import os
from functools import partial

import attrs
from packaging.utils import NormalizedName
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxypypi.cache.answers import Answer, answer_of
from proxypypi.cache.forms import Form, SmallForms
from proxypypi.cache.locks import Locks
from proxypypi.cache.notfound import NotFound
from proxypypi.cache.page import CachedPage
from proxypypi.cache.pagememory import PageFacts, PageMemory
from proxypypi.cache.pagestore import PageStore, Prepared, Stored
from proxypypi.cache.storage import Chunks, Runner, Storage
from proxypypi.config.policy import PolicyConfig
from proxypypi.policy.decision import Judge
from proxypypi.policy.state import Policy
from proxypypi.simple.model import DistFile
from proxypypi.upstream.fetch import describe_failure
from proxypypi.upstream.pages import PageFetcher, PageResult, ProjectNotFound
from proxypypi.waiting import SingleFlight

#: Seconds a stale page is served without another refresh attempt after
#: one failed (stale-if-error without hammering a dead upstream).
STALE_RETRY_AFTER = 30.0


@attrs.define
class PageCache:
    """
    Project pages from the upstreams, kept on disk.
    """

    #: Asks the upstreams for pages.
    upstream: PageFetcher
    storage: Storage
    clock: IReactorTime
    ttl: float = 600.0
    negative_ttl: float = 60.0
    forget_removed: bool = False
    offline: bool = False
    #: What pages serve of their files (`proxypypi.policy`).
    policy: Policy = attrs.field(
        kw_only=True,
        default=attrs.Factory(lambda self: Policy.start(PolicyConfig(), self.clock), True),
    )
    #: The facts and file entries kept in memory.
    memory: PageMemory = attrs.field(
        default=attrs.Factory(lambda self: PageMemory(ledger=self.policy.ledger), True)
    )
    #: The bytes of small forms asked for lately.
    small: SmallForms = attrs.field(factory=SmallForms)
    #: One fetch of a page across the worker processes.
    locks: Locks = attrs.field(
        default=attrs.Factory(
            lambda self: Locks(os.path.join(self.storage.root, "locks"), self.clock),
            takes_self=True,
        )
    )
    #: Runs the parsing and rendering of stored pages off the reactor
    #: thread (a pool of their own in the service, so that they never wait
    #: behind fsyncs, nor fsyncs behind them); the storage's runner when
    #: not given.
    work: Runner = attrs.field(
        kw_only=True, default=attrs.Factory(lambda self: self.storage.run, takes_self=True)
    )
    log = Logger()

    _store: PageStore = attrs.field(init=False)
    _refreshing: SingleFlight[str, PageFacts] = attrs.field(factory=SingleFlight)
    _rendering: SingleFlight[tuple[str, Form], PageFacts] = attrs.field(factory=SingleFlight)
    _loading: SingleFlight[str, tuple[PageFacts, str]] = attrs.field(factory=SingleFlight)
    #: Stored pages being written after their forms (see `_save`).
    _saving: SingleFlight[str, None] = attrs.field(factory=SingleFlight)
    not_found: NotFound = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._store = PageStore(self.storage, self.offline)
        self.not_found = NotFound(self.clock, self.negative_ttl)

    # Facts

    def known(self, name: NormalizedName) -> PageFacts | None:
        """
        The facts of ``name``'s page if memory has them (no I/O at all).
        """
        return self.memory.known(name)

    def is_fresh(self, facts: PageFacts) -> bool:
        """
        Whether ``facts``' page is within its TTL (offline, every page is).
        """
        return self.offline or self.clock.seconds() - facts.fetched_at < self.ttl

    def ready(self, name: NormalizedName) -> PageFacts | None:
        """
        The facts of ``name``'s page if it can be answered without waiting:
        fresh, or stale (a background refresh is then started), and judged
        under the rules in force, a judgement still standing.  The hot
        path of every index request: no I/O at all.
        """
        facts = self.known(name)
        if facts is None:
            return None
        if not self.is_fresh(facts):
            self._refresh(name, facts, None).addErrback(lambda _: None)
        held = facts.held
        if held.generation != self.policy.generation or self.clock.seconds() >= held.valid_until:
            return None
        return facts

    def judge(self) -> Judge:
        """
        The rules in force, now: what pages rendered in a thread are
        judged by.
        """
        return Judge(self.policy.rules, self.clock.seconds())

    def get(self, name: NormalizedName, form: Form | None = None) -> Deferred[PageFacts]:
        """
        The page of ``name``: fresh, stale (refreshed in the background),
        read from disk, or fetched now (with ``form`` rendered on the way).

        :returns: a Deferred failing with `ProjectNotFound` or
            `proxypypi.upstream.pages.UpstreamUnavailable` when there is
            nothing to serve.
        """
        return self._obtain(name, form).addCallback(lambda found: found[0])

    def _obtain(self, name: NormalizedName, form: Form | None) -> Deferred[tuple[PageFacts, str]]:
        """
        `get`, with where the page came from: ``hit`` or ``stale`` from
        what is stored, ``miss`` when fetched for this request.
        """
        facts = self.ready(name)
        if facts is not None:
            return succeed((facts, self._result(facts)))
        return self._loading.run(
            name, lambda: Deferred.fromCoroutine(self._get_from_disk_or_upstream(name, form))
        )

    def _result(self, facts: PageFacts) -> str:
        return "hit" if self.is_fresh(facts) else "stale"

    async def _get_from_disk_or_upstream(
        self, name: NormalizedName, form: Form | None
    ) -> tuple[PageFacts, str]:
        loaded = await self._load(name)
        if loaded is not None:
            # Known but judged under other rules, or a judgement expired.
            known = self.known(name)
            if known is None:
                facts = self.memory.remember(loaded)
            else:
                facts = attrs.evolve(known, held=loaded.held)
                self.memory.set(facts)
            if not self.is_fresh(facts):
                self._refresh(name, facts, None).addErrback(lambda _: None)
            return facts, self._result(facts)
        if self.offline or self.not_found.recent(name):
            raise ProjectNotFound(name)
        return await self._refresh(name, None, form), "miss"

    # Forms

    def answer_ready(self, name: NormalizedName, form: Form) -> Answer | None:
        """
        ``form`` of ``name``'s page if it can be sent without waiting: the
        facts are in memory and the form is on disk (one ``stat``).
        """
        facts = self.ready(name)
        if facts is None:
            return None
        return answer_of(self._store, self.small, facts, form, self._result(facts))

    async def answer(self, name: NormalizedName, form: Form) -> Answer:
        """
        ``form`` of ``name``'s page, fetched, loaded or rendered as needed.

        :raises ProjectNotFound: and what else `get` raises.
        """
        facts, cache = await self._obtain(name, form)
        found = answer_of(self._store, self.small, facts, form, cache)
        if found is not None:
            return found
        await self._saving.landed(name)
        facts = await self._rendering.run(
            (name, form), lambda: self.work(self._render, name, form, self.judge())
        )
        found = answer_of(self._store, self.small, facts, form, cache)
        if found is None:
            raise ProjectNotFound(name)
        return found

    async def _load(self, name: NormalizedName) -> Stored | None:
        """
        The stored page of ``name``, judged, once any write of it landed.
        """
        await self._saving.landed(name)
        loaded: Stored | None = await self.work(self._store.load, name, self.judge())
        return loaded

    async def load(self, name: NormalizedName) -> CachedPage | None:
        """The stored page of ``name``, whole, never fetched (for browsing)."""
        loaded = await self._load(name)
        return None if loaded is None else loaded.cached

    def _render(self, name: NormalizedName, form: Form, judge: Judge) -> PageFacts:
        """
        Render ``form`` of a stored page.  Blocking.
        """
        stored = self._store.render_form(name, form, judge)
        if stored is None:
            raise ProjectNotFound(name)
        return PageFacts.of(stored)

    # Files

    def listed(self, name: NormalizedName, filename: str) -> tuple[PageFacts, DistFile] | None:
        """
        The page's entry for ``filename`` if memory has it (no I/O).
        """
        facts = self.known(name)
        f = self.memory.listed(name, filename) if facts is not None else None
        return None if facts is None or f is None else (facts, f)

    async def entry(self, name: NormalizedName, filename: str) -> tuple[PageFacts, DistFile | None]:
        """
        The page of ``name`` (fetched or loaded as needed) and its entry for
        ``filename``, or ``None`` when the page does not list it.

        :raises ProjectNotFound: and what else `get` raises.
        """
        facts = await self.get(name)
        f = self.memory.listed(name, filename)
        if f is None:
            await self._saving.landed(name)
            f = await self.work(self._store.find_entry, name, filename)
            # Unless the page was refreshed meanwhile (its entries dropped).
            if f is not None and self.known(name) is facts:
                self.memory.keep_entry(name, f)
        return facts, f

    async def offer_metadata(self, name: NormalizedName) -> None:
        """
        Render ``name``'s stored page again (under its lock, after any
        refresh) now that a wheel's ``.metadata`` is stored here.
        """
        await self._refreshing.landed(name)
        held, _ = await self.locks.acquire(f"page:{name}")
        try:
            await self._saving.landed(name)
            stored: Stored | None = await self.work(self._store.restore, name, self.judge())
        finally:
            held.release()
        if stored is not None:
            self.memory.remember(stored)

    async def stored(self, name: NormalizedName) -> CachedPage:
        """
        The whole stored page of ``name`` (a private project merges it),
        fetched or loaded as needed.  :raises ProjectNotFound: and so on.
        """
        await self.get(name)
        loaded = await self._load(name)
        if loaded is None:
            raise ProjectNotFound(name)
        return loaded.cached

    async def rejudge_due(self) -> None:
        """
        Judge again, one by one, the pages in memory whose judgement expired
        or was made under other rules (their forms then ready, the ledger
        current).
        """
        for name in self.memory.due(self.clock.seconds(), self.policy.generation):
            try:
                await self._obtain(NormalizedName(name), None)
            except Exception as e:
                self.log.warn("cannot judge {project} again: {error}", project=name, error=e)

    # Refreshing

    def _refresh(
        self, name: NormalizedName, facts: PageFacts | None, form: Form | None
    ) -> Deferred[PageFacts]:
        return self._refreshing.run(
            name, lambda: Deferred.fromCoroutine(self._fetch_once(name, facts, form))
        )

    async def _fetch_once(
        self, name: NormalizedName, facts: PageFacts | None, form: Form | None
    ) -> PageFacts:
        """
        `_fetch`, once across the workers: under the page's lock, held until
        the page is written; a fresh one another worker stored is read.
        """
        held, waited = await self.locks.acquire(f"page:{name}")
        try:
            when = await self.work(self._store.fetched_at, name) if waited or facts else None
            if when is not None and self.clock.seconds() - when < self.ttl and (
                facts is None or when > facts.fetched_at
            ):
                loaded = await self._load(name)
                if loaded is not None:
                    return self.memory.remember(loaded)
            return await self._fetch(name, facts, form)
        finally:
            self._saving.landed(name).addBoth(lambda _: held.release())

    async def _fetch(
        self, name: NormalizedName, facts: PageFacts | None, form: Form | None
    ) -> PageFacts:
        validators = facts.validators() if facts is not None else None
        forms = [] if form is None else [form]
        # What follows reads or rewrites the stored page.
        await self._saving.landed(name)
        try:
            result = await self.upstream.fetch(name, validators)
        except ProjectNotFound:
            self.not_found.note(name)
            if facts is None:
                raise
            return await self._gone_upstream(name)
        except Exception as e:
            if facts is None:
                raise
            self.log.warn("serving stale page of {project}: {reason}", project=name,
                          reason=describe_failure(Failure(e)))  # fmt: skip
            # Keep serving it without trying again for a while: a group
            # that is down would otherwise be asked again on every request.
            retry = attrs.evolve(
                facts, fetched_at=self.clock.seconds() - self.ttl + STALE_RETRY_AFTER
            )
            self.memory.set(retry)
            return retry
        self.not_found.clear(name)
        if result.page is None or (
            facts is not None and self.upstream.lags(name, facts.source, facts.last_serial, result)
        ):
            assert facts is not None
            return await self._confirmed(facts, result)
        page = result.page
        cached = CachedPage(page, result.source, self.clock.seconds(), result.etag,
                            result.last_modified)  # fmt: skip
        keep = facts is not None and not self.forget_removed
        prepared: Prepared = await self.work(
            self._store.prepare_merged, cached, keep, forms, self.judge()
        )
        written: bool = await self.storage.run(self._store.write_forms, prepared)
        stored = Stored(prepared.cached, {} if written else prepared.rendered,
                        prepared.decision.held)  # fmt: skip
        remembered = self.memory.remember(stored)
        self._saving.run(name, partial(self._save, prepared.cached, prepared.raw))
        return remembered

    def _save(self, cached: CachedPage, raw: Chunks) -> Deferred[None]:
        """
        Write the stored page, after the forms: the client that asked gets
        its form without waiting for this.  Reads of the stored page wait
        for it.
        """
        name = cached.page.name
        d = self.storage.run(self._store.write_stored, name, raw)
        d.addCallback(self._saved, cached)
        d.addErrback(lambda f: self.log.failure("cannot store page of {project}", f, project=name))
        return d.addCallback(lambda _: None)

    def _saved(self, written: bool, cached: CachedPage) -> None:
        """
        A stored page that could not be written (a full disk) keeps its
        entries in memory meanwhile, or its files could not be fetched.
        """
        if not written:
            self.memory.keep_entries(cached.page.name, cached.page.files)

    async def _confirmed(self, facts: PageFacts, result: PageResult) -> PageFacts:
        """
        Our page is current (a 304, or a lagging mirror's older page):
        keep it, fresh from now, with any new validators of a 304.
        """
        etag, last_modified = (result.etag, result.last_modified) if result.page is None else (
            None, None)  # fmt: skip
        touched = attrs.evolve(facts, fetched_at=self.clock.seconds(), etag=etag or facts.etag,
                               last_modified=last_modified or facts.last_modified)  # fmt: skip
        self.memory.set(touched)
        try:
            t = touched
            await self.storage.run(self._store.retouch, t.name, t.source, t.fetched_at, t.etag,
                                   t.last_modified)  # fmt: skip
        except OSError as e:
            self.storage.failed_write(e)
        return touched

    async def _gone_upstream(self, name: NormalizedName) -> PageFacts:
        """
        No upstream has ``name`` any more: keep serving the files stored
        here, marked as removed upstream, or forget the page.

        :raises ProjectNotFound: when nothing of it is kept.
        """
        kept: Stored | None = None
        if not self.forget_removed:
            kept = await self.work(self._store.keep_only_stored, name, self.judge())
        if kept is None:
            # Gone everywhere, nothing of it stored: forget the old page, or
            # it would be served stale forever.
            await self._forget(name)
            raise ProjectNotFound(name)
        self.log.warn(
            "upstreams no longer have {project}; serving the files stored here", project=name
        )
        return self.memory.remember(kept)

    async def _forget(self, name: NormalizedName) -> None:
        """
        Drop the page of ``name`` from disk, then from memory (in that
        order: a request meanwhile must not read it back from disk).
        """
        await self._saving.landed(name)
        try:
            await self.storage.run(self._store.forget, name)
        except OSError as e:
            self.log.error(
                "cannot remove the stored page of {project}: {error}",
                project=name,
                error=os.strerror(e.errno or 0),
            )
        self.memory.forget(name)

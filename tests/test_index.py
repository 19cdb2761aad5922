"""
The page cache: freshness, stale-while-revalidate, stale-if-error, files
kept after the upstream drops them, serial regressions, negative caching.
"""

from __future__ import annotations

import os
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.page import CachedPage
from proxypypi.cache.pages import BYTES_PER_FILE, PageCache, page_weight
from proxypypi.cache.storage import Storage
from proxypypi.config.model import UpstreamConfig
from proxypypi.simple.model import ProjectPage
from proxypypi.simple.negotiate import HTML, JSON_V1
from proxypypi.testing import FakeIndex, Fault, make_wheel
from proxypypi.upstream.pages import PageFetcher, ProjectNotFound, UpstreamUnavailable
from proxypypi.upstream.pool import Pool
from tests.support.disk import sync_run
from tests.support.pumping import QUIET, pump

UPSTREAM = "http://upstream.example/simple/"


class PageCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.index = FakeIndex(self.clock)
        self.old = make_wheel("proto-alpha", "1.0")
        self.new = make_wheel("proto-alpha", "2.0")
        self.index.add(self.old)
        self.agent = RequestTraversalAgent(self.index.resource())
        self.pool = Pool.from_config(
            [[UpstreamConfig(UPSTREAM)]], lambda cfg: self.agent, self.clock
        )
        self.storage = Storage(self.mktemp(), sync_run)
        self.storage.prepare()
        self.cache = self.make_cache()

    def make_cache(self) -> PageCache:
        return PageCache(PageFetcher(self.pool), self.storage, self.clock, ttl=600, negative_ttl=60)

    def get(self, name: str = "proto-alpha"):  # type: ignore[no-untyped-def]
        d = self.cache.get(name)  # type: ignore[arg-type]
        self.agent.flush()
        return d

    def pages_fetched(self) -> int:
        return self.index.count("/simple/proto-alpha/", "GET")

    def test_fetch_store_and_reuse(self) -> None:
        """A page is fetched once, stored on disk, and served from there after a restart."""
        cached = self.successResultOf(self.get())
        self.assertEqual([f.filename for f in cached.page.files], [self.old.filename])
        self.assertEqual(
            cached.page.files[0].url, "http://upstream.example/files/" + self.old.filename
        )
        self.successResultOf(self.get())
        self.assertEqual(self.pages_fetched(), 1)
        self.cache = self.make_cache()  # a restart: nothing in memory
        again = self.successResultOf(self.get())
        self.assertEqual(again.page, cached.page)
        self.assertEqual(self.pages_fetched(), 1)

    def test_rendered_once(self) -> None:
        """Each representation is rendered once and links to the proxy's own files."""
        cached = self.successResultOf(self.get())
        html = cached.render(HTML)
        self.assertIs(cached.render(HTML), html)
        self.assertIn(b"../../files/proto-alpha/" + self.old.filename.encode(), html.body)
        self.assertNotEqual(cached.render(JSON_V1).etag, html.etag)

    def test_stale_while_revalidate(self) -> None:
        """A stale page is answered at once and refreshed once in the background."""
        self.successResultOf(self.get())
        self.index.add(self.new)
        self.clock.advance(601)
        self.index.latency = 1.0
        stale = self.successResultOf(self.cache.get("proto-alpha"))  # type: ignore[arg-type]
        self.successResultOf(self.cache.get("proto-alpha"))  # type: ignore[arg-type]
        self.assertEqual(len(stale.page.files), 1)
        self.clock.advance(1.0)
        self.agent.flush()
        self.assertEqual(self.pages_fetched(), 2)
        fresh = self.successResultOf(self.get())
        self.assertEqual(len(fresh.page.files), 2)

    def test_stale_if_error(self) -> None:
        """When the upstream fails, the last page stays in use."""
        self.successResultOf(self.get())
        self.clock.advance(601)
        self.index.fault = Fault(status=503)
        self.successResultOf(self.get())
        self.agent.flush()
        cached = self.successResultOf(self.get())
        self.assertEqual([f.filename for f in cached.page.files], [self.old.filename])

    def test_failed_refresh_backs_off(self) -> None:
        """After a failed refresh the stale page is served without asking again for a while."""
        from proxypypi.cache.pages import STALE_RETRY_AFTER

        self.successResultOf(self.get())
        self.clock.advance(601)
        self.index.fault = Fault(status=503)
        self.successResultOf(self.get())
        self.agent.flush()
        asked = self.pages_fetched()
        for _ in range(5):
            self.successResultOf(self.get())
        self.assertEqual(self.pages_fetched(), asked)
        self.clock.advance(STALE_RETRY_AFTER + 1)
        self.successResultOf(self.get())
        self.assertEqual(self.pages_fetched(), asked + 1)

    def test_no_copy_and_error(self) -> None:
        """Without a cached copy an upstream failure is reported with its reason."""
        self.index.fault = Fault(status=503)
        failure = self.failureResultOf(self.get(), UpstreamUnavailable)
        self.assertIn("HTTP 503", str(failure.value))

    def test_negative_cache(self) -> None:
        """A missing project is not asked for again within the negative TTL."""
        self.failureResultOf(self.get("nothing-here"), ProjectNotFound)
        self.failureResultOf(self.get("nothing-here"), ProjectNotFound)
        self.assertEqual(self.index.count("/simple/nothing-here/"), 1)
        self.clock.advance(61)
        self.failureResultOf(self.get("nothing-here"), ProjectNotFound)
        self.assertEqual(self.index.count("/simple/nothing-here/"), 2)

    def test_removed_upstream_files_kept(self) -> None:
        """A stored file the upstream no longer lists stays on the page, marked."""
        self.successResultOf(self.get())
        path = self.storage.file_path("proto-alpha", self.old.filename)

        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(self.old.data)
        self.index.remove("proto-alpha", self.old.filename)
        self.index.add(self.new)
        self.clock.advance(601)
        self.successResultOf(self.get())
        cached = self.successResultOf(self.get())
        by_name = {f.filename: f for f in cached.page.files}
        self.assertTrue(by_name[self.old.filename].removed_upstream)
        self.assertFalse(by_name[self.new.filename].removed_upstream)
        self.assertIn(b"_proxypypi-removed-upstream", cached.render(JSON_V1).body)
        # The whole project disappears upstream: its stored files remain.
        self.index.remove("proto-alpha")
        self.clock.advance(601)
        self.successResultOf(self.get())
        cached = self.successResultOf(self.get())
        self.assertEqual([f.filename for f in cached.page.files], [self.old.filename])

    def test_older_serial_ignored(self) -> None:
        """A page with an older serial than ours (a lagging mirror) does not replace ours."""
        first = self.successResultOf(self.get())
        serial = first.page.last_serial
        assert serial is not None
        self.index.add(self.new)
        self.index.serial = 0
        for p in self.index._projects.values():  # make the upstream look older
            p.last_serial = serial - 1
        self.clock.advance(601)
        self.successResultOf(self.get())
        cached = self.successResultOf(self.get())
        self.assertEqual(len(cached.page.files), 1)

    def test_damaged_stored_page_ignored(self) -> None:
        """A truncated stored page is ignored and fetched again."""
        self.successResultOf(self.get())
        with open(self.storage.page_path("proto-alpha"), "r+b") as f:
            f.truncate(20)
        self.cache = self.make_cache()
        cached = self.successResultOf(self.get())
        self.assertEqual(len(cached.page.files), 1)
        self.assertEqual(self.pages_fetched(), 2)


class OfflineTests(SynchronousTestCase):
    def test_offline_serves_only_stored(self) -> None:
        """Offline, pages list only files on disk, unknown projects are 404, no upstream call."""
        clock = Clock()
        index = FakeIndex(clock)
        stored, missing = make_wheel("proto-alpha", "1.0"), make_wheel("proto-alpha", "2.0")
        index.add(stored)
        index.add(missing)
        agent = RequestTraversalAgent(index.resource())
        pool = Pool.from_config([[UpstreamConfig(UPSTREAM)]], lambda cfg: agent, clock)
        storage = Storage(self.mktemp(), sync_run)
        storage.prepare()
        online = PageCache(PageFetcher(pool), storage, clock)
        d = online.get("proto-alpha")  # type: ignore[arg-type]
        agent.flush()
        self.successResultOf(d)
        path = storage.file_path("proto-alpha", stored.filename)
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(stored.data)
        requests = len(index.requests)

        offline = PageCache(PageFetcher(pool), storage, clock, offline=True)
        clock.advance(10_000)  # long stale: still no refresh offline
        cached = self.successResultOf(offline.get("proto-alpha"))  # type: ignore[arg-type]
        self.assertEqual([f.filename for f in cached.page.files], [stored.filename])
        self.failureResultOf(offline.get("proto-beta"), ProjectNotFound)  # type: ignore[arg-type]
        agent.flush()
        self.assertEqual(len(index.requests), requests)


class MemoryBudgetTests(SynchronousTestCase):
    def test_least_recently_used_pages_leave_memory(self) -> None:
        """Past the memory budget the least recently used page is dropped (and re-read later)."""
        clock = Clock()
        index = FakeIndex(clock)
        for name in ("proto-a", "proto-b", "proto-c"):
            index.add(make_wheel(name, "1.0"))
        agent = RequestTraversalAgent(index.resource())
        pool = Pool.from_config([[UpstreamConfig(UPSTREAM)]], lambda cfg: agent, clock)
        storage = Storage(self.mktemp(), sync_run)
        storage.prepare()
        one_page = page_weight(CachedPage(ProjectPage("x"), "", 0.0))  # type: ignore[arg-type]
        budget = 2 * one_page + BYTES_PER_FILE * 2
        cache = PageCache(PageFetcher(pool), storage, clock, memory_budget=budget)
        for name in ("proto-a", "proto-b", "proto-c"):
            d = cache.get(name)  # type: ignore[arg-type]
            agent.flush()
            self.successResultOf(d)
        self.assertEqual(list(cache._memory), ["proto-b", "proto-c"])
        again = cache.peek("proto-a")  # type: ignore[arg-type]
        assert again is not None
        self.assertEqual(len(again.page.files), 1)
        self.assertEqual(index.count("/simple/proto-a/"), 1)


class ReviewRegressionTests(SynchronousTestCase):
    """
    Found in review: a project gone from every upstream, and a lagging
    mirror of the group that served our page.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.storage = Storage(self.mktemp(), sync_run)
        self.storage.prepare()

    def test_project_gone_upstream_without_stored_files(self) -> None:
        """
        A project every upstream now answers 404 for, with no file stored
        here, is not served from the stale page any more (and the negative
        TTL holds: no upstream request per client request).
        """
        index = FakeIndex(self.clock)
        index.add(make_wheel("proto-alpha", "1.0"))
        agent = RequestTraversalAgent(index.resource())
        pool = Pool.from_config([[UpstreamConfig(UPSTREAM)]], lambda cfg: agent, self.clock)
        cache = PageCache(PageFetcher(pool), self.storage, self.clock, ttl=600, negative_ttl=60)

        def get():  # type: ignore[no-untyped-def]
            d = cache.get("proto-alpha")  # type: ignore[arg-type]
            agent.flush()
            return d

        self.successResultOf(get())
        index.remove("proto-alpha")
        self.clock.advance(601)
        self.successResultOf(get())  # stale answer; the refresh learns it is gone
        self.failureResultOf(get(), ProjectNotFound)
        self.failureResultOf(get(), ProjectNotFound)
        self.assertEqual(index.count("/simple/proto-alpha/"), 2)
        # Not back after a restart either.
        again = PageCache(PageFetcher(pool), self.storage, self.clock, ttl=600, negative_ttl=60)
        self.assertIsNone(again.peek("proto-alpha"))  # type: ignore[arg-type]

    def test_lagging_mirror_of_the_group_ignored(self) -> None:
        """
        A mirror of the same group that lags behind (older serial) does not
        replace the page another member of the group served.
        """
        ahead, behind = FakeIndex(self.clock), FakeIndex(self.clock)
        old, new = make_wheel("proto-alpha", "1.0"), make_wheel("proto-alpha", "2.0")
        ahead.add(old)
        ahead.add(new)  # serial 2
        behind.add(old)  # serial 1
        agents = {
            "http://ahead.example/simple/": RequestTraversalAgent(ahead.resource()),
            "http://behind.example/simple/": RequestTraversalAgent(behind.resource()),
        }
        pool = Pool.from_config(
            [[UpstreamConfig(url) for url in agents]], lambda cfg: agents[cfg.url], self.clock
        )
        cache = PageCache(PageFetcher(pool), self.storage, self.clock, ttl=600, negative_ttl=60)

        def get():  # type: ignore[no-untyped-def]
            d = cache.get("proto-alpha")  # type: ignore[arg-type]
            pump(*agents.values(), until=QUIET, what="the mirrors to answer")
            return d

        first = self.successResultOf(get())
        self.assertEqual(len(first.page.files), 2)
        self.clock.advance(601)
        self.successResultOf(get())  # refreshed from the other member
        self.assertEqual(behind.count("/simple/proto-alpha/"), 1)
        cached = self.successResultOf(get())
        self.assertEqual(len(cached.page.files), 2)

    def test_negative_cache_forgets_expired_names(self) -> None:
        """
        Names remembered as missing are forgotten once their negative TTL
        is over: clients asking for ever new names cannot grow it forever.
        """
        index = FakeIndex(self.clock)
        agent = RequestTraversalAgent(index.resource())
        pool = Pool.from_config([[UpstreamConfig(UPSTREAM)]], lambda cfg: agent, self.clock)
        cache = PageCache(PageFetcher(pool), self.storage, self.clock, ttl=600, negative_ttl=60)
        for i in range(50):
            d = cache.get(f"missing-{i}")  # type: ignore[arg-type]
            agent.flush()
            self.failureResultOf(d, ProjectNotFound)
        self.clock.advance(61)
        d = cache.get("missing-last")  # type: ignore[arg-type]
        agent.flush()
        self.failureResultOf(d, ProjectNotFound)
        self.assertEqual(list(cache._not_found), ["missing-last"])


class OffReactorTests(SynchronousTestCase):
    def test_stored_pages_load_and_store_through_the_runner(self) -> None:
        """
        A page not in memory is read and parsed through the storage runner
        (the disk threads), and so is rendering it for storage; ready() never
        touches the disk.
        """
        clock = Clock()
        index = FakeIndex(clock)
        index.add(make_wheel("proto-alpha", "1.0"))
        agent = RequestTraversalAgent(index.resource())
        pool = Pool.from_config([[UpstreamConfig(UPSTREAM)]], lambda cfg: agent, clock)
        ran: list[str] = []

        def runner(f: Any, *args: Any) -> Any:
            ran.append(getattr(f, "__name__", repr(f)))
            return sync_run(f, *args)

        storage = Storage(self.mktemp(), runner)
        storage.prepare()
        cache = PageCache(PageFetcher(pool), storage, clock, prerender_files=1)
        d = cache.get("proto-alpha")  # type: ignore[arg-type]
        agent.flush()
        fetched = self.successResultOf(d)
        self.assertIn("to_bytes", ran)
        self.assertIn("prerender", ran)
        self.assertEqual(len(fetched._renders), 2)
        restarted = PageCache(PageFetcher(pool), storage, clock)
        self.assertIsNone(restarted.ready("proto-alpha"))  # type: ignore[arg-type]
        ran.clear()
        cached = self.successResultOf(restarted.get("proto-alpha"))  # type: ignore[arg-type]
        self.assertEqual(ran, ["_load"])
        self.assertIs(restarted.ready("proto-alpha"), cached)  # type: ignore[arg-type]
        self.assertEqual(index.count("/simple/proto-alpha/"), 1)

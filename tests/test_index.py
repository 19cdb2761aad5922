"""
The page cache: freshness, stale-while-revalidate, stale-if-error, files
kept after the upstream drops them, serial regressions, negative caching,
the forms pages are served in, and the bounds of what memory keeps.
"""

from __future__ import annotations

import gzip
import os
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.forms import Form, SmallForms
from proxypypi.cache.page import CachedPage, stored_entry
from proxypypi.cache.pagememory import PageMemory
from proxypypi.cache.pages import Answer, PageCache
from proxypypi.cache.storage import Storage
from proxypypi.config.model import UpstreamConfig
from proxypypi.simple.model import DistFile, ProjectPage
from proxypypi.testing import FakeIndex, Fault, make_wheel
from proxypypi.upstream.pages import PageFetcher, ProjectNotFound, UpstreamUnavailable
from proxypypi.upstream.pool import Pool
from tests.support.disk import HeldRunner, sync_run
from tests.support.pumping import QUIET, pump

UPSTREAM = "http://upstream.example/simple/"
SHA = "ab" * 32


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

    def get(self, name: str = "proto-alpha") -> Deferred[CachedPage]:
        """
        The page of ``name`` as the cache holds it now (fetched, stale,
        or read from disk), whole.
        """
        d = Deferred.fromCoroutine(self.cache.stored(name))  # type: ignore[arg-type]
        self.agent.flush()
        return d

    def answer(self, form: Form, name: str = "proto-alpha") -> Answer:
        d = Deferred.fromCoroutine(self.cache.answer(name, form))  # type: ignore[arg-type]
        self.agent.flush()
        return self.successResultOf(d)

    def body(self, answer: Answer) -> bytes:
        assert answer.source is not None
        with open(answer.source.path, "rb") as f:
            return f.read()

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

    def test_forms_rendered_once_on_disk(self) -> None:
        """
        Each form is rendered once, into a file of its own that later
        requests are sent from, and links to the proxy's own files.
        """
        html = self.answer(Form.HTML)
        self.assertEqual(html.cache, "miss")
        again = self.answer(Form.HTML)
        assert html.source is not None and again.source is not None
        self.assertEqual((again.etag, again.source.identity), (html.etag, html.source.identity))
        self.assertEqual(again.cache, "hit")
        self.assertIn(b"../../files/proto-alpha/" + self.old.filename.encode(), self.body(html))
        packed = self.answer(Form.JSON_GZ)
        self.assertNotEqual(packed.etag, html.etag)
        self.assertEqual(gzip.decompress(self.body(packed)), self.body(self.answer(Form.JSON)))
        self.assertEqual(self.pages_fetched(), 1)

    def test_refresh_rewrites_only_changed_forms(self) -> None:
        """
        A refresh re-renders the forms on disk; one whose bytes did not
        change keeps its file (and so its entity tag).
        """
        before = self.answer(Form.JSON)
        self.clock.advance(601)
        self.successResultOf(self.get())  # stale; refreshed meanwhile
        self.assertEqual(self.pages_fetched(), 2)
        self.assertEqual(self.answer(Form.JSON).etag, before.etag)
        self.index.add(self.new)
        self.clock.advance(601)
        self.successResultOf(self.get())
        changed = self.answer(Form.JSON)
        self.assertNotEqual(changed.etag, before.etag)
        self.assertIn(self.new.filename.encode(), self.body(changed))

    def test_stale_while_revalidate(self) -> None:
        """A stale page is answered at once and refreshed once in the background."""
        self.successResultOf(self.get())
        self.index.add(self.new)
        self.clock.advance(601)
        self.index.latency = 1.0
        stale = self.successResultOf(self.get())
        self.successResultOf(self.get())
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
        self.assertIn(b"_proxypypi-removed-upstream", self.body(self.answer(Form.JSON)))
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
        cached = self.successResultOf(
            Deferred.fromCoroutine(offline.stored("proto-alpha"))  # type: ignore[arg-type]
        )
        self.assertEqual([f.filename for f in cached.page.files], [stored.filename])
        self.failureResultOf(offline.get("proto-beta"), ProjectNotFound)  # type: ignore[arg-type]
        agent.flush()
        self.assertEqual(len(index.requests), requests)


class MemoryTests(SynchronousTestCase):
    def test_memory_keeps_little_and_is_bounded(self) -> None:
        """
        Memory keeps facts of a bounded number of pages and the entries of a
        bounded number of files asked for (none of a page only fetched);
        the others are looked up in their stored page, alone.
        """
        clock = Clock()
        index = FakeIndex(clock)
        wheels = {}
        for name in ("proto-a", "proto-b", "proto-c"):
            index.add(make_wheel(name, "1.0"))
            wheels[name] = make_wheel(name, "2.0")
            index.add(wheels[name])
        agent = RequestTraversalAgent(index.resource())
        pool = Pool.from_config([[UpstreamConfig(UPSTREAM)]], lambda cfg: agent, clock)
        storage = Storage(self.mktemp(), sync_run)
        storage.prepare()
        memory = PageMemory(facts_limit=2, listed_limit=2)
        cache = PageCache(PageFetcher(pool), storage, clock, memory=memory)
        for name in ("proto-a", "proto-b", "proto-c"):
            d = cache.get(name)  # type: ignore[arg-type]
            agent.flush()
            self.successResultOf(d)
            self.assertIsNone(cache.listed(name, wheels[name].filename))  # type: ignore[arg-type]
        self.assertIsNone(cache.known("proto-a"))  # type: ignore[arg-type]
        self.assertIsNotNone(cache.known("proto-c"))  # type: ignore[arg-type]
        for name in ("proto-a", "proto-b", "proto-c"):
            d = Deferred.fromCoroutine(cache.entry(name, wheels[name].filename))  # type: ignore[arg-type]
            facts, f = self.successResultOf(d)
            assert f is not None
            self.assertEqual((facts.files, f.filename), (2, wheels[name].filename))
        # Two entries kept, the oldest asked for dropped.
        self.assertIsNone(cache.listed("proto-a", wheels["proto-a"].filename))  # type: ignore[arg-type]
        self.assertIsNotNone(cache.listed("proto-c", wheels["proto-c"].filename))  # type: ignore[arg-type]
        d = Deferred.fromCoroutine(cache.entry("proto-c", "proto_c-9.0.tar.gz"))  # type: ignore[arg-type]
        self.assertIsNone(self.successResultOf(d)[1])
        self.assertEqual(index.count("/simple/proto-a/"), 1)

    def test_entry_read_alone_from_the_stored_page(self) -> None:
        """
        An entry found in a stored page is the one the whole page lists,
        whatever its name's characters, and is checked as on a fetched page.
        """
        files = (
            DistFile("proto_a-1.0.tar.gz", "https://up.example/p/a.tar.gz", {"sha256": SHA}),
            DistFile("proto_a-1.1-py3-none-any.whl", "https://up.example/q", size=7),
            DistFile("proto_a-1.2.win32-caf\u00e9.exe", "https://up.example/r", yanked="bad"),
        )
        page = ProjectPage("proto-a", files)  # type: ignore[arg-type]
        raw = CachedPage(page, UPSTREAM, 1.0).to_bytes()
        for f in files:
            self.assertEqual(stored_entry(raw, page.name, f.filename), f)
        self.assertIsNone(stored_entry(raw, page.name, "proto_a-1.0.tar"))
        hostile = raw.replace(b"https://up.example/q", b"file:///etc/passwd")
        self.assertIsNone(stored_entry(hostile, page.name, files[1].filename))
        with self.assertRaises(ValueError):
            stored_entry(raw[:-40], page.name, files[0].filename)


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

        def get() -> Deferred[CachedPage]:
            d = Deferred.fromCoroutine(cache.stored("proto-alpha"))  # type: ignore[arg-type]
            agent.flush()
            return d

        self.successResultOf(get())
        index.remove("proto-alpha")
        self.clock.advance(601)
        index.latency = 1.0
        self.successResultOf(get())  # stale answer; the refresh learns it is gone
        self.clock.advance(1.0)
        agent.flush()
        index.latency = 0.0
        self.failureResultOf(get(), ProjectNotFound)
        self.failureResultOf(get(), ProjectNotFound)
        self.assertEqual(index.count("/simple/proto-alpha/"), 2)
        # Not back after a restart either.
        self.assertFalse(os.path.exists(self.storage.page_path("proto-alpha")))

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

        def get() -> Deferred[CachedPage]:
            d = Deferred.fromCoroutine(cache.stored("proto-alpha"))  # type: ignore[arg-type]
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
        self.assertEqual(cache.not_found.names(), ["missing-last"])


class OffReactorTests(SynchronousTestCase):
    def test_pages_parsed_rendered_and_written_off_the_reactor(self) -> None:
        """
        A page is prepared (rendered) and loaded by the page workers, and
        written by the disk threads; ready() never touches the disk.
        """
        clock = Clock()
        index = FakeIndex(clock)
        index.add(make_wheel("proto-alpha", "1.0"))
        agent = RequestTraversalAgent(index.resource())
        pool = Pool.from_config([[UpstreamConfig(UPSTREAM)]], lambda cfg: agent, clock)
        disk: list[str] = []
        pages: list[str] = []

        def recording(names: list[str]) -> Any:
            def run(f: Any, *args: Any) -> Any:
                names.append(getattr(f, "__name__", repr(f)))
                return sync_run(f, *args)

            return run

        storage = Storage(self.mktemp(), recording(disk))
        storage.prepare()
        cache = PageCache(PageFetcher(pool), storage, clock, work=recording(pages))
        d = Deferred.fromCoroutine(cache.answer("proto-alpha", Form.JSON_GZ))  # type: ignore[arg-type]
        agent.flush()
        self.successResultOf(d)
        # "load" finds nothing stored yet, then the fetched page is rendered,
        # its form written, then the stored page.
        self.assertEqual(
            (pages, disk), (["load", "prepare_merged"], ["write_forms", "write_stored"])
        )
        restarted = PageCache(PageFetcher(pool), storage, clock, work=recording(pages))
        self.assertIsNone(restarted.ready("proto-alpha"))  # type: ignore[arg-type]
        pages.clear()
        facts = self.successResultOf(restarted.get("proto-alpha"))  # type: ignore[arg-type]
        self.assertEqual(pages, ["load"])
        self.assertIs(restarted.ready("proto-alpha"), facts)  # type: ignore[arg-type]
        self.assertEqual(index.count("/simple/proto-alpha/"), 1)

    def test_answer_does_not_wait_for_the_stored_page(self) -> None:
        """
        The client that asked for a page gets its form once the form is
        written; the stored page is written after, and what reads the
        stored page (here a file's entry, which memory does not keep) waits
        for that write instead of reading nothing.
        """
        clock = Clock()
        index = FakeIndex(clock)
        alpha = make_wheel("proto-alpha", "1.0")
        index.add(alpha)
        agent = RequestTraversalAgent(index.resource())
        pool = Pool.from_config([[UpstreamConfig(UPSTREAM)]], lambda cfg: agent, clock)
        disk = HeldRunner()
        storage = Storage(self.mktemp(), disk)
        storage.prepare()
        cache = PageCache(PageFetcher(pool), storage, clock, work=sync_run)
        answered = Deferred.fromCoroutine(cache.answer("proto-alpha", Form.JSON))  # type: ignore[arg-type]
        agent.flush()
        disk.run_all()  # the form
        answer = self.successResultOf(answered)
        assert answer.source is not None
        with open(answer.source.path, "rb") as f:
            self.assertIn(alpha.filename.encode(), f.read())
        self.assertEqual([f.__name__ for f, _, _ in disk.jobs], ["write_stored"])
        self.assertFalse(os.path.exists(storage.page_path("proto-alpha")))
        listed = Deferred.fromCoroutine(cache.entry("proto-alpha", alpha.filename))  # type: ignore[arg-type]
        self.assertNoResult(listed)
        disk.run_all()  # the stored page
        _, f = self.successResultOf(listed)
        self.assertEqual(f.filename, alpha.filename)


class SmallFormsTests(SynchronousTestCase):
    def write(self, path: str, data: bytes) -> tuple[int, int, int]:
        tmp = path + ".new"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        st = os.stat(path)
        return st.st_ino, st.st_mtime_ns, st.st_size

    def test_kept_until_rewritten_and_bounded(self) -> None:
        """
        A small form's bytes are read once and kept; a rewritten file is
        read anew; past the budget the least recently used go; a large one
        is never kept.
        """
        root = self.mktemp()
        os.makedirs(root)
        small = SmallForms(budget=9, largest=6)
        a, b, big = (os.path.join(root, n) for n in ("a", "b", "big"))
        first = self.write(a, b"aaaa")
        self.assertEqual(small.bytes_of(a, first), b"aaaa")
        os.unlink(a)  # kept: not read again
        self.assertEqual(small.bytes_of(a, first), b"aaaa")
        second = self.write(a, b"AAAAA")
        self.assertEqual(small.bytes_of(a, second), b"AAAAA")
        self.assertEqual(small.bytes_of(b, self.write(b, b"bbbbb")), b"bbbbb")
        os.unlink(a)  # a is the oldest: dropped when b came, so read again
        self.assertIsNone(small.bytes_of(a, second))
        self.assertIsNone(small.bytes_of(big, self.write(big, b"x" * 7)))

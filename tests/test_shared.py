"""
One download per file, and one fetch per page, across worker processes
sharing a storage: the first to claim a file fetches it, the others read
its partial file, and one of them takes over when its holder dies; a page
is fetched under a lock, and read from disk by the workers that waited.

Two `Manager` objects on one storage directory stand for two processes:
``flock`` locks belong to open files, so two opens in one process
conflict just as two processes' do.  The upstream is the fake index in
memory; a Clock drives it and the watchers' polls.
"""

from __future__ import annotations

import os
from typing import Any

from packaging.utils import NormalizedName
from packaging.version import Version
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.download import Download, IntegrityError
from proxypypi.cache.downloads import Manager
from proxypypi.cache.foreign import ForeignDownload, ForeignDownloadFailed
from proxypypi.cache.forms import Form
from proxypypi.cache.pages import PageCache
from proxypypi.cache.storage import FileKey, Storage
from proxypypi.cache.usage import SizeAccounting
from proxypypi.config.model import UpstreamConfig
from proxypypi.private.model import Upload
from proxypypi.private.store import PrivateStore
from proxypypi.testing import FakeIndex, Fault, make_wheel
from proxypypi.upstream.origin import Origin
from proxypypi.upstream.pages import PageFetcher
from proxypypi.upstream.pool import Pool
from tests.support.disk import stored, sync_run
from tests.support.pumping import pump


class SharedDownloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.index = FakeIndex(self.clock, chunk_size=4096, throttle=100_000)
        self.dist = make_wheel("big", "1.0", payload_size=50_000)
        self.index.add(self.dist)
        self.agent = RequestTraversalAgent(self.index.resource())
        self.root = self.mktemp()
        Storage(self.root, sync_run).prepare()
        self.key = FileKey("big", self.dist.filename)

    def worker(self) -> Manager:
        storage = Storage(self.root, sync_run)
        storage.prepare(keep_partials=True)
        return Manager(storage, self.clock, SizeAccounting(storage, self.clock), idle_timeout=10)

    def get(self, manager: Manager, size: int | None = None) -> Download | ForeignDownload:
        return manager.get(
            self.key,
            [Origin("http://upstream.example/files/" + self.dist.filename, self.agent)],
            {"sha256": self.dist.sha256},
            size,
        )

    def run_until(self, *done: Deferred[Any]) -> None:
        for d in done:
            pump(self.agent, clock=self.clock, advance=0.01, until=d, what="the downloads")

    def read(self, source: Download | ForeignDownload) -> bytes:
        fd = source.open()
        try:
            return os.pread(fd, source.available(), 0)
        finally:
            os.close(fd)

    def test_one_fetch_for_two_workers(self) -> None:
        """
        The second worker reads the first one's partial file, never its last
        byte before the commit, and ends with the same bytes; one upstream
        GET in all.
        """
        a, b = self.worker(), self.worker()
        own = self.get(a, len(self.dist.data))
        other = self.get(b, len(self.dist.data))
        self.assertIsInstance(own, Download)
        self.assertIsInstance(other, ForeignDownload)
        seen: list[int] = []

        def watch() -> None:
            if not other.is_complete():
                seen.append(other.available())

        done = own.when_done()
        pump(self.agent, clock=self.clock, advance=0.01, step=watch, until=done, what="A")
        self.run_until(other.when_done())
        self.assertTrue(other.is_complete())
        self.assertTrue(any(0 < n < len(self.dist.data) for n in seen), seen)
        self.assertTrue(all(n < len(self.dist.data) for n in seen))
        self.assertEqual(self.read(other), self.dist.data)
        self.assertEqual(self.index.count("/files/", "GET"), 1)
        self.assertEqual(stored(a.storage, "big", self.dist.filename), self.dist.data)

    def test_size_told_when_the_page_gives_none(self) -> None:
        """Without a size on the page, the holder tells the others the upstream's."""
        a, b = self.worker(), self.worker()
        self.get(a)
        other = self.get(b)
        self.run_until(other.wait_for_headers())
        self.assertEqual(other.expected_size(), len(self.dist.data))

    def test_holder_gives_up(self) -> None:
        """A holder whose bytes fail their hash takes the other worker's clients down too."""
        self.index.fault = Fault(corrupt=True)
        a, b = self.worker(), self.worker()
        own = self.get(a, len(self.dist.data))
        other = self.get(b, len(self.dist.data))
        self.run_until(own.when_done(), other.when_done())
        self.assertIsInstance(own.failure().value, IntegrityError)  # type: ignore[union-attr]
        self.assertIsInstance(other.failure().value, ForeignDownloadFailed)  # type: ignore[union-attr]
        self.assertIsNone(stored(a.storage, "big", self.dist.filename))

    def test_holder_dies(self) -> None:
        """
        A holder killed mid-download (its claim released, its partial file
        left) is taken over: the bytes on disk are kept, the rest asked for
        with Range, and the file is right.
        """
        storage = Storage(self.root, sync_run)
        dead = storage.claim(self.key)
        assert dead is not None
        os.write(dead.fd, self.dist.data[:20_000])
        b = self.worker()
        other = self.get(b, len(self.dist.data))
        self.assertIsInstance(other, ForeignDownload)
        os.close(dead.fd)  # the kernel's part when a process dies
        self.run_until(other.when_done())
        self.assertTrue(other.is_complete())
        self.assertEqual(stored(b.storage, "big", self.dist.filename), self.dist.data)
        (request,) = [r for r in self.index.requests if r.path.startswith("/files/")]
        self.assertEqual(request.range, "bytes=20000-")

    def test_committed_between_look_and_claim(self) -> None:
        """
        A file another worker put in place after this one looked is served,
        not fetched again.
        """
        a = self.worker()
        own = self.get(a, len(self.dist.data))
        self.run_until(own.when_done())
        b = self.worker()
        again = self.get(b, len(self.dist.data))
        self.assertTrue(again.is_complete())
        self.assertEqual(self.read(again), self.dist.data)
        self.assertEqual(self.index.count("/files/", "GET"), 1)


class SharedPageTests(SynchronousTestCase):
    """
    One upstream fetch of a page across two workers' page caches on one
    storage.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.index = FakeIndex(self.clock, latency=0.2)
        self.index.add(make_wheel("proto-alpha", "1.0"))
        self.agent = RequestTraversalAgent(self.index.resource())
        self.root = self.mktemp()
        Storage(self.root, sync_run).prepare()

    def worker(self) -> PageCache:
        storage = Storage(self.root, sync_run)
        storage.prepare(keep_partials=True)
        pool = Pool.from_config(
            [[UpstreamConfig("http://upstream.example/simple/")]], lambda c: self.agent, self.clock
        )
        return PageCache(PageFetcher(pool), storage, self.clock, ttl=600)

    def answer(self, cache: PageCache) -> Deferred[Any]:
        return Deferred.fromCoroutine(cache.answer("proto-alpha", Form.JSON))  # type: ignore[arg-type]

    def test_cold_page_fetched_once(self) -> None:
        """Two workers asked at once for a page nobody holds: one upstream GET."""
        a, b = self.worker(), self.worker()
        first, second = self.answer(a), self.answer(b)
        pump(self.agent, clock=self.clock, advance=0.01, until=first, what="a's page")
        pump(self.agent, clock=self.clock, advance=0.01, until=second, what="b's page")
        self.assertEqual(self.successResultOf(first).etag, self.successResultOf(second).etag)
        self.assertEqual(self.index.count("/simple/proto-alpha/", "GET"), 1)

    def test_refresh_by_one_is_taken_by_the_other(self) -> None:
        """A page one worker refreshed is read from disk by the other, not fetched again."""
        a, b = self.worker(), self.worker()
        for cache in (a, b):
            d = self.answer(cache)
            pump(self.agent, clock=self.clock, advance=0.01, until=d, what="the page")
        self.clock.advance(601)

        def fresh(cache: PageCache) -> bool:
            facts = cache.known("proto-alpha")  # type: ignore[arg-type]
            return facts is not None and cache.is_fresh(facts)

        a.ready("proto-alpha")  # type: ignore[arg-type]  # stale: refreshed in the background
        pump(self.agent, clock=self.clock, advance=0.01, until=lambda: fresh(a), what="a's")
        fetches = self.index.count("/simple/proto-alpha/", "GET")
        b.ready("proto-alpha")  # type: ignore[arg-type]
        pump(self.agent, clock=self.clock, advance=0.01, until=lambda: fresh(b), what="b's")
        self.assertEqual(self.index.count("/simple/proto-alpha/", "GET"), fetches)


class SharedPrivateTests(SynchronousTestCase):
    def test_upload_through_one_seen_by_the_other(self) -> None:
        """
        A private upload, a yank and a release through one worker are seen
        by the other at its next request, without a restart.
        """
        root = self.mktemp()
        Storage(root, sync_run).prepare()
        clock = Clock()

        def worker() -> PrivateStore:
            return PrivateStore.open(
                os.path.join(root, "private"), os.path.join(root, "tmp"), sync_run, clock
            )

        a, b = worker(), worker()
        dist = make_wheel("proto-secret", "1.0")
        spool = os.path.join(root, "tmp", "upload.part")
        with open(spool, "wb") as f:
            f.write(dist.data)
        upload = Upload(
            NormalizedName("proto-secret"),
            dist.filename,
            "wheel",
            Version("1.0"),
            spool,
            {"sha256": dist.sha256},
            None,
            "alice",
        )
        self.assertFalse(b.is_private("proto-secret"))
        self.successResultOf(Deferred.fromCoroutine(a.add(upload)))
        self.assertTrue(b.is_private("proto-secret"))
        self.assertTrue(b.claims("proto-secret", dist.filename))
        deleted = b.delete("proto-secret", dist.filename, "alice")
        self.successResultOf(Deferred.fromCoroutine(deleted))
        private = a.project("proto-secret")
        assert private is not None
        self.assertEqual(private.files, ())
        self.successResultOf(Deferred.fromCoroutine(a.release("proto-secret", "alice")))
        self.assertFalse(b.is_private("proto-secret"))

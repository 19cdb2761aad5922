"""
Bounded disk: least recently used upstream files are evicted past the
limit, access order survives restarts, files in use and private uploads are
never touched, and an evicted file is fetched again on demand.

Time is a Clock and blocking work runs synchronously (or when the test
says so), so every pass is exact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, cast

from treq.testing import RequestTraversalAgent
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.eviction import INTERVAL, Evictor
from proxypypi.cache.journal import JOURNAL
from proxypypi.cache.storage import FileKey, Storage
from proxypypi.cache.usage import SizeAccounting, UsageService
from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.service.compose import make_service
from proxypypi.simple.negotiate import JSON_V1
from proxypypi.testing import FakeIndex, make_wheel
from tests.support.disk import HeldRunner, sync_run
from tests.support.harness import ProxyCase


class EvictorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.root = self.mktemp()
        self.storage = Storage(self.root, sync_run)
        self.storage.prepare()
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def put(self, name: str, size: int = 1000, mtime: float | None = None) -> FileKey:
        key = FileKey("demo", f"demo-{name}.tar.gz")
        path = self.storage.file_path(key.project, key.filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x" * size)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return key

    def exists(self, key: FileKey) -> bool:
        return self.storage.has_file(key.project, key.filename)

    def evictor(self, limit: int, **kwargs: Any) -> Evictor:
        e = Evictor(self.storage, self.clock, limit, **kwargs)
        e.load()
        self.addCleanup(e.close)
        return e

    def serve(self, evictor: Evictor, key: FileKey) -> Callable[[], None]:
        """
        A response starts reading ``key``; call the result when it ends.
        """
        return evictor.reading(key)

    def four(self) -> list[FileKey]:
        """
        Files a, b, c, d of 1000 bytes, stored in that order (by mtime).
        """
        return [self.put(n, mtime=100.0 * (i + 1)) for i, n in enumerate("abcd")]

    def test_scan_counts_only_upstream_files(self) -> None:
        """The start-up scan counts stored upstream files, not temporaries, foreign or private."""
        self.four()
        for odd in ("files/demo/.hidden", "files/demo/x.part", "files/Not_Normal/y.whl"):
            path = os.path.join(self.root, odd)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"z" * 5000)
        private = os.path.join(self.root, "private", "demo", "demo-9.0.tar.gz")
        os.makedirs(os.path.dirname(private))
        with open(private, "wb") as f:
            f.write(b"p" * 5000)
        e = self.evictor(limit=10)
        self.assertEqual(e.total, 0)
        # Everything it tracked was evicted; nothing else was touched.
        self.assertTrue(os.path.exists(private))
        for odd in ("files/demo/.hidden", "files/demo/x.part", "files/Not_Normal/y.whl"):
            self.assertTrue(os.path.exists(os.path.join(self.root, odd)), odd)
        self.assertEqual(os.listdir(self.storage.tmp_dir), [])

    def test_least_recently_used_go_first(self) -> None:
        """A commit past the limit evicts the least recently used files down to 90%."""
        a, b, c, d = self.four()
        e = self.evictor(limit=5000)
        self.assertEqual((e.total, e.tracked()), (4000, [a, b, c, d]))
        self.clock.advance(1)
        self.serve(e, a)()
        new = self.put("e", size=2000)
        e.stored(new, 2000)
        self.assertEqual(e.total, 6000)
        self.assertTrue(self.exists(b))
        self.clock.advance(0)
        self.assertEqual([self.exists(k) for k in (a, b, c, d, new)], [1, 0, 0, 1, 1])
        self.assertEqual(e.total, 4000)
        self.assertEqual(e.tracked(), [d, a, new])
        self.assertEqual(os.listdir(self.storage.tmp_dir), [])
        (event,) = [ev for ev in self.log if "evicted" in ev.get("log_format", "")]
        self.assertEqual((event["count"], event["freed"]), (2, 2000))

    def test_order_survives_restart(self) -> None:
        """A new evictor reads the access order back from the journal, torn last line and all."""
        a, b, c, d = self.four()
        e = self.evictor(limit=10_000)
        self.clock.advance(1)
        self.serve(e, b)()
        self.clock.advance(1)
        self.serve(e, a)()
        e.close()
        with open(os.path.join(self.root, JOURNAL), "ab") as f:
            f.write(b'not json\n[1003.0, "demo", "demo-c.t')
        again = self.evictor(limit=10_000)
        self.assertEqual(again.tracked(), [c, d, b, a])
        with open(os.path.join(self.root, JOURNAL), "rb") as f:
            self.assertTrue(f.read().endswith(b"\n"))
        again.limit = 2500
        again.evict()
        self.assertEqual([self.exists(k) for k in (a, b, c, d)], [1, 1, 0, 0])

    def test_files_in_use_are_skipped(self) -> None:
        """Files being served or downloaded are never evicted; served ones go once released."""
        a, b, c, d = self.four()
        e = self.evictor(limit=10_000)
        reading = self.serve(e, a)
        writing = e.writing(b)
        self.assertTrue(e.in_use(a) and e.in_use(b) and not e.in_use(c))
        e.limit = 2500
        e.tick()
        self.assertEqual([self.exists(k) for k in (a, b, c, d)], [1, 1, 0, 0])
        self.assertEqual(e.total, 2000)
        e.limit = 1500
        e.tick()
        self.assertEqual(e.total, 2000)
        reading()
        writing()
        e.tick()
        # Serving counted as an access: a is now more recent than b.
        self.assertEqual(e.total, 1000)
        self.assertEqual([self.exists(k) for k in (a, b)], [1, 0])

    def test_events_before_the_scan_are_kept(self) -> None:
        """Accesses and commits during the start-up scan are applied once it is done."""
        a, b, c, d = self.four()
        runner = HeldRunner()
        self.storage.run = runner
        e = Evictor(self.storage, self.clock, 10_000)
        self.addCleanup(e.close)
        e.load()
        self.serve(e, a)()
        new = self.put("e", size=3000)
        e.stored(new, 3000)
        self.assertFalse(e.loaded)
        runner.run_all()
        self.assertEqual(e.tracked(), [b, c, d, a, new])
        self.assertEqual(e.total, 7000)

    def test_compaction(self) -> None:
        """A journal of mostly stale lines is rewritten with one line per file, losing nothing."""
        a, b, c, d = self.four()
        e = self.evictor(limit=10_000, compact_slack=5)
        for _ in range(20):
            self.clock.advance(1)
            self.serve(e, a)()
        self.assertTrue(e.needs_compaction())
        runner = HeldRunner()
        self.storage.run = runner
        e.tick()
        self.clock.advance(1)
        self.serve(e, c)()
        runner.run_all()
        with open(os.path.join(self.root, JOURNAL), "rb") as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([name for _, _, name in lines][-2:], ["demo-a.tar.gz", "demo-c.tar.gz"])
        self.assertEqual(len(lines), 5)
        self.assertFalse(e.needs_compaction())
        e.close()
        self.storage.run = sync_run
        self.assertEqual(self.evictor(limit=10_000).tracked(), [b, d, a, c])

    def test_crash_mid_eviction(self) -> None:
        """Killed between rename and unlink: the restart cleans up and counts right."""
        a, b, c, d = self.four()
        runner = HeldRunner()
        e = self.evictor(limit=10_000)
        self.storage.run = runner
        e.limit = 2500
        e.stored(self.put("e", size=10), 10)
        self.clock.advance(0)
        self.assertEqual(len(os.listdir(self.storage.tmp_dir)), 2)
        # The process dies here: the unlink job never runs.
        e.close()
        restarted = Storage(self.root, sync_run)
        restarted.prepare()
        self.assertEqual(os.listdir(restarted.tmp_dir), [])
        again = Evictor(restarted, self.clock, 2500)
        again.load()
        self.addCleanup(again.close)
        self.assertEqual(again.total, 2010)
        self.assertEqual([self.exists(k) for k in (a, b, c, d)], [0, 0, 1, 1])

    def test_background_pass_survives_errors(self) -> None:
        """An error in a pass is logged and the timer keeps running; a failed scan is retried."""
        self.four()
        calls: list[int] = []

        class Flaky(Evictor):
            def evict(self) -> int:
                calls.append(1)
                if len(calls) == 1:
                    raise RuntimeError("boom")
                return super().evict()

        failing = [True]

        def run(f: Any, *args: Any) -> Deferred[Any]:
            if failing:
                failing.clear()
                return maybeDeferred(lambda: 1 / 0)
            return sync_run(f, *args)

        self.storage.run = run
        evictor = Flaky(self.storage, self.clock, 10_000)
        service = UsageService(evictor, self.clock)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertFalse(evictor.loaded)
        self.clock.advance(INTERVAL)
        self.assertTrue(evictor.loaded)
        evictor.limit = 2500
        self.clock.advance(INTERVAL)
        self.assertEqual((len(calls), evictor.total), (1, 4000))
        self.clock.advance(INTERVAL)
        self.assertEqual((len(calls), evictor.total), (2, 2000))
        self.assertTrue(service.running)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError, RuntimeError)), 2)


class EvictionWebTests(ProxyCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.index = FakeIndex(self.clock)
        self.alpha = make_wheel("proto-alpha", "1.0", payload_size=20_000)
        self.beta = make_wheel("proto-alpha", "2.0", payload_size=10_000)
        for dist in (self.alpha, self.beta):
            self.index.add(dist)
        self.upstream = RequestTraversalAgent(self.index.resource())
        self.make_proxy(max_cache_size=len(self.alpha.data) + len(self.beta.data) - 1)
        self.start_usage()

    def get(self, path: str) -> tuple[int, bytes]:
        response, body = self.request("GET", path, accept=JSON_V1)
        return response.code, body

    def test_evicted_file_is_fetched_again(self) -> None:
        """The LRU file is evicted when another lands; its page keeps it; it is fetched again."""
        alpha = "/files/proto-alpha/" + self.alpha.filename
        self.assertEqual(self.get(alpha), (200, self.alpha.data))
        self.assertEqual(self.get("/files/proto-alpha/" + self.beta.filename)[0], 200)
        storage = self.proxy.storage
        self.assertFalse(storage.has_file("proto-alpha", self.alpha.filename))
        self.assertTrue(storage.has_file("proto-alpha", self.beta.filename))
        code, page = self.get("/simple/proto-alpha/")
        self.assertIn(self.alpha.filename, [f["filename"] for f in json.loads(page)["files"]])
        self.assertEqual(self.get(alpha), (200, self.alpha.data))
        self.assertEqual(self.index.count("/files/" + self.alpha.filename), 2)
        self.assertTrue(storage.has_file("proto-alpha", self.alpha.filename))
        self.assertFalse(storage.has_file("proto-alpha", self.beta.filename))


class WiringTests(SynchronousTestCase):
    def test_only_with_a_limit(self) -> None:
        """The cache is bounded by an evictor only when a limit is set; else its size is counted."""
        for limit, expected in ((None, SizeAccounting), (1024, Evictor)):
            config = Config(
                upstreams=((UpstreamConfig("http://127.0.0.1:9/simple/"),),),
                storage=self.mktemp(),
                max_cache_size=limit,
                workers=1,
            )
            service = make_service(config, reactor)
            (found,) = [s for s in cast(Any, service) if isinstance(s, UsageService)]
            self.assertIsInstance(found.tracker, expected)

"""
Single-flight downloads: streaming into storage, resume, integrity, failure.

The upstream is the fake index served in memory (treq's
RequestTraversalAgent); time is a Clock shared by the fake and the
download, so stalls and timeouts are exact and instant.
"""

from __future__ import annotations

import os
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import DNSLookupError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from proxypypi.cache.complete import CompleteFile
from proxypypi.cache.download import Download, IntegrityError
from proxypypi.cache.downloads import Manager
from proxypypi.cache.storage import FileKey, Storage
from proxypypi.cache.transfer import FileNotFoundUpstream
from proxypypi.cache.usage import SizeAccounting
from proxypypi.interfaces import IFileSourceListener
from proxypypi.testing import Dist, FakeIndex, Fault, make_wheel
from proxypypi.upstream.fetch import FetchError
from proxypypi.upstream.origin import Origin
from tests.support.disk import FillableStorage, stored, sync_run
from tests.support.pumping import Condition, pump


@implementer(IFileSourceListener)
class Listener:
    def __init__(self, source: Download) -> None:
        self.source = source
        self.seen: list[int] = []
        self.failed: list[Failure] = []

    def data_available(self) -> None:
        self.seen.append(self.source.available())

    def source_failed(self, reason: Failure) -> None:
        self.failed.append(reason)


class DownloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.index = FakeIndex(self.clock, chunk_size=4096, latency=0.5, throttle=100_000)
        self.dist: Dist = make_wheel("big", "1.0", payload_size=50_000)
        self.index.add(self.dist)
        self.agent = RequestTraversalAgent(self.index.resource())
        self.root = self.mktemp()
        self.storage = Storage(self.root, sync_run)
        self.storage.prepare()
        self.manager = self.make_manager(self.storage)
        self.url = "http://upstream.example/files/" + self.dist.filename

    def make_manager(self, storage: Storage) -> Manager:
        return Manager(storage, self.clock, SizeAccounting(storage, self.clock), idle_timeout=10)

    def start(self, hashes: dict[str, str] | None = None, size: int | None = None) -> Download:
        return self.manager.get(
            FileKey("big", self.dist.filename),
            [Origin(self.url, self.agent)],
            {"sha256": self.dist.sha256} if hashes is None else hashes,
            len(self.dist.data) if size is None else size,
        )

    def run_until(self, until: Condition, what: str = "the download to end") -> None:
        """
        Run the upstream and the clock, a tenth of a second a round, until
        ``until`` holds.
        """
        pump(self.agent, clock=self.clock, advance=0.1, until=until, what=what)

    def stored(self) -> bytes | None:
        return stored(self.storage, "big", self.dist.filename)

    def test_complete_download(self) -> None:
        """A download streams to disk, is verified, committed, and readable by listeners."""
        d = self.start()
        listener = Listener(d)
        d.add_listener(listener)
        self.run_until(d.when_done())
        self.assertTrue(d.is_complete())
        self.assertEqual(self.stored(), self.dist.data)
        self.assertEqual(d.available(), len(self.dist.data))
        # The last byte is released once the hash is verified (then the
        # commit notifies once more); before that it was always held back.
        self.assertEqual(listener.seen[-2:], [len(self.dist.data)] * 2)
        self.assertTrue(all(n < len(self.dist.data) for n in listener.seen[:-2]))
        self.assertEqual(os.listdir(self.storage.tmp_dir), [])
        self.assertEqual(self.manager.in_flight(), [])

    def test_single_flight(self) -> None:
        """Concurrent requests for one file share one download and one upstream fetch."""
        first = self.start()
        second = self.start()
        self.assertIs(first, second)
        self.run_until(first.when_done())
        self.assertEqual(self.index.count("/files/", "GET"), 1)

    def test_corrupt_body_never_committed(self) -> None:
        """A body failing its hash is discarded, listeners fail, the last byte is withheld."""
        self.index.fault = Fault(corrupt=True)
        d = self.start()
        listener = Listener(d)
        d.add_listener(listener)
        self.run_until(d.when_done())
        self.assertIsNone(self.stored())
        self.assertEqual(len(listener.failed), 1)
        listener.failed[0].trap(IntegrityError)
        self.assertTrue(all(n < len(self.dist.data) for n in listener.seen))
        self.assertEqual(os.listdir(self.storage.tmp_dir), [])

    def test_resume_after_reset(self) -> None:
        """A connection reset mid-body is resumed with a Range request; the file is whole."""
        self.index.fault = Fault(drop_after=20_000, times=1)
        d = self.start()
        self.run_until(d.when_done())
        self.assertTrue(d.is_complete())
        self.assertEqual(self.stored(), self.dist.data)
        ranges = [r.range for r in self.index.requests if r.path.startswith("/files/")]
        self.assertEqual(ranges[0], None)
        self.assertTrue(ranges[1] is not None and ranges[1].startswith("bytes="))

    def test_stall_times_out_and_resumes(self) -> None:
        """A stalled body is abandoned after the idle timeout and resumed."""
        self.index.fault = Fault(stall_after=8192, times=1)
        d = self.start()
        self.run_until(lambda: d.progress()[0] == 8192, "the 8192 bytes before the stall")
        self.assertFalse(d.is_complete())
        self.clock.advance(11)
        self.run_until(d.when_done())
        self.assertTrue(d.is_complete())
        self.assertEqual(self.stored(), self.dist.data)

    def test_upstream_404(self) -> None:
        """A file the upstream does not have fails the download at once."""
        self.index.remove("big", self.dist.filename)
        d = self.start()
        waiting = d.wait_for_headers()
        self.run_until(d.when_done())
        self.failureResultOf(waiting, FileNotFoundUpstream)
        self.assertEqual(self.index.count("/files/"), 1)

    def test_size_mismatch(self) -> None:
        """An upstream length that disagrees with the page's size is refused."""
        d = self.start(size=123)
        waiting = d.wait_for_headers()
        self.run_until(d.when_done())
        self.failureResultOf(waiting, IntegrityError)
        self.assertIsNone(self.stored())

    def test_persistent_errors_give_up(self) -> None:
        """Upstream 500s are retried a bounded number of times, then fail."""
        self.index.fault = Fault(status=500)
        d = self.start()
        waiting = d.wait_for_headers()
        self.run_until(d.when_done())
        self.failureResultOf(waiting, FetchError)
        self.assertLessEqual(self.index.count("/files/"), 6)
        self.assertEqual(os.listdir(self.storage.tmp_dir), [])

    def test_short_body_without_length_is_resumed(self) -> None:
        """
        A body sent without Content-Length that ends cleanly short of the
        page's size is resumed from the next origin, not blamed as corrupt.
        """

        class ShortBody(Resource):
            isLeaf = True

            def __init__(self, data: bytes) -> None:
                super().__init__()
                self.data = data

            def render_GET(self, request: Any) -> int:
                request.write(self.data)  # no Content-Length: chunked
                request.finish()
                return NOT_DONE_YET

        short = RequestTraversalAgent(ShortBody(self.dist.data[:20_000]))
        d = self.manager.get(
            FileKey("big", self.dist.filename),
            [Origin("http://short.example/f.whl", short), Origin(self.url, self.agent)],
            {"sha256": self.dist.sha256},
            len(self.dist.data),
        )
        pump(short, self.agent, clock=self.clock, advance=0.1, until=d.when_done(), what="the end")
        self.assertIsNone(d.failure())
        self.assertTrue(d.is_complete())
        self.assertEqual(self.stored(), self.dist.data)
        self.assertEqual(d.bad_origins, ())

    def test_unknown_host_fails_over(self) -> None:
        """
        An origin whose host name does not resolve (DNSLookupError, an
        OSError) is an upstream failure: the next origin is tried, and the
        storage is not reported unwritable.
        """

        class NoSuchHost:
            def request(self, *args: object, **kwargs: object) -> Deferred[object]:
                return fail(DNSLookupError("no-such-host.example"))

        d = self.manager.get(
            FileKey("big", self.dist.filename),
            [
                Origin("http://no-such-host.example/f.whl", NoSuchHost()),  # type: ignore[arg-type]
                Origin(self.url, self.agent),
            ],
            {"sha256": self.dist.sha256},
            len(self.dist.data),
        )
        self.run_until(d.when_done())
        self.assertIsNone(d.failure())
        self.assertTrue(d.is_complete())
        self.assertEqual(self.stored(), self.dist.data)
        self.assertIsNone(self.storage.write_error)

    def test_disk_full(self) -> None:
        """A write that fails (disk full) aborts the download and removes the partial."""
        self.manager = self.make_manager(FillableStorage(self.root, sync_run, full=True))
        d = self.start()
        listener = Listener(d)
        d.add_listener(listener)
        self.run_until(d.when_done())
        self.assertEqual(len(listener.failed), 1)
        self.assertIsInstance(listener.failed[0].value, OSError)
        self.assertIsNone(self.stored())
        self.assertEqual(os.listdir(self.storage.tmp_dir), [])


class CompleteFileTests(SynchronousTestCase):
    """
    A stored file is served as it was looked at, or not at all.
    """

    def stored(self, data: bytes) -> tuple[str, CompleteFile]:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        complete = CompleteFile.at(path)
        assert complete is not None
        return path, complete

    def replace(self, path: str, data: bytes) -> None:
        with open(path + ".new", "wb") as f:
            f.write(data)
        os.replace(path + ".new", path)

    def test_replaced_before_open(self) -> None:
        """A file replaced between the look and the opening is refused, whatever its size."""
        for new in (b"a longer replacement", b"new"):
            path, complete = self.stored(b"old")
            self.replace(path, new)
            with self.assertRaises(OSError):
                complete.open()

    def test_open_keeps_bytes(self) -> None:
        """Once open, the file's bytes stay what they were, whatever replaces it."""
        path, complete = self.stored(b"old")
        fd = complete.open()
        self.addCleanup(os.close, fd)
        self.replace(path, b"replacement")
        self.assertEqual((complete.size, os.read(fd, 100)), (3, b"old"))

    def test_missing(self) -> None:
        """No file, no source."""
        self.assertIsNone(CompleteFile.at(os.path.abspath(self.mktemp())))


class CancelTests(SynchronousTestCase):
    def test_cancel_while_waiting_for_headers(self) -> None:
        """A download cancelled before the upstream answers fetches no body and fails."""
        clock = Clock()
        index = FakeIndex(clock, latency=5.0)
        dist = make_wheel("slow", "1.0", payload_size=10_000)
        index.add(dist)
        agent = RequestTraversalAgent(index.resource())
        storage = Storage(self.mktemp(), sync_run)
        storage.prepare()
        manager = Manager(storage, clock, SizeAccounting(storage, clock), idle_timeout=10)
        d = manager.get(
            FileKey("slow", dist.filename),
            [Origin("http://upstream.example/files/" + dist.filename, agent)],
            {"sha256": dist.sha256},
            len(dist.data),
        )
        waiting = d.wait_for_headers()
        manager.cancel_all()
        # Long enough for the upstream's answer, had the request not been
        # cancelled: until no timer is left.
        pump(
            agent,
            clock=clock,
            advance=1,
            until=lambda: not clock.getDelayedCalls(),
            what="every timer to run or be cancelled",
        )
        self.failureResultOf(waiting, FetchError)
        self.assertFalse(storage.has_file("slow", dist.filename))
        self.assertEqual(os.listdir(storage.tmp_dir), [])
        self.assertEqual(manager.in_flight(), [])

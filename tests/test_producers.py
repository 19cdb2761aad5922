"""
Tests for `proxypypi.web.producers`.

Responses run through a real `twisted.web.server.Site` over a
`StringTransport`, because a producer's contract is with the real
``Request``/``HTTPChannel`` pair (backpressure, finish, disconnects), which
``DummyRequest`` does not model (`tests.support.wire`); the file is a
`tests.support.producers.FakeFileSource` the test appends to.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from proxypypi.interfaces import IFileSourceListener
from proxypypi.web.producers import TailProducer
from tests.support.producers import FakeFileSource, make_source
from tests.support.pumping import pump
from tests.support.wire import get, make_site

# --- Resource under test ---------------------------------------------------


class ProducerResource(Resource):
    """
    Serves ``source`` through a `TailProducer` with the given parameters,
    setting ``Content-Length`` to ``length`` when given.
    """

    isLeaf = True

    def __init__(
        self,
        source: FakeFileSource,
        clock: IReactorTime,
        start: int = 0,
        end: int | None = None,
        length: int | None = None,
        stall_timeout: float = 300.0,
        chunk_size: int = 4,
    ) -> None:
        super().__init__()
        self.source = source
        self.clock = clock
        self.start = start
        self.end = end
        self.length = length
        self.stall_timeout = stall_timeout
        self.chunk_size = chunk_size
        self.producers: list[TailProducer] = []

    def render_GET(self, request: Request) -> int:
        if self.length is not None:
            request.setHeader(b"content-length", b"%d" % (self.length,))
        producer = TailProducer(
            request,
            self.source,
            clock=self.clock,
            start=self.start,
            end=self.end,
            stall_timeout=self.stall_timeout,
            chunk_size=self.chunk_size,
        )
        self.producers.append(producer)
        producer.start()
        return NOT_DONE_YET


class ProducerTestsMixin:
    """
    Set-up shared by the producer tests.
    """

    def setup(self, testcase: SynchronousTestCase, **kwargs: object) -> None:
        self.clock = Clock()
        self.source = make_source(testcase)
        self.resource = ProducerResource(self.source, self.clock, **kwargs)  # type: ignore[arg-type]
        self.site = make_site(self.resource, self.clock)

    @property
    def producer(self) -> TailProducer:
        [producer] = self.resource.producers
        return producer


# --- Tests -----------------------------------------------------------------

DATA = bytes(range(256)) * 4


class TailProducerCompleteFileTests(ProducerTestsMixin, SynchronousTestCase):
    """
    Serving files that are already complete.
    """

    def setUp(self) -> None:
        self.setup(self, length=len(DATA))
        self.source.append(DATA)
        self.source.finish()

    def test_interfaces(self) -> None:
        """
        The producer provides both interfaces it declares.
        """
        client = get(self.site)
        self.assertTrue(verifyObject(IPushProducer, self.producer))
        self.assertTrue(verifyObject(IFileSourceListener, self.producer))
        self.assertTrue(client.response().complete)

    def test_whole_file(self) -> None:
        """
        A complete file is sent whole and the response finishes.
        """
        client = get(self.site)
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)
        self.assertTrue(response.complete)
        self.assertTrue(self.producer.done)

    def test_resources_released(self) -> None:
        """
        After finishing, the descriptor is closed, nothing listens and no timer is pending.
        """
        get(self.site)
        self.assertEqual(self.source.open_fds(), set())
        self.assertEqual(self.source.listeners, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_keep_alive(self) -> None:
        """
        The connection serves a second request after the first finished.
        """
        client = get(self.site)
        client.transport.clear()
        client.send(b"GET /f HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        self.assertEqual(client.body(), DATA)
        self.assertEqual(len(self.resource.producers), 2)
        self.assertFalse(client.transport.disconnecting)

    def test_chunked_without_length(self) -> None:
        """
        Without a Content-Length the body goes chunked and ends with the last chunk.
        """
        self.resource.length = None
        response = get(self.site).response()
        self.assertEqual(response.header(b"transfer-encoding"), b"chunked")
        self.assertEqual(response.body, DATA)
        self.assertTrue(response.complete)

    def test_slice(self) -> None:
        """
        ``start`` and ``end`` select the bytes in between.
        """
        self.resource.start, self.resource.end, self.resource.length = 10, 20, 10
        self.assertEqual(get(self.site).body(), DATA[10:20])

    def test_slice_to_end(self) -> None:
        """
        ``end=None`` sends from ``start`` to the end of the complete file.
        """
        self.resource.start, self.resource.length = 1000, 24
        self.assertEqual(get(self.site).body(), DATA[1000:])

    def test_zero_length(self) -> None:
        """
        An empty range finishes at once with an empty body.
        """
        self.resource.start, self.resource.end, self.resource.length = 5, 5, 0
        client = get(self.site)
        response = client.response()
        self.assertEqual(response.body, b"")
        self.assertTrue(response.complete)
        self.assertTrue(self.producer.done)
        self.assertEqual(self.source.open_fds(), set())

    def test_empty_file(self) -> None:
        """
        A complete empty file is sent as an empty body.
        """
        self.source = make_source(self)
        self.source.finish()
        self.resource.source = self.source
        self.resource.length = 0
        response = get(self.site).response()
        self.assertEqual(response.body, b"")
        self.assertTrue(response.complete)

    def test_shorter_than_promised(self) -> None:
        """
        A complete file shorter than ``end`` aborts rather than finishing short.
        """
        self.resource.end, self.resource.length = len(DATA) + 10, len(DATA) + 10
        client = get(self.site)
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(client.body(), DATA)
        self.assertFalse(client.response().complete)
        self.assertTrue(self.producer.done)
        self.assertEqual(self.source.open_fds(), set())

    def test_available_beyond_file(self) -> None:
        """
        A source vouching for bytes the file does not hold makes the response abort.
        """
        self.source.written += 10
        self.resource.length = len(DATA) + 10
        client = get(self.site)
        self.assertTrue(client.transport.disconnected)
        self.assertFalse(client.response().complete)
        self.assertEqual(self.source.open_fds(), set())

    def test_start_twice(self) -> None:
        """
        Starting a producer twice is an error.
        """
        get(self.site)
        self.assertRaises(RuntimeError, self.producer.start)

    def test_invalid_bounds(self) -> None:
        """
        Negative starts, ends before starts and non-positive timeouts are refused.
        """
        request = _RecordingRequest()
        cases: list[dict[str, Any]] = [
            {"start": -1},
            {"start": 5, "end": 4},
            {"stall_timeout": 0.0},
            {"chunk_size": 0},
        ]
        for kwargs in cases:
            with self.subTest(**kwargs):
                self.assertRaises(
                    ValueError,
                    TailProducer,
                    request,
                    self.source,
                    clock=self.clock,
                    **kwargs,
                )


class TailProducerOpenFailureTests(SynchronousTestCase):
    """
    A source that cannot be opened.
    """

    def test_open_failure(self) -> None:
        """
        ``start`` raises the ``OSError`` before registering or writing anything.
        """
        clock = Clock()
        source = make_source(self)
        source.open_error = FileNotFoundError(errno.ENOENT, "gone")
        request = _RecordingRequest()
        producer = TailProducer(request, source, clock=clock)
        self.assertRaises(FileNotFoundError, producer.start)
        self.assertEqual(request.calls, [])
        self.assertEqual(source.listeners, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class _RecordingRequest:
    """
    Records what a producer does to its request.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, data: bytes) -> None:
        self.calls.append("write")

    def finish(self) -> None:
        self.calls.append("finish")

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.calls.append("registerProducer")

    def unregisterProducer(self) -> None:
        self.calls.append("unregisterProducer")

    def notifyFinish(self) -> Deferred[None]:
        raise AssertionError("not expected")


class TailProducerGrowingFileTests(ProducerTestsMixin, SynchronousTestCase):
    """
    Serving files that are still being downloaded.
    """

    def setUp(self) -> None:
        self.setup(self, length=len(DATA))

    def test_headers_sent_at_once(self) -> None:
        """
        Headers go out before any byte is downloaded, so clients' header timeouts do not run.
        """
        client = get(self.site)
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-length"), b"%d" % (len(DATA),))
        self.assertEqual(response.body, b"")

    def test_follows_appends(self) -> None:
        """
        Bytes appended after the request started arrive as they are appended.
        """
        client = get(self.site)
        self.source.append(DATA[:100])
        self.assertEqual(client.body(), DATA[:100])
        self.source.append(DATA[100:101])
        self.assertEqual(client.body(), DATA[:101])
        self.source.append(DATA[101:])
        self.assertEqual(client.body(), DATA)
        # With no end given, only the source's completion ends the response.
        self.assertFalse(self.producer.done)
        self.source.finish()
        self.assertTrue(client.response().complete)
        self.assertTrue(self.producer.done)
        self.assertEqual(self.source.open_fds(), set())

    def test_waits_for_completion_without_end(self) -> None:
        """
        With ``end=None`` the response ends only when the source is complete.
        """
        self.resource.length = None
        client = get(self.site)
        self.source.append(DATA)
        self.assertFalse(client.response().complete)
        self.assertFalse(self.producer.done)
        self.source.finish()
        response = client.response()
        self.assertTrue(response.complete)
        self.assertEqual(response.body, DATA)

    def test_finishes_at_end_before_completion(self) -> None:
        """
        With an ``end``, the response finishes once it is reached, complete source or not.
        """
        self.resource.end, self.resource.length = 10, 10
        client = get(self.site)
        self.source.append(DATA[:50])
        self.assertEqual(client.body(), DATA[:10])
        self.assertTrue(client.response().complete)
        self.assertTrue(self.producer.done)
        self.assertEqual(self.source.listeners, [])

    def test_range_waits_for_bytes(self) -> None:
        """
        A range beyond what is on disk waits for those bytes.
        """
        self.resource.start, self.resource.end, self.resource.length = 500, 600, 100
        client = get(self.site)
        self.source.append(DATA[:550])
        self.assertEqual(client.body(), DATA[500:550])
        self.source.append(DATA[550:])
        self.assertEqual(client.body(), DATA[500:600])
        self.assertTrue(client.response().complete)

    def test_unverified_tail_withheld(self) -> None:
        """
        Bytes the source does not yet vouch for are not sent.
        """
        client = get(self.site)
        self.source.held_back = 24
        self.source.append(DATA)
        self.assertEqual(client.body(), DATA[:-24])
        self.source.finish()
        self.assertEqual(client.body(), DATA)
        self.assertTrue(client.response().complete)

    def test_late_joiner(self) -> None:
        """
        A client arriving in the middle of the download starts from byte 0.
        """
        early = get(self.site)
        self.source.append(DATA[:700])
        late = get(self.site)
        self.assertEqual(late.body(), DATA[:700])
        self.source.append(DATA[700:])
        self.source.finish()
        self.assertEqual(early.body(), DATA)
        self.assertEqual(late.body(), DATA)
        self.assertTrue(late.response().complete)

    def test_reentrant_data_available(self) -> None:
        """
        Data arriving from inside a write is sent once, in order, without recursion.
        """
        client = get(self.site)
        pieces = iter([DATA[i : i + 8] for i in range(8, len(DATA), 8)])

        def append_more(data: bytes) -> None:
            piece = next(pieces, None)
            if piece is not None:
                self.source.append(piece)

        client.transport.on_write = append_more
        self.source.append(DATA[:8])
        self.source.finish()
        response = client.response()
        self.assertEqual(response.body, DATA)
        self.assertTrue(response.complete)


class TailProducerBackpressureTests(ProducerTestsMixin, SynchronousTestCase):
    """
    Following the client's pace.
    """

    def setUp(self) -> None:
        self.setup(self, length=len(DATA))

    def test_pause_stops_writes(self) -> None:
        """
        A pause requested from inside a write stops the writes at once.
        """
        self.source.append(DATA)
        self.source.finish()
        client = get(self.site, limit=200)
        # The write that reached the limit was the last one: the transport
        # holds at least 200 bytes, and less than one more 4-byte chunk.
        sent = len(client.transport.value())
        self.assertEqual(client.transport.pauses, 1)
        self.assertGreaterEqual(sent, 200)
        self.assertLess(sent, 200 + 4)
        self.assertEqual(self.producer.offset, len(client.body()))
        self.assertFalse(self.producer.done)

    def test_resume_continues(self) -> None:
        """
        Each resume sends another window until the response finishes.
        """
        self.source.append(DATA)
        self.source.finish()
        client = get(self.site, limit=200)
        seen = [len(client.body())]

        def read() -> None:
            client.transport.drain()
            seen.append(len(client.body()))

        pump(step=read, until=lambda: self.producer.done, what="the response to finish")
        self.assertEqual(seen, sorted(set(seen)))
        self.assertEqual(client.body(), DATA)
        self.assertTrue(client.response().complete)

    def test_data_while_paused(self) -> None:
        """
        Bytes downloaded while the client is paused wait for it to resume.
        """
        client = get(self.site, limit=120)
        self.source.append(DATA[:200])
        sent = len(client.body())
        self.assertEqual(client.transport.producerState, "paused")
        self.source.append(DATA[200:])
        self.source.finish()
        self.assertEqual(len(client.body()), sent)
        pump(
            step=client.transport.drain,
            until=lambda: self.producer.done,
            what="the response to finish",
        )
        self.assertEqual(client.body(), DATA)

    def test_readers_at_different_paces(self) -> None:
        """
        A slow reader neither slows nor disturbs a fast one on the same download.
        """
        fast = get(self.site)
        slow = get(self.site, limit=100)
        for i in range(0, len(DATA), 64):
            self.source.append(DATA[i : i + 64])
            self.assertEqual(fast.body(), DATA[: i + 64])
        self.source.finish()
        self.assertTrue(fast.response().complete)
        fast_producer, slow_producer = self.resource.producers
        self.assertTrue(fast_producer.done)
        self.assertFalse(slow_producer.done)
        self.assertLess(len(slow.body()), len(DATA))
        pump(
            step=slow.transport.drain,
            until=lambda: slow_producer.done,
            what="the slow reader's response to finish",
        )
        self.assertEqual(slow.body(), DATA)
        self.assertTrue(slow.response().complete)
        self.assertEqual(self.source.open_fds(), set())


class TailProducerFailureTests(ProducerTestsMixin, SynchronousTestCase):
    """
    Ending a response early.
    """

    def setUp(self) -> None:
        self.setup(self, length=len(DATA))

    def assert_released(self) -> None:
        self.assertTrue(self.producer.done)
        self.assertEqual(self.source.open_fds(), set())
        self.assertNotIn(self.producer, self.source.listeners)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_source_failure_aborts(self) -> None:
        """
        A download failing mid-stream aborts the connection, leaving the body visibly short.
        """
        client = get(self.site)
        self.source.append(DATA[:300])
        self.source.fail()
        self.assertTrue(client.transport.disconnected)
        response = client.response()
        self.assertEqual(response.body, DATA[:300])
        self.assertFalse(response.complete)
        self.assert_released()
        # The response was never finished: the connection is dropped instead.
        client.disconnect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_source_failure_aborts_chunked(self) -> None:
        """
        Without a Content-Length, a failure never writes the terminating chunk.
        """
        self.resource.length = None
        client = get(self.site)
        self.source.append(DATA[:300])
        self.source.fail()
        self.assertTrue(client.transport.disconnected)
        self.assertFalse(client.response().complete)
        self.assertNotIn(b"0\r\n\r\n", client.transport.value())

    def test_source_failure_while_paused(self) -> None:
        """
        A failure while the client is paused aborts as well.
        """
        client = get(self.site, limit=100)
        self.source.append(DATA)
        self.source.fail()
        self.assertTrue(client.transport.disconnected)
        self.assertFalse(client.response().complete)
        self.assert_released()

    def test_source_failed_before_start(self) -> None:
        """
        A source that already failed is never served.
        """
        self.source.append(DATA[:10])
        self.source.fail()
        client = get(self.site)
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(client.transport.value(), b"")
        self.assert_released()

    def test_client_disconnect(self) -> None:
        """
        A client going away releases the producer's resources and leaves the download alone.
        """
        client = get(self.site)
        self.source.append(DATA[:100])
        client.disconnect()
        self.assert_released()
        self.source.append(DATA[100:])
        self.source.finish()
        self.assertEqual(client.body(), DATA[:100])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_client_disconnect_other_reader_unaffected(self) -> None:
        """
        One client going away does not disturb another reading the same download.
        """
        gone = get(self.site)
        staying = get(self.site)
        self.source.append(DATA[:100])
        gone.disconnect()
        self.source.append(DATA[100:])
        self.source.finish()
        self.assertEqual(staying.body(), DATA)
        self.assertTrue(staying.response().complete)

    def test_disconnect_inside_write(self) -> None:
        """
        A disconnect reported from inside a write stops the loop before it reads again.
        """
        client = get(self.site)
        client.transport.on_write = lambda data: client.disconnect()
        self.source.append(DATA)
        self.assertEqual(client.body(), DATA[:4])
        self.assert_released()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_failure_inside_write(self) -> None:
        """
        A source failing from inside a write aborts without sending more.
        """
        client = get(self.site)
        client.transport.on_write = lambda data: self.source.fail()
        self.source.append(DATA)
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(client.body(), DATA[:4])
        self.assertFalse(client.response().complete)
        self.assert_released()

    def test_stop_producing(self) -> None:
        """
        The transport's ``stopProducing`` releases everything without finishing.
        """
        client = get(self.site)
        self.source.append(DATA[:100])
        channel = client.transport.channel()
        assert channel is not None
        channel.stopProducing()
        self.assert_released()
        client.disconnect()
        self.source.finish()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_disconnect_while_paused(self) -> None:
        """
        A paused client going away is cleaned up and never resumed.
        """
        client = get(self.site, limit=100)
        self.source.append(DATA)
        client.disconnect()
        self.assert_released()
        self.source.finish()


class TailProducerStallTests(ProducerTestsMixin, SynchronousTestCase):
    """
    The stall timer.
    """

    def setUp(self) -> None:
        self.setup(self, length=len(DATA), stall_timeout=300.0)

    def test_paused_client_times_out(self) -> None:
        """
        A client that stops reading is dropped after the stall timeout.
        """
        client = get(self.site, limit=100)
        self.source.append(DATA)
        self.clock.advance(299)
        self.assertFalse(client.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(client.transport.disconnected)
        self.assertFalse(client.response().complete)
        self.assertTrue(self.producer.done)
        self.assertEqual(self.source.open_fds(), set())
        self.assertEqual(self.source.listeners, [])

    def test_stalled_download_times_out(self) -> None:
        """
        A response waiting for a download that makes no progress is dropped after the timeout.
        """
        client = get(self.site)
        self.source.append(DATA[:10])
        self.clock.advance(300)
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(self.source.listeners, [])

    def test_progress_resets_timer(self) -> None:
        """
        Every write restarts the stall timeout.
        """
        client = get(self.site)
        for i in range(5):
            self.clock.advance(250)
            self.source.append(DATA[i * 10 : i * 10 + 10])
        self.assertFalse(client.transport.disconnected)
        self.clock.advance(299)
        self.assertFalse(client.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(client.transport.disconnected)

    def test_slow_reader_keeps_going(self) -> None:
        """
        A slow but steady reader is never timed out.
        """
        self.source.append(DATA)
        self.source.finish()
        client = get(self.site, limit=100)
        pump(
            clock=self.clock,
            advance=200,
            step=client.transport.drain,
            until=lambda: self.producer.done,
            what="the response to finish",
        )
        self.assertEqual(client.body(), DATA)
        self.assertTrue(client.response().complete)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_cancelled_on_finish(self) -> None:
        """
        Finishing cancels the stall timer.
        """
        client = get(self.site)
        self.source.append(DATA)
        self.source.finish()
        self.assertTrue(client.response().complete)
        self.assertEqual(self.clock.getDelayedCalls(), [])

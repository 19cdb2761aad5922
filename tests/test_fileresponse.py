"""
Tests for `proxypypi.web.fileresponse`.

Requests go through a real `twisted.web.server.Site` over a
`StringTransport` (`tests.support.wire`), so what is checked
is what a client would receive on the wire.
"""

from __future__ import annotations

import errno

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from proxypypi.web.fileresponse import IMMUTABLE, respond_with_file
from tests.support.producers import FakeFileSource, make_source
from tests.support.wire import Client, Response, get, make_site

DATA = bytes(range(256)) * 5
SIZE = len(DATA)
SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ETAG = f'"{SHA}"'.encode()


class FileResource(Resource):
    """
    Answers GET and HEAD with ``respond_with_file``, as the real file
    resources do.

    :ivar deferred: When true, answer later from `answer`, the way
        ``render_async`` does after awaiting something: bytes are written and
        the request finished by hand rather than by twisted.web's ``render``.
    """

    isLeaf = True

    def __init__(self, source: FakeFileSource, clock: Clock, **kwargs: object) -> None:
        super().__init__()
        self.source = source
        self.clock = clock
        self.kwargs: dict[str, object] = {"etag": SHA, **kwargs}
        self.deferred = False
        self.waiting: list[Request] = []
        self.results: list[bytes | int] = []

    def render_GET(self, request: Request) -> bytes | int:
        if self.deferred:
            self.waiting.append(request)
            return NOT_DONE_YET
        return self._respond(request)

    def render_HEAD(self, request: Request) -> bytes | int:
        return self.render_GET(request)

    def answer(self) -> None:
        for request in self.waiting:
            result = self._respond(request)
            if result != NOT_DONE_YET:
                assert isinstance(result, bytes)
                request.write(result)
                request.finish()
        self.waiting = []

    def _respond(self, request: Request) -> bytes | int:
        result = respond_with_file(
            request,
            self.source,
            clock=self.clock,
            **self.kwargs,  # type: ignore[arg-type]
        )
        self.results.append(result)
        return result


class FileResponseTestsMixin:
    """
    Set-up shared by the tests below.
    """

    def setup(self, testcase: SynchronousTestCase, expected_size: int | None = None) -> None:
        self.clock = Clock()
        self.source = make_source(testcase, expected_size)
        self.resource = FileResource(self.source, self.clock)
        self.site = make_site(self.resource, self.clock)

    def complete(self) -> None:
        self.source.append(DATA)
        self.source.finish()

    def request(self, headers: dict[bytes, bytes] | None = None, **kwargs: object) -> Client:
        return get(self.site, headers=headers, **kwargs)  # type: ignore[arg-type]

    def response(self, headers: dict[bytes, bytes] | None = None, **kwargs: object) -> Response:
        return self.request(headers, **kwargs).response()


class CompleteFileTests(FileResponseTestsMixin, SynchronousTestCase):
    """
    Whole-file responses for a file already on disk.
    """

    def setUp(self) -> None:
        self.setup(self)
        self.complete()

    def test_full_response(self) -> None:
        """
        A plain GET gets the whole file with every file header.
        """
        response = self.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)
        self.assertTrue(response.complete)
        self.assertEqual(response.header(b"content-length"), b"%d" % (SIZE,))
        self.assertEqual(response.header(b"accept-ranges"), b"bytes")
        self.assertEqual(response.header(b"etag"), ETAG)
        self.assertEqual(response.header(b"cache-control"), IMMUTABLE.encode())
        self.assertEqual(response.header(b"content-type"), b"application/octet-stream")
        self.assertIsNone(response.header(b"content-range"))
        self.assertIsNone(response.header(b"transfer-encoding"))

    def test_never_encoded(self) -> None:
        """
        A client accepting gzip still gets the bytes as stored, without Content-Encoding.
        """
        response = self.response({b"Accept-Encoding": b"gzip, deflate, zstd"})
        self.assertIsNone(response.header(b"content-encoding"))
        self.assertEqual(response.body, DATA)

    def test_quoted_etag_kept(self) -> None:
        """
        An ETag given already quoted is sent as is.
        """
        self.resource.kwargs["etag"] = f'"{SHA}"'
        self.assertEqual(self.response().header(b"etag"), ETAG)

    def test_no_etag(self) -> None:
        """
        Without an ETag none is sent, and If-Range never matches.
        """
        self.resource.kwargs["etag"] = None
        response = self.response({b"Range": b"bytes=0-1", b"If-Range": ETAG})
        self.assertIsNone(response.header(b"etag"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)

    def test_invalid_etag(self) -> None:
        """
        An ETag that cannot be sent is a programming error, reported as such.
        """
        self.resource.kwargs["etag"] = 'W/"weak"'
        self.assertEqual(self.response().status, 500)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_content_type_and_cache_control(self) -> None:
        """
        The caller chooses the Content-Type and may override the Cache-Control.
        """
        self.resource.kwargs.update(
            content_type="text/plain; charset=utf-8", cache_control="max-age=600, public"
        )
        response = self.response()
        self.assertEqual(response.header(b"content-type"), b"text/plain; charset=utf-8")
        self.assertEqual(response.header(b"cache-control"), b"max-age=600, public")

    def test_empty_file(self) -> None:
        """
        An empty file is a complete 200 with Content-Length 0 and its Content-Type.
        """
        self.source = make_source(self)
        self.source.finish()
        self.resource.source = self.source
        response = self.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-length"), b"0")
        self.assertEqual(response.header(b"content-type"), b"application/octet-stream")
        self.assertTrue(response.complete)
        self.assertEqual(self.source.open_fds(), set())

    def test_keep_alive(self) -> None:
        """
        Two requests in a row on one connection both get the file.
        """
        client = self.request()
        client.transport.clear()
        client.send(b"GET /f HTTP/1.1\r\nHost: proxy.test\r\nRange: bytes=-3\r\n\r\n")
        self.assertEqual(client.response().status, 206)
        self.assertEqual(client.body(), DATA[-3:])
        self.assertFalse(client.transport.disconnecting)

    def test_resources_released(self) -> None:
        """
        After the response, no descriptor is open and no timer is pending.
        """
        self.response()
        self.assertEqual(self.source.open_fds(), set())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HeadTests(FileResponseTestsMixin, SynchronousTestCase):
    """
    HEAD: the GET headers, at once, with no body.
    """

    def test_complete_file(self) -> None:
        """
        HEAD on a complete file gives its real Content-Length and the file headers, with no body.
        """
        self.setup(self)
        self.complete()
        client = self.request(method=b"HEAD")
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-length"), b"%d" % (SIZE,))
        self.assertEqual(response.header(b"accept-ranges"), b"bytes")
        self.assertEqual(response.header(b"etag"), ETAG)
        self.assertEqual(response.header(b"content-type"), b"application/octet-stream")
        self.assertEqual(response.header(b"cache-control"), IMMUTABLE.encode())
        self.assertIsNone(response.header(b"transfer-encoding"))
        self.assertEqual(response.body, b"")
        self.assertTrue(client.transport.value().endswith(b"\r\n\r\n"))
        self.assertEqual(self.resource.results, [b""])
        self.assertEqual(self.source.opened, [])

    def test_growing_file_does_not_wait(self) -> None:
        """
        HEAD during a download answers at once with the expected size, without listening.
        """
        self.setup(self, expected_size=SIZE)
        self.source.append(DATA[:10])
        client = self.request(method=b"HEAD")
        self.assertEqual(client.response().header(b"content-length"), b"%d" % (SIZE,))
        self.assertEqual(self.source.opened, [])
        self.assertEqual(self.source.listeners, [])
        # The connection is ready for the next request at once.
        client.transport.clear()
        client.send(b"HEAD /f HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        self.assertEqual(client.response().status, 200)

    def test_unknown_size(self) -> None:
        """
        HEAD on a download of unknown size sends neither a length nor chunked framing.
        """
        self.setup(self)
        response = self.response(method=b"HEAD")
        self.assertEqual(response.status, 200)
        self.assertIsNone(response.header(b"content-length"))
        self.assertIsNone(response.header(b"transfer-encoding"))

    def test_range_ignored(self) -> None:
        """
        HEAD ignores Range, as RFC 9110 requires for every method but GET.
        """
        self.setup(self)
        self.complete()
        response = self.response({b"Range": b"bytes=0-9"}, method=b"HEAD")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-length"), b"%d" % (SIZE,))
        self.assertIsNone(response.header(b"content-range"))

    def test_if_none_match(self) -> None:
        """
        HEAD with a matching If-None-Match gets 304.
        """
        self.setup(self)
        self.complete()
        response = self.response({b"If-None-Match": ETAG}, method=b"HEAD")
        self.assertEqual(response.status, 304)


class RangeTests(FileResponseTestsMixin, SynchronousTestCase):
    """
    Byte ranges on a complete file.
    """

    def setUp(self) -> None:
        self.setup(self)
        self.complete()

    def assert_partial(self, response: Response, start: int, end: int) -> None:
        self.assertEqual(response.status, 206)
        self.assertEqual(response.header(b"content-range"), b"bytes %d-%d/%d" % (start, end, SIZE))
        self.assertEqual(response.header(b"content-length"), b"%d" % (end - start + 1,))
        self.assertEqual(response.header(b"etag"), ETAG)
        self.assertEqual(response.header(b"accept-ranges"), b"bytes")
        self.assertEqual(response.body, DATA[start : end + 1])
        self.assertTrue(response.complete)

    def test_closed_range(self) -> None:
        """
        ``bytes=a-b`` gets a 206 with exactly those bytes.
        """
        self.assert_partial(self.response({b"Range": b"bytes=2-5"}), 2, 5)

    def test_clamped_range(self) -> None:
        """
        A range past the end is clamped, as uv asks.
        """
        self.assert_partial(self.response({b"Range": b"bytes=0-999999"}), 0, SIZE - 1)

    def test_suffix_range(self) -> None:
        """
        ``bytes=-N`` gets the last N bytes.
        """
        self.assert_partial(self.response({b"Range": b"bytes=-100"}), SIZE - 100, SIZE - 1)

    def test_suffix_longer_than_file(self) -> None:
        """
        Poetry's ``bytes=-10000`` on a smaller file gets the whole file as a 206.
        """
        self.assert_partial(self.response({b"Range": b"bytes=-10000"}), 0, SIZE - 1)

    def test_open_range(self) -> None:
        """
        ``bytes=N-`` gets everything from N, as pip and uv resume.
        """
        self.assert_partial(self.response({b"Range": b"bytes=1000-"}), 1000, SIZE - 1)

    def test_start_past_end(self) -> None:
        """
        A start at the end gets 416 with the size, no body, and the file is not opened.
        """
        response = self.response({b"Range": b"bytes=%d-" % (SIZE,)})
        self.assertEqual(response.status, 416)
        self.assertEqual(response.header(b"content-range"), b"bytes */%d" % (SIZE,))
        self.assertEqual(response.header(b"content-length"), b"0")
        self.assertEqual(response.body, b"")
        self.assertIsNone(response.header(b"cache-control"))
        self.assertEqual(self.source.opened, [])

    def test_empty_suffix(self) -> None:
        """
        ``bytes=-0`` gets 416.
        """
        self.assertEqual(self.response({b"Range": b"bytes=-0"}).status, 416)

    def test_multiple_ranges(self) -> None:
        """
        Several ranges get the whole file as a 200.
        """
        response = self.response({b"Range": b"bytes=0-1,5-6"})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)

    def test_malformed_range(self) -> None:
        """
        A malformed Range is ignored.
        """
        response = self.response({b"Range": b"bytes=5-2"})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)

    def test_if_range_matches(self) -> None:
        """
        A Range with an If-Range naming the file's ETag gets the part, as pip resumes.
        """
        response = self.response({b"Range": b"bytes=1000-", b"If-Range": ETAG})
        self.assert_partial(response, 1000, SIZE - 1)

    def test_if_range_other_etag(self) -> None:
        """
        A Range with an If-Range naming another ETag gets the whole file.
        """
        response = self.response({b"Range": b"bytes=1000-", b"If-Range": b'"other"'})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)
        self.assertIsNone(response.header(b"content-range"))

    def test_if_range_date(self) -> None:
        """
        A Range with an If-Range date gets the whole file, since only ETags validate.
        """
        response = self.response(
            {b"Range": b"bytes=1000-", b"If-Range": b"Wed, 21 Oct 2015 07:28:00 GMT"}
        )
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)

    def test_if_range_mismatch_not_416(self) -> None:
        """
        An unsatisfiable Range is ignored, not refused, when If-Range does not match.
        """
        response = self.response({b"Range": b"bytes=99999-", b"If-Range": b'"other"'})
        self.assertEqual(response.status, 200)


class ConditionalTests(FileResponseTestsMixin, SynchronousTestCase):
    """
    If-None-Match.
    """

    def setUp(self) -> None:
        self.setup(self)
        self.complete()

    def test_not_modified(self) -> None:
        """
        A matching If-None-Match gets 304 with the validators, no body and no Content-Length.
        """
        client = self.request({b"If-None-Match": b'"x", ' + ETAG})
        response = client.response()
        self.assertEqual(response.status, 304)
        self.assertEqual(response.header(b"etag"), ETAG)
        self.assertEqual(response.header(b"cache-control"), IMMUTABLE.encode())
        self.assertIsNone(response.header(b"content-length"))
        self.assertIsNone(response.header(b"transfer-encoding"))
        self.assertTrue(client.transport.value().endswith(b"\r\n\r\n"))
        self.assertEqual(response.body, b"")
        self.assertEqual(self.source.opened, [])

    def test_not_modified_beats_range(self) -> None:
        """
        If-None-Match is evaluated before Range.
        """
        self.assertEqual(
            self.response({b"If-None-Match": ETAG, b"Range": b"bytes=0-1"}).status, 304
        )

    def test_modified(self) -> None:
        """
        A non-matching If-None-Match gets the file.
        """
        response = self.response({b"If-None-Match": b'"other"'})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)


class GrowingFileTests(FileResponseTestsMixin, SynchronousTestCase):
    """
    Responses for a file still being downloaded.
    """

    def test_streams_with_length(self) -> None:
        """
        With the size known, the body carries Content-Length and follows the download.
        """
        self.setup(self, expected_size=SIZE)
        client = self.request()
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-length"), b"%d" % (SIZE,))
        self.assertEqual(response.body, b"")
        self.source.append(DATA[:500])
        self.assertEqual(client.body(), DATA[:500])
        self.source.append(DATA[500:])
        self.source.finish()
        self.assertEqual(client.body(), DATA)
        self.assertTrue(client.response().complete)
        self.assertEqual(self.source.open_fds(), set())

    def test_finishes_at_expected_size(self) -> None:
        """
        The response ends once the promised bytes are sent, even before the source is complete.
        """
        self.setup(self, expected_size=SIZE)
        client = self.request()
        self.source.append(DATA)
        self.assertTrue(client.response().complete)
        self.assertEqual(self.source.listeners, [])

    def test_unknown_size_goes_chunked(self) -> None:
        """
        With the size unknown, the body is chunked and ends when the download completes.
        """
        self.setup(self)
        client = self.request()
        self.source.append(DATA[:100])
        response = client.response()
        self.assertEqual(response.header(b"transfer-encoding"), b"chunked")
        self.assertIsNone(response.header(b"content-length"))
        self.assertEqual(response.body, DATA[:100])
        self.assertFalse(response.complete)
        self.source.append(DATA[100:])
        self.source.finish()
        self.assertEqual(client.body(), DATA)
        self.assertTrue(client.response().complete)

    def test_unknown_size_http10(self) -> None:
        """
        An HTTP/1.0 client gets the body unframed, ended by closing the connection.
        """
        self.setup(self)
        client = self.request(version=b"HTTP/1.0")
        self.source.append(DATA)
        self.source.finish()
        self.assertIsNone(client.response().header(b"transfer-encoding"))
        self.assertEqual(client.body(), DATA)
        self.assertTrue(client.transport.disconnecting)
        self.assertFalse(client.transport.disconnected)

    def test_range_waits_for_bytes(self) -> None:
        """
        A range beyond what is on disk gets 206 at once and its bytes as they arrive.
        """
        self.setup(self, expected_size=SIZE)
        self.source.append(DATA[:100])
        client = self.request({b"Range": b"bytes=200-299"})
        response = client.response()
        self.assertEqual(response.status, 206)
        self.assertEqual(response.header(b"content-range"), b"bytes 200-299/%d" % (SIZE,))
        self.assertEqual(response.body, b"")
        self.source.append(DATA[100:250])
        self.assertEqual(client.body(), DATA[200:250])
        self.source.append(DATA[250:])
        self.assertEqual(client.body(), DATA[200:300])
        self.assertTrue(client.response().complete)

    def test_resume_while_downloading(self) -> None:
        """
        A resume with If-Range on a growing file gets the rest as a 206.
        """
        self.setup(self, expected_size=SIZE)
        self.source.append(DATA[:600])
        client = self.request({b"Range": b"bytes=500-", b"If-Range": ETAG})
        self.assertEqual(client.response().status, 206)
        self.assertEqual(client.body(), DATA[500:600])
        self.source.append(DATA[600:])
        self.source.finish()
        self.assertEqual(client.body(), DATA[500:])
        self.assertTrue(client.response().complete)

    def test_range_past_expected_size(self) -> None:
        """
        A start past the expected size gets 416 even while downloading.
        """
        self.setup(self, expected_size=SIZE)
        response = self.response({b"Range": b"bytes=%d-" % (SIZE + 5,)})
        self.assertEqual(response.status, 416)
        self.assertEqual(response.header(b"content-range"), b"bytes */%d" % (SIZE,))

    def test_range_unknown_size(self) -> None:
        """
        With the size unknown, a Range gets the whole file as a 200.
        """
        self.setup(self)
        client = self.request({b"Range": b"bytes=-10"})
        self.source.append(DATA)
        self.source.finish()
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, DATA)

    def test_late_joiner(self) -> None:
        """
        A second client mid-download gets the whole file from byte 0.
        """
        self.setup(self, expected_size=SIZE)
        first = self.request()
        self.source.append(DATA[:700])
        second = self.request()
        self.assertEqual(second.body(), DATA[:700])
        self.source.append(DATA[700:])
        self.source.finish()
        self.assertEqual(first.body(), DATA)
        self.assertEqual(second.body(), DATA)


class FailureTests(FileResponseTestsMixin, SynchronousTestCase):
    """
    Failures before and during a response.
    """

    def test_failed_source(self) -> None:
        """
        A source that already failed gets a 502 that no cache keeps.
        """
        self.setup(self, expected_size=SIZE)
        self.source.fail()
        response = self.response()
        self.assertEqual(response.status, 502)
        self.assertEqual(response.header(b"cache-control"), b"no-store")
        self.assertIsNone(response.header(b"etag"))
        self.assertTrue(response.complete)

    def test_open_failure(self) -> None:
        """
        A file that cannot be opened gets a 503 without the file's headers.
        """
        self.setup(self)
        self.complete()
        self.source.open_error = FileNotFoundError(errno.ENOENT, "No such file or directory")
        response = self.response({b"Range": b"bytes=0-9"})
        self.assertEqual(response.status, 503)
        self.assertEqual(response.header(b"cache-control"), b"no-store")
        self.assertIsNone(response.header(b"etag"))
        self.assertIsNone(response.header(b"content-range"))
        self.assertIsNone(response.header(b"accept-ranges"))
        self.assertIn(b"No such file", response.body)
        self.assertTrue(response.complete)
        self.assertEqual(len(self.flushLoggedErrors(FileNotFoundError)), 1)

    def test_failure_midstream(self) -> None:
        """
        A download failing mid-response drops the connection, leaving the body visibly short.
        """
        self.setup(self, expected_size=SIZE)
        client = self.request()
        self.source.append(DATA[:300])
        self.source.fail()
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(client.body(), DATA[:300])
        self.assertFalse(client.response().complete)
        self.assertEqual(self.source.open_fds(), set())

    def test_client_disconnect(self) -> None:
        """
        A client leaving mid-download is forgotten without errors; the download goes on.
        """
        self.setup(self, expected_size=SIZE)
        client = self.request()
        self.source.append(DATA[:300])
        client.disconnect()
        self.assertEqual(self.source.listeners, [])
        self.assertEqual(self.source.open_fds(), set())
        self.source.append(DATA[300:])
        self.source.finish()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_stall_timeout(self) -> None:
        """
        The stall timeout given is the one applied.
        """
        self.setup(self, expected_size=SIZE)
        self.resource.kwargs["stall_timeout"] = 30.0
        client = self.request()
        self.clock.advance(29)
        self.assertFalse(client.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(self.source.listeners, [])


class DeferredAnswerTests(FileResponseTestsMixin, SynchronousTestCase):
    """
    Answering after the render call returned, as ``render_async`` does:
    returned bytes are written and the request finished by hand.
    """

    def setUp(self) -> None:
        self.setup(self)
        self.complete()
        self.resource.deferred = True

    def answer(self, headers: dict[bytes, bytes] | None = None, **kwargs: object) -> Response:
        client = self.request(headers, **kwargs)
        self.assertEqual(client.transport.value(), b"")
        self.resource.answer()
        return client.response()

    def test_get(self) -> None:
        """
        The body streams as from a direct render.
        """
        response = self.answer()
        self.assertEqual(response.body, DATA)
        self.assertTrue(response.complete)

    def test_head(self) -> None:
        """
        HEAD keeps the file's Content-Length.
        """
        response = self.answer(method=b"HEAD")
        self.assertEqual(response.header(b"content-length"), b"%d" % (SIZE,))
        self.assertEqual(response.body, b"")

    def test_not_modified(self) -> None:
        """
        304 is finished once, without a Content-Length.
        """
        response = self.answer({b"If-None-Match": ETAG})
        self.assertEqual(response.status, 304)
        self.assertIsNone(response.header(b"content-length"))

    def test_unsatisfiable(self) -> None:
        """
        416 goes out with Content-Length 0 rather than chunked.
        """
        response = self.answer({b"Range": b"bytes=999999-"})
        self.assertEqual(response.status, 416)
        self.assertEqual(response.header(b"content-length"), b"0")
        self.assertIsNone(response.header(b"transfer-encoding"))
        self.assertTrue(response.complete)

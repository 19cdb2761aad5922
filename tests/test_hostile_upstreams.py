"""
Issue 14, items 11 to 18: what a hostile or broken upstream tries, each
attack replayed against the parts it aims at, and refused.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import PotentialDataLoss

from proxypypi.cache.complete import CompleteFile
from proxypypi.cache.download import ABANDON_AFTER, Abandoned, Download
from proxypypi.cache.downloads import Manager
from proxypypi.cache.storage import FileKey, Storage
from proxypypi.cache.usage import SizeAccounting
from proxypypi.ops.logs import event_as_text
from proxypypi.simple.parse import (
    MAX_JSON_TOKENS,
    MAX_PAGE_FILES,
    PageParseError,
    parse_project_page,
)
from proxypypi.testing import FakeIndex, make_wheel
from proxypypi.text import printable
from proxypypi.upstream.budget import Overloaded, PageBudget
from proxypypi.upstream.fetch import Body, BodyReceiver, BodyTooLarge
from proxypypi.upstream.origin import Origin
from proxypypi.upstream.pages import UpstreamUnavailable, decode_and_parse
from proxypypi.web.errors import error
from tests.support.disk import HeldRunner, sync_run
from tests.support.hostile import HostileMember, Scripted
from tests.support.pumping import pump

NAME: Any = "proto-alpha"

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
WHEEL = "proto_alpha-1.0-py3-none-any.whl"


def json_page(files: list[dict[str, object]] | None = None) -> bytes:
    if files is None:
        files = [{"filename": WHEEL, "url": f"/files/{WHEEL}"}]
    return json.dumps(
        {"meta": {"api-version": "1.0"}, "name": "proto-alpha", "files": files}
    ).encode()


class SerialTests(SynchronousTestCase):
    """
    Item 17: an unusable ``X-PyPI-Last-Serial`` is ignored, not fatal.
    """

    def test_unusable_serials(self) -> None:
        for serial in ("\u00b2", "9" * 5000, "-1", "", " 12 "):
            member = HostileMember(
                Scripted(
                    200, {"content-type": JSON_TYPE, "x-pypi-last-serial": serial}, json_page()
                )
            )
            result = self.successResultOf(member.fetch())
            assert result.page is not None
            self.assertEqual(len(result.page.files), 1, serial[:10])
            self.assertEqual(result.page.last_serial, 12 if serial == " 12 " else None)


class ControlCharacterTests(SynchronousTestCase):
    """
    Item 16: escape sequences from upstream never reach a person raw.
    """

    def test_printable(self) -> None:
        self.assertEqual(printable("a\x1b[2Jb\r\u202e"), "a\\x1b[2Jb\\r\\u202e")
        self.assertEqual(printable("line\n\tnext", keep_newlines=True), "line\n\tnext")
        self.assertEqual(printable("caf\u00e9 ok"), "caf\u00e9 ok")

    def test_error_body(self) -> None:
        from twisted.web.test.requesthelper import DummyRequest

        body = error(DummyRequest([b""]), 502, "cannot fetch http://x/\x1b[31mred\n")
        self.assertEqual(body, b"cannot fetch http://x/\\x1b[31mred\n")

    def test_text_log(self) -> None:
        line = event_as_text(
            {"log_format": "upstream said {reason}", "reason": "\x1b]0;pwned\x07\rFAKE"},
            stamp=lambda _: "T",
        )
        self.assertNotIn("\x1b", line)
        self.assertNotIn("\r", line)
        self.assertIn("\\x1b]0;pwned\\x07\\rFAKE", line)

    def test_health_last_error(self) -> None:
        member = HostileMember(Scripted(500, {}, b""))
        self.failureResultOf(member.fetch())
        health = member.pool.members()[0].health
        health.last_error = "HTTP 500 for http://h/\x1b[2J"
        report = member.pool.health_report()
        self.assertEqual(report[0]["last-error"], "HTTP 500 for http://h/\\x1b[2J")


class SymlinkTests(SynchronousTestCase):
    """
    Item 18: a link planted in ``files/`` is not a stored file.
    """

    def setUp(self) -> None:
        self.root = self.mktemp()
        os.makedirs(os.path.join(self.root, "files", "real"))
        self.secret = os.path.join(self.root, "secret")
        with open(self.secret, "wb") as f:
            f.write(b"not yours")

    def test_linked_file(self) -> None:
        path = os.path.join(self.root, "files", "real", WHEEL)
        os.symlink(self.secret, path)
        self.assertIsNone(CompleteFile.at(path))

    def test_linked_directory(self) -> None:
        os.makedirs(os.path.join(self.root, "elsewhere"))
        with open(os.path.join(self.root, "elsewhere", WHEEL), "wb") as f:
            f.write(b"not yours")
        os.symlink(
            os.path.join(self.root, "elsewhere"), os.path.join(self.root, "files", "proto-alpha")
        )
        self.assertIsNone(CompleteFile.at(os.path.join(self.root, "files", "proto-alpha", WHEEL)))

    def test_link_swapped_in_after_the_look(self) -> None:
        path = os.path.join(self.root, "files", "real", WHEEL)
        with open(path, "wb") as f:
            f.write(b"not yours")
        stored = CompleteFile.at(path)
        assert stored is not None
        os.unlink(path)
        os.symlink(self.secret, path)
        self.assertRaises(OSError, stored.open)

    def test_regular_file(self) -> None:
        path = os.path.join(self.root, "files", "real", WHEEL)
        with open(path, "wb") as f:
            f.write(b"wheel")
        stored = CompleteFile.at(path)
        assert stored is not None
        fd = stored.open()
        self.assertEqual(os.read(fd, 10), b"wheel")
        os.close(fd)


class PageBudgetTests(SynchronousTestCase):
    """
    Item 13: page bodies in flight share one memory budget.
    """

    def test_shares(self) -> None:
        budget = PageBudget(limit=100)
        first, second = budget.share(), budget.share()
        first.take(60)
        self.assertRaises(Overloaded, second.take, 50)
        second.take(40)
        first.release()
        # Alone, a fetch may pass the budget (up to its own page limit).
        second.take(500)
        self.assertEqual(budget.used, 540)
        second.release()
        self.assertEqual(budget.used, 0)

    def test_second_page_refused_while_the_first_is_held(self) -> None:
        """
        A page waiting to be parsed holds its bytes; another that would
        pass the budget is refused, without counting against the member.
        """
        page = html_page(extra=b"<!--" + b"x" * 60_000 + b"-->")
        runner = HeldRunner()
        member = HostileMember(
            Scripted(200, {"content-type": "text/html"}, page),
            parse_in=runner,
            thread_threshold=0,
            budget=PageBudget(limit=100_000),
        )
        first = member.start()
        self.assertNoResult(first)
        second = member.start()
        failure = self.failureResultOf(second, UpstreamUnavailable)
        self.assertIn("page fetches in flight hold", str(failure.value))
        self.assertEqual(member.pool.members()[0].health.consecutive_failures, 0)
        runner.run_all()
        self.assertEqual(len(self.successResultOf(first).page.files), 1)  # type: ignore[union-attr]
        self.assertEqual(member.fetcher.budget.used, 0)


class ParseBoundTests(SynchronousTestCase):
    """
    Item 13: a page whose parse would cost far more than its bytes (millions
    of anchors, of tiny JSON values) is refused as it is read.
    """

    def test_html_anchor_flood(self) -> None:
        body = b"<html><body>" + b"<a>x</a>" * (MAX_PAGE_FILES + 1) + b"</body></html>"
        with self.assertRaises(PageParseError) as e:
            parse_project_page(body, "text/html", "http://h/simple/p/", NAME)
        self.assertIn("more than the 100000 accepted", str(e.exception))

    def test_json_value_flood(self) -> None:
        body = b'{"name": "proto-alpha", "files": [], "x": [' + b"[]," * MAX_JSON_TOKENS + b"[]]}"
        with self.assertRaises(PageParseError) as e:
            parse_project_page(body, JSON_TYPE, "http://h/simple/p/", NAME)
        self.assertIn("JSON values, more than", str(e.exception))


class UnframedBodyTests(SynchronousTestCase):
    """
    Item 14: a body without a length that the connection ends may be cut
    short; it counts only when it proves itself whole.
    """

    def test_receiver_notes_it(self) -> None:
        received: list[bytes] = []
        receiver = BodyReceiver(received.append, Clock(), 10)
        receiver.connectionLost(Failure(PotentialDataLoss()))
        self.successResultOf(receiver.done)
        self.assertTrue(receiver.unframed)

    def test_html_needs_its_closing_tag(self) -> None:
        whole = html_page()
        parse_project_page(whole, "text/html", "http://h/simple/p/", NAME, framed=False)
        cut = whole[: whole.index(b"</body>")]
        with self.assertRaises(PageParseError) as e:
            parse_project_page(cut, "text/html", "http://h/simple/p/", NAME, framed=False)
        self.assertIn("may be cut short", str(e.exception))
        # With a length, the same body is what the upstream meant to send.
        parse_project_page(cut, "text/html", "http://h/simple/p/", NAME)


def html_page(extra: bytes = b"") -> bytes:
    anchor = f'<a href="/files/{WHEEL}">{WHEEL}</a>'.encode()
    return b"<html><body>" + anchor + extra + b"</body></html>\n<!--SERIAL 3-->\n"


class FileBoundTests(SynchronousTestCase):
    """
    Item 15: files are bounded in size, and a download nobody reads that
    crawls is dropped.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.index = FakeIndex(self.clock, chunk_size=1000, throttle=1000)
        self.dist = make_wheel("big", "1.0", payload_size=200_000)
        self.index.add(self.dist)
        self.agent = RequestTraversalAgent(self.index.resource())
        self.storage = Storage(self.mktemp(), sync_run)
        self.storage.prepare()
        self.manager = Manager(self.storage, self.clock, SizeAccounting(self.storage, self.clock))

    def start(self, limit: int | None = None) -> Download:
        return self.manager.get(
            FileKey("big", self.dist.filename),
            [Origin("http://upstream.example/files/" + self.dist.filename, self.agent)],
            {},
            None,
            limit=limit,
        )

    def run_until_done(self, download: Download) -> None:
        pump(self.agent, clock=self.clock, advance=1.0, until=download.when_done(), what="the end")

    def test_file_over_the_limit(self) -> None:
        download = self.start(limit=100_000)
        self.run_until_done(download)
        failure = download.failure()
        assert failure is not None
        self.assertIsInstance(failure.value, BodyTooLarge)
        self.assertIn("over the 100000 accepted", str(failure.value))
        self.assertEqual(os.listdir(self.storage.tmp_dir), [])

    def test_slow_download_nobody_reads(self) -> None:
        download = self.start()
        self.run_until_done(download)
        failure = download.failure()
        assert failure is not None
        self.assertIsInstance(failure.value, Abandoned)
        self.assertGreaterEqual(self.clock.seconds(), ABANDON_AFTER)
        self.assertLess(self.clock.seconds(), ABANDON_AFTER + 5)
        self.assertEqual(os.listdir(self.storage.tmp_dir), [])

    def test_slow_download_a_client_reads_goes_on(self) -> None:
        download = self.start()
        listener = Listening()
        download.add_listener(listener)
        pump(self.agent, clock=self.clock, advance=1.0, until=lambda: self.clock.seconds() > 60,
             what="a minute")  # fmt: skip
        self.assertIsNone(download.failure())
        download.remove_listener(listener)
        self.run_until_done(download)
        failure = download.failure()
        assert failure is not None
        self.assertIsInstance(failure.value, Abandoned)


class Listening:
    def data_available(self) -> None:
        pass

    def source_failed(self, reason: Failure) -> None:
        pass


class RefusedPageMemoryTests(SynchronousTestCase):
    """
    Item 13: a refused page's expansion is freed at once, not when the
    garbage collector next breaks its traceback's reference cycle.
    """

    def test_no_frame_holds_the_expansion(self) -> None:
        bomb = gzip.compress(b"\0" * 2_000_000)
        with self.assertRaises(BodyTooLarge) as e:
            decode_and_parse(Body(bomb, False), True, 100_000, "text/html", "http://h/", NAME, None)
        frames = []
        tb = e.exception.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        self.assertNotIn("gunzip", frames)
        self.assertIsNone(e.exception.__context__)

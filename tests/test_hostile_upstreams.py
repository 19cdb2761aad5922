"""
Issue 14, items 11 to 18: what a hostile or broken upstream tries, each
attack replayed against the parts it aims at, and refused.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.complete import CompleteFile
from proxypypi.ops.logs import event_as_text
from proxypypi.text import printable
from proxypypi.web.errors import error
from tests.support.hostile import HostileMember, Scripted

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

"""
Structured logging: JSON lines and the access event.
"""

from __future__ import annotations

import io
import json

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from proxypypi.ops.facts import RequestFacts
from proxypypi.ops.logs import (
    FLUSH_INTERVAL,
    LineObserver,
    LineWriter,
    event_as_json,
    event_as_text,
    log_access,
)
from proxypypi.service.tap import Options


class JSONLinesTests(SynchronousTestCase):
    def test_one_flat_object_per_line(self) -> None:
        """Each event is one JSON line with the message and its structured keys."""
        out = io.StringIO()
        log = Logger(
            namespace="test",
            observer=LineObserver(LineWriter(out), lambda e: event_as_json(e) + "\n"),
        )
        log.info("fetched {url} in {elapsed:.1f}s", url="http://mirror.example/x", elapsed=1.25)
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.failure("boom", Failure())
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        first, second = (json.loads(line) for line in lines)
        self.assertEqual(first["message"], "fetched http://mirror.example/x in 1.2s")
        self.assertEqual((first["url"], first["level"], first["namespace"]),
                         ("http://mirror.example/x", "info", "test"))  # fmt: skip
        self.assertIn("division", second["error"])
        self.assertNotIn("\x1e", out.getvalue())

    def test_text_lines(self) -> None:
        """The text format is twistd's: time, [namespace#level], message."""
        line = event_as_text(
            {"log_format": "hello {who}", "who": "world", "log_namespace": "ns",
             "log_level": LogLevel.info, "log_time": 0.0}
        )  # fmt: skip
        self.assertTrue(line.endswith(" [ns#info] hello world\n"), line)

    def test_batched_writes(self) -> None:
        """Routine lines wait for the flush interval; warnings go out at once."""
        out = io.StringIO()
        clock = Clock()
        writer = LineWriter(out, clock)
        writer.write("a\n")
        writer.write("b\n")
        self.assertEqual(out.getvalue(), "")
        clock.advance(FLUSH_INTERVAL)
        self.assertEqual(out.getvalue(), "a\nb\n")
        writer.write("c\n")
        writer.write("warning\n", urgent=True)
        self.assertEqual(out.getvalue(), "a\nb\nc\nwarning\n")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_levels(self) -> None:
        """Debug events are dropped; warnings and errors are written at once."""
        out = io.StringIO()
        clock = Clock()
        observer = LineObserver(LineWriter(out, clock), lambda e: e["log_format"] + "\n")
        observer({"log_format": "noise", "log_level": LogLevel.debug})
        observer({"log_format": "routine", "log_level": LogLevel.info})
        self.assertEqual(out.getvalue(), "")
        observer({"log_format": "trouble", "log_level": LogLevel.error})
        self.assertEqual(out.getvalue(), "routine\ntrouble\n")

    def test_option_selects_json_logger(self) -> None:
        """--log-format json makes twistd use the JSON observer."""

        class Parent(usage.Options):
            subCommands = [["proxypypi", None, Options, "proxypypi"]]

        parent = Parent()
        parent.parseOptions(
            ["proxypypi", "--upstream", "https://a.example/simple/", "--log-format", "json",
             "--storage", self.mktemp()]
        )  # fmt: skip
        self.assertEqual(parent["logger"], "proxypypi.ops.logs.json_observer")


class AccessEventTests(SynchronousTestCase):
    def test_access_event(self) -> None:
        """A finished request yields one event with method, path, status, bytes, cache."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        request = DummyRequest([b"files", b"x"])
        request.uri = b"/files/x/x-1.0.tar.gz"
        request.code = 200
        request.sentLength = 1234  # type: ignore[attr-defined]
        facts = RequestFacts()
        facts.note("hit", "https://mirror.example/simple/")
        log_access(request, facts, 0.5, True)
        access = [e for e in events if e.get("log_namespace") == "proxypypi.access"]
        self.assertEqual(len(access), 1)
        e = access[0]
        from twisted.logger import formatEvent

        from proxypypi.ops.logs import message

        self.assertEqual(message(e), formatEvent(e))
        self.assertEqual(
            (e["method"], e["path"], e["status"], e["bytes"], e["cache"], e["upstream"]),
            ("GET", "/files/x/x-1.0.tar.gz", 200, 1234, "hit", "https://mirror.example/simple/"),
        )
        # Built without Logger.emit: the keys every observer relies on.
        self.assertIs(e["log_level"], LogLevel.info)
        self.assertEqual(e["log_namespace"], "proxypypi.access")
        self.assertIsInstance(e["log_time"], float)

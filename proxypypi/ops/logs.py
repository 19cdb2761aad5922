# -*- test-case-name: tests.test_logs -*-
"""
Log observers and the per-request access event.

``--log-format json`` makes twistd write one JSON object per line (no
RFC 7464 record separators, which most log shippers do not expect).
"""

from __future__ import annotations

import atexit
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, cast

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorCore, IReactorTime
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    formatEvent,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer

from proxypypi.ops.facts import RequestFacts
from proxypypi.text import printable

ACCESS_NAMESPACE = "proxypypi.access"
ACCESS_FORMAT = "{method} {path} {status} {bytes} {duration:.3f}s{ending}"

#: How the access line of a response that did not reach its end ends: the
#: client left (or was cut off) first, whatever its status says.
CUT_SHORT = " cut short"
access_log = Logger(namespace=ACCESS_NAMESPACE)


def _plain(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def message(event: LogEvent) -> str:
    """
    The human-readable message of an event.  The access event, one per
    request, is formatted directly: the general formatter would cost a
    busy server a tenth of its time.
    """
    if event.get("log_namespace") == ACCESS_NAMESPACE and "duration" in event:
        e = event
        return (
            f"{e['method']} {e['path']} {e['status']} {e['bytes']} {e['duration']:.3f}s"
            f"{e['ending']}"
        )
    return formatEvent(event)


#: This process's place among the workers (``worker 1``), for every line
#: it logs; empty in a single process and in the supervisor.
@attrs.define
class _Tag:
    text: str = ""
    index: int | None = None


_worker = _Tag()


def set_worker(index: int) -> None:
    """
    Tag every line this process logs from now on as worker ``index``'s.
    """
    _worker.text = f"worker-{index} "
    _worker.index = index


def event_as_json(event: LogEvent) -> str:
    """
    One log event as a flat JSON object: time, level, namespace, the
    formatted message, the failure's one-line summary if any, and every
    structured key of the event (so ``status`` or ``upstream`` can be
    queried directly).
    """
    level = event.get("log_level")
    record: dict[str, object] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
        "level": getattr(level, "name", None),
        "namespace": event.get("log_namespace"),
        "message": message(event),
    }
    if _worker.index is not None:
        record["worker"] = _worker.index
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = failure.getErrorMessage()
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in record:
            record[key] = _plain(value)
    return json.dumps(record, default=str)


#: Seconds a logged line may wait in memory before it is written.
FLUSH_INTERVAL = 0.5

#: Bytes of buffered lines that trigger a write at once.
FLUSH_BYTES = 64 * 1024


@attrs.define(eq=False)
class LineWriter:
    """
    Log lines written in batches, as nginx buffers its access log: writing
    and flushing a file for every request would cost a busy index server a
    quarter of its time.  Warnings and errors are written at once; a crash
    loses at most ``FLUSH_INTERVAL`` seconds of routine lines.
    """

    out: IO[str]
    clock: IReactorTime | None = None
    _lines: list[str] = attrs.field(factory=list)
    _size: int = 0
    _timer: IDelayedCall | None = None

    def write(self, line: str, urgent: bool = False) -> None:
        self._lines.append(line)
        self._size += len(line)
        if urgent or self.clock is None or self._size >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = self.clock.callLater(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._lines:
            lines, self._lines, self._size = self._lines, [], 0
            self.out.write("".join(lines))
            self.out.flush()


@attrs.define(eq=False)
class _ClassicTime:
    """
    twistd's timestamp format, formatted once per second rather than once
    per event.
    """

    _second: int = -1
    _text: str = ""

    def __call__(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._text


_STAMP = _ClassicTime()


def event_as_text(event: LogEvent, stamp: Callable[[float], str] = _STAMP) -> str:
    """
    One log event as twistd's classic text line (plus a traceback, if any).
    """
    level = event.get("log_level")
    # Upstream URLs and reasons end up in messages: no escape sequence
    # reaches the operator's terminal.
    text = printable(message(event), keep_newlines=True)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{printable(failure.getTraceback(), keep_newlines=True)}".rstrip("\n")
    system = f"{_worker.text}{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
    text = text.replace("\n", "\n\t")
    return f"{stamp(event.get('log_time', 0.0))} [{system}] {text}\n"


#: Twisted's routine lines that say nothing to an operator: factories
#: starting and stopping (``Starting factory <... object at 0x...>``) and
#: ports opening and closing, which the service logs in words of its own
#: (``listening on HOST:PORT``).
_NOISE_FORMATS = frozenset(("Starting factory {factory!r}", "Stopping factory {factory!r}"))
_LEGACY_NOISE = re.compile(r"\S+ starting on \d+|\(\S+ Port \d+ Closed\)")


def is_noise(event: LogEvent) -> bool:
    """
    Whether an informational event is one of Twisted's routine lines.
    """
    if event.get("log_format") in _NOISE_FORMATS:
        return True
    text = event.get("log_text")
    return (
        event.get("log_namespace") == "log_legacy"
        and isinstance(text, str)
        and _LEGACY_NOISE.fullmatch(text) is not None
    )


#: Log levels by severity: debug is dropped, warn and above are urgent.
_RANK = {LogLevel.debug: 0, LogLevel.info: 1, LogLevel.warn: 2, LogLevel.error: 3,
         LogLevel.critical: 4}  # fmt: skip


@implementer(ILogObserver)
@attrs.define(eq=False)
class LineObserver:
    """
    Renders each event as one line for a `LineWriter`; Twisted's routine
    lines (`is_noise`) are left out.
    """

    writer: LineWriter
    render: Callable[[LogEvent], str]

    def __call__(self, event: LogEvent) -> None:
        # A dict lookup rather than LogLevel comparisons or a filtering
        # observer: this runs once per request.
        rank = _RANK.get(event.get("log_level"), 1)
        if rank >= 2 or (rank == 1 and not is_noise(event)):
            self.writer.write(self.render(event), urgent=rank >= 2)


#: Where the observers write; set from twistd's ``--logfile`` by the plugin.
_target: dict[str, str | None] = {"logfile": None}
#: The writer of this process's observer, once made.
_writers: list[LineWriter] = []


def relay_lines(text: str) -> None:
    """
    Write lines another process formatted (a worker's log) where this
    process's log goes, as they are.
    """
    if _writers:
        _writers[-1].write(text, urgent=True)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def use_logfile(path: str | None) -> None:
    """
    Make the observers write to ``path`` (``-`` or ``None``: standard output).
    """
    _target["logfile"] = path


def _observer(render: Callable[[LogEvent], str]) -> ILogObserver:
    from twisted.internet import reactor

    path = _target["logfile"]
    out: IO[str] = sys.stdout
    if path and path != "-":
        out = cast(IO[str], LogFile.fromFullPath(path))
    writer = LineWriter(out, cast(IReactorTime, reactor))
    _writers.append(writer)
    cast(IReactorCore, reactor).addSystemEventTrigger("after", "shutdown", writer.flush)
    atexit.register(writer.flush)
    return LineObserver(writer, render)


def json_observer() -> ILogObserver:
    """
    JSON lines, one flat object per event; named by ``twistd --logger``,
    which ``--log-format json`` sets.
    """
    return _observer(lambda e: event_as_json(e) + "\n")


def text_observer() -> ILogObserver:
    """
    twistd's classic text lines, written in batches; the default.
    """
    return _observer(event_as_text)


def log_access(request: Any, facts: RequestFacts, duration: float, completed: bool) -> None:
    """
    Emit the structured access event of one finished (or aborted) request,
    with what its response noted (``facts``).

    The event is the one ``access_log.info`` would build, handed to the
    logger's observer directly: ``Logger.emit`` first checks its level
    against every `LogLevel` (a generator), which made up a third of this
    call, once per request.
    """
    access_log.observer(
        {
            "log_logger": access_log,
            "log_level": LogLevel.info,
            "log_namespace": ACCESS_NAMESPACE,
            "log_source": None,
            "log_format": ACCESS_FORMAT,
            "log_time": time.time(),
            "method": request.method.decode("ascii", "replace"),
            "path": request.uri.decode("utf-8", "replace"),
            "status": request.code,
            "bytes": request.sentLength,
            "duration": duration,
            "cache": facts.cache,
            "upstream": facts.upstream,
            "completed": completed,
            "ending": "" if completed else CUT_SHORT,
            "client": getattr(request.getClientAddress(), "host", None),
        }
    )

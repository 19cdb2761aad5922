# -*- test-case-name: tests.test_logs -*-
"""
Log observers and the per-request access event.

``--log-format json`` makes twistd write one JSON object per line (no
RFC 7464 record separators, which most log shippers do not expect).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from zope.interface import implementer

access_log = Logger(namespace="proxypypi.access")

#: Attribute names a resource may set on a request for its access event.
CACHE_NOTE = "proxypypi_cache"
UPSTREAM_NOTE = "proxypypi_upstream"


def _plain(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


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
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = failure.getErrorMessage()
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in record:
            record[key] = _plain(value)
    return json.dumps(record, default=str)


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Writes each event as one line of JSON.
    """

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: LogEvent) -> None:
        self.out.write(event_as_json(event) + "\n")
        self.out.flush()


def json_observer() -> ILogObserver:
    """
    An observer writing JSON lines to standard output, info and above;
    named by ``twistd --logger`` (which ``--log-format json`` sets).
    """
    return FilteringLogObserver(
        JSONLinesObserver(sys.stdout),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)],
    )


def note(request: Any, cache: str | None = None, upstream: str | None = None) -> None:
    """
    Record for the access event whether a response came from the cache
    (``hit``, ``miss``, ``stale``, ``private``) and which upstream served it.
    """
    if cache is not None:
        setattr(request, CACHE_NOTE, cache)
    if upstream is not None:
        setattr(request, UPSTREAM_NOTE, upstream)


def log_access(request: Any, duration: float, completed: bool) -> None:
    """
    Emit the structured access event of one finished (or aborted) request.
    """
    access_log.info(
        "{method} {path} {status} {bytes} {duration:.3f}s",
        method=request.method.decode("ascii", "replace"),
        path=request.uri.decode("utf-8", "replace"),
        status=request.code,
        bytes=request.sentLength,
        duration=duration,
        cache=getattr(request, CACHE_NOTE, None),
        upstream=getattr(request, UPSTREAM_NOTE, None),
        completed=completed,
        client=getattr(request.getClientAddress(), "host", None),
    )

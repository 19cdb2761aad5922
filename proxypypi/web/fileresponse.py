# -*- test-case-name: tests.test_fileresponse -*-
"""
Answer a ``GET`` or ``HEAD`` with a file, complete or still downloading:
status, headers, conditional requests and byte ranges, then the body: read
at once when small and complete, else from a `SendfileProducer` or a
`TailProducer`.

One code path serves both complete and growing files, so both get the same
``ETag``, ``If-Range`` and ``Range`` handling, which ``twisted.web.static``
lacks (``STYLE.md`` §2.b.5).
"""

from __future__ import annotations

import errno
import os
from typing import cast

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

from proxypypi.interfaces import IFileSource
from proxypypi.upstream.fetch import describe_failure
from proxypypi.web.errors import error
from proxypypi.web.producers import DEFAULT_STALL_TIMEOUT, StreamingRequest, TailProducer
from proxypypi.web.ranges import (
    FullResponse,
    RangeResult,
    SingleRange,
    Unsatisfiable,
    format_etag,
    if_none_match_matches,
    if_range_matches,
    parse_range,
)
from proxypypi.web.sendfile import SendfileProducer, can_sendfile

__all__ = ["IMMUTABLE", "respond_with_file"]

#: ``Cache-Control`` for distribution files: their bytes never change under
#: a given name (``PROTOCOL.md`` §1.6 F7).
IMMUTABLE = "public, max-age=31536000, immutable"

_log = Logger()

#: Bodies up to this size, of complete files, are read and sent in one go:
#: a cached index page is mostly this small, and a producer (a timer, a
#: loop, a ``sendfile`` per chunk) costs more than the copy; the read is of
#: a file just written or served, from the page cache, microseconds.
SMALL_BODY = 256 * 1024



def respond_with_file(
    request: IRequest,
    source: IFileSource,
    *,
    etag: str | None,
    content_type: str = "application/octet-stream",
    clock: IReactorTime,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    cache_control: str = IMMUTABLE,
) -> bytes | int:
    """
    Answer ``request`` with ``source``; return the result straight from
    ``render_GET`` / ``render_HEAD``.

    - ``If-None-Match`` naming the ETag: ``304``, no body.
    - ``HEAD``: the ``GET`` headers for the whole file, at once, without
      opening the file or waiting for the download (``PROTOCOL.md`` §4 trap
      19).  ``Range`` is ignored, as RFC 9110 §14.2 requires for any method
      but ``GET``.
    - ``GET`` with one satisfiable ``Range`` (and a matching ``If-Range``, if
      any): ``206`` with ``Content-Range``; with a range starting at or past
      the end: ``416`` with ``Content-Range: bytes */size``.  Ranges are only
      honoured when the total size is known (see `proxypypi.web.ranges`).
    - Otherwise ``200`` with the whole file.

    The body streams from a `TailProducer`, following the download as it
    grows; ``Content-Length`` is always set when the size is known, so the
    body goes chunked only for a download of unknown length.  No
    ``Content-Encoding`` is ever added: clients check the hash of the bytes.

    :param request: The request to answer.
    :param source: The file.
    :param etag: The file's strong entity tag (e.g. its sha256), quoted or
        bare, or ``None`` for none.
    :param content_type: The ``Content-Type`` of the file.
    :param clock: Time source for the producer's stall timer.
    :param stall_timeout: Seconds a response may make no progress before it
        is aborted.
    :param cache_control: The ``Cache-Control`` of the file's responses.
    :returns: ``NOT_DONE_YET`` when the response was taken over (a body is
        streaming, or it already finished), or the body to send.
    :raises ValueError: when ``etag`` is not a valid strong entity tag.
    """
    quoted_etag = None if etag is None else format_etag(etag)
    failed = source.failure()
    if failed is not None:
        reason = describe_failure(failed)
        return error(request, 502, f"the transfer from upstream failed ({reason}); try again")
    method = request.method
    request.setHeader(b"accept-ranges", b"bytes")
    if quoted_etag is not None:
        request.setHeader(b"etag", quoted_etag.encode("latin-1"))
    if_none_match = _header(request, b"if-none-match")
    if if_none_match_matches(if_none_match, quoted_etag):
        return _not_modified(request, cache_control)

    size = source.expected_size()
    selected: RangeResult = parse_range(None, size)
    if method == b"GET" and if_range_matches(_header(request, b"if-range"), quoted_etag):
        selected = parse_range(_header(request, b"range"), size)

    if isinstance(selected, Unsatisfiable):
        request.setResponseCode(416)
        request.setHeader(b"content-range", selected.content_range())
        request.setHeader(b"content-length", b"0")
        return b""

    request.setHeader(b"cache-control", cache_control.encode("latin-1"))
    request.setHeader(b"content-type", content_type.encode("latin-1"))
    start, end = _span(selected, size)
    if isinstance(selected, SingleRange):
        request.setResponseCode(206)
        request.setHeader(b"content-range", selected.content_range())
    if end is not None:
        request.setHeader(b"content-length", b"%d" % (end - start,))
    if method == b"HEAD":
        # twisted.web keeps a Content-Length we set when the HEAD body is
        # empty (it only overwrites it for a non-empty body).
        return b""

    try:
        if end is not None and end - start <= SMALL_BODY and source.is_complete():
            return _read(source, start, end)
        if end is not None and can_sendfile(request, source):
            SendfileProducer(request, source, clock, start, end, stall_timeout).begin()
        else:
            TailProducer(
                cast(StreamingRequest, request),
                source,
                clock=clock,
                start=start,
                end=end,
                stall_timeout=stall_timeout,
            ).start()
    except OSError as e:
        _log.failure("cannot open {uri} for reading", uri=request.uri)
        return error(request, 503, f"cannot read the file: {e.strerror}; try again")
    return NOT_DONE_YET


def _read(source: IFileSource, start: int, end: int) -> bytes:
    """
    ``[start, end)`` of a small complete file, read at once.

    :raises OSError: when it cannot be read whole (it was cut short).
    """
    fd = source.open()
    try:
        data = os.pread(fd, end - start, start)
    finally:
        os.close(fd)
    if len(data) != end - start:
        raise OSError(errno.EIO, "the file is shorter than it was")
    return data


def _span(selected: FullResponse | SingleRange, size: int | None) -> tuple[int, int | None]:
    """
    The offsets ``[start, end)`` to send; ``end`` is ``None`` for "until the
    download completes", only when the size is unknown.
    """
    if isinstance(selected, SingleRange):
        return selected.start, selected.end + 1
    return 0, size


def _not_modified(request: IRequest, cache_control: str) -> int:
    """
    Answer ``304`` and finish the request here.

    Returning ``b""`` from ``render_GET`` would make twisted.web add
    ``Content-Length: 0``, which a ``304`` must not carry (RFC 9110 §8.6: it
    would have to equal the full response's length); finishing directly
    sends the headers as set.
    """
    request.setResponseCode(304)
    request.setHeader(b"cache-control", cache_control.encode("latin-1"))
    request.finish()
    return NOT_DONE_YET


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")

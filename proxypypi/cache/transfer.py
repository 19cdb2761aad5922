# -*- test-case-name: tests.test_downloads,tests.test_upstream -*-
"""
How a `proxypypi.cache.download.Download` gets its bytes: from its origins
in turn, a broken connection resumed with an HTTP ``Range`` request from
the next origin (another mirror of the same group) when there is one.

A hash mismatch cannot be failed over: by then the clients hold every byte
but the last, and some of those bytes are wrong.  So the clients'
connections are aborted (an installer sees a truncated download and never a
corrupt file), nothing is committed, the origins that supplied the bytes are
reported as failed, and the manager remembers them, so the next request
for the file starts a fresh download from the other origins first.

Each origin may carry an `proxypypi.upstream.origin.OriginHealth` (the
upstream member behind it): the transfer tells it of every request it
starts and ends, and whether it worked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.internet.error import DNSLookupError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from proxypypi.cache.download import Abandoned, Download, IntegrityError
from proxypypi.upstream.fetch import (
    BodyReceiver,
    BodyTooLarge,
    FetchError,
    Timing,
    describe_failure,
    header,
    is_unreachable,
    request,
)
from proxypypi.upstream.origin import Origin
from proxypypi.upstream.reach import Refused

#: How many times one download may (re)connect before giving up.
MAX_ATTEMPTS = 6

log = Logger()


class FileNotFoundUpstream(FetchError):
    """
    The upstream says the file listed on its page does not exist.
    """


async def transfer(download: Download) -> None:
    """
    Fill ``download`` from its origins and commit it.

    :raises FetchError: when no origin could supply the file (the most
        telling reason), `IntegrityError` when the bytes are wrong.
    :raises OSError: when the storage cannot take the bytes.
    """
    origins = download.origins
    errors: list[str] = []
    # Origins that cannot serve this file at all (404, another size, a URL
    # refused):
    # asking them again would not help.
    excluded: dict[int, FetchError] = {}
    position = 0
    for _attempt in range(MAX_ATTEMPTS):
        index = _next_origin(origins, position, excluded)
        if index is None:
            break
        origin = origins[index]
        position = index + 1
        timing = Timing(download.clock.seconds())
        before = download.written
        try:
            await _attempt_reporting(download, origin, timing)
        except (FileNotFoundUpstream, IntegrityError, Refused) as e:
            if download.written > before:
                download.contributed(origin)
            excluded[index] = e
            errors.append(f"{origin.url}: {e}")
            if isinstance(e, IntegrityError) and origin.health is not None:
                origin.health.report_failure(str(e))
            elif isinstance(e, FileNotFoundUpstream) and origin.health is not None:
                origin.health.report_success(timing.latency)
            # A URL the proxy refuses to fetch says nothing of the member's
            # health: its other pages and files are still served.
            continue
        except Exception as e:
            if download.written > before:
                download.contributed(origin)
            # A disk error ends the download; an unknown host name
            # (DNSLookupError is an OSError too) is the origin's fault.
            if (
                download.cancelling
                or isinstance(e, Abandoned | BodyTooLarge)
                or (isinstance(e, OSError) and not isinstance(e, DNSLookupError))
            ):
                raise
            failure = Failure(e)
            reason = describe_failure(failure)
            errors.append(f"{origin.url}: {reason}")
            if origin.health is not None:
                origin.health.report_failure(reason, fatal=is_unreachable(failure))
            log.warn(
                "download of {filename} from {url} broke at byte {offset}: {reason}",
                filename=download.key.filename,
                url=origin.url,
                offset=download.written,
                reason=reason,
            )
            continue
        if download.written > before:
            download.contributed(origin)
        await download.finish()
        if origin.health is not None:
            origin.health.report_success(timing.latency)
        return
    if len(excluded) == len(origins):
        # Every origin said no: the most telling answer is the source's.
        raise excluded[min(excluded)]
    raise FetchError(f"gave up after {MAX_ATTEMPTS} attempts: " + "; ".join(errors[-3:]))


def _next_origin(
    origins: Sequence[Origin], position: int, excluded: Mapping[int, object]
) -> int | None:
    """
    The origin for the next attempt: the next one after ``position``
    (cyclically) that is in rotation, else the next one at all, never one
    in ``excluded``.
    """
    count = len(origins)
    candidates = [(position + i) % count for i in range(count)]
    candidates = [i for i in candidates if i not in excluded]
    for i in candidates:
        health = origins[i].health
        if health is None or health.usable:
            return i
    return candidates[0] if candidates else None


async def _attempt_reporting(download: Download, origin: Origin, timing: Timing) -> None:
    """
    `_attempt`, counted as load on the origin while it runs.
    """
    if download.cancelling:
        raise FetchError("download cancelled")
    if origin.health is not None:
        origin.health.request_started()
    try:
        await _attempt(download, origin, timing)
    finally:
        if origin.health is not None:
            origin.health.request_ended()


async def _attempt(download: Download, origin: Origin, timing: Timing) -> None:
    headers = {b"accept-encoding": b"identity"}
    if download.written:
        headers[b"range"] = f"bytes={download.written}-".encode()
    clock = download.clock
    response = await request(origin.agent, clock, origin.url, headers, origin.first_byte_timeout)
    timing.latency = clock.seconds() - timing.started
    if download.cancelling:
        response.deliverBody(Protocol())  # closes the connection
        raise FetchError("download cancelled")
    skip, total = _accept_response(download, response)
    try:
        download.headers_arrived(total)
    except BodyTooLarge:
        response.deliverBody(Protocol())  # closes the connection
        raise
    idle = origin.idle_timeout if origin.idle_timeout is not None else download.idle_timeout

    def on_data(data: bytes) -> None:
        nonlocal skip
        if skip:
            cut = min(skip, len(data))
            skip -= cut
            data = data[cut:]
            if not data:
                return
        download.write(data)

    receiver = BodyReceiver(on_data, clock, idle)
    download.receiver = receiver
    response.deliverBody(receiver)
    try:
        await receiver.done
    finally:
        download.receiver = None
    # The page's size counts too: a body without Content-Length that ends
    # early is resumed, not mistaken for a corrupt file.
    expected = download.expected_size()
    if expected is not None and download.written < expected:
        raise FetchError(f"body ended at byte {download.written} of {expected}")
    if receiver.unframed and expected is None and not download.hashes:
        # Nothing tells such a body from one the connection cut short.
        raise FetchError(
            "the file ended with its connection, with no length or hash to prove it whole"
        )


def _accept_response(download: Download, response: IResponse) -> tuple[int, int | None]:
    """
    Check a response's status and length against what we know.

    :returns: how many leading bytes to skip (a 200 answer to a resumed
        request repeats what we already have), and the total size the
        response announced, if any.
    """
    if response.code in (404, 410):
        response.deliverBody(Protocol())
        raise FileNotFoundUpstream(f"HTTP {response.code} for a file the page lists")
    if response.code not in (200, 206):
        response.deliverBody(Protocol())
        raise FetchError(f"HTTP {response.code}")
    if header(response, b"content-encoding") not in (None, "identity"):
        response.deliverBody(Protocol())
        raise FetchError("upstream sent an encoded body for a file")
    total: int | None = None
    skip = 0
    if response.code == 206:
        start, total = _content_range(header(response, b"content-range"))
        if start != download.written:
            response.deliverBody(Protocol())
            raise FetchError(f"asked for bytes from {download.written}, got from {start}")
    else:
        skip = download.written
        if response.length != -1 and isinstance(response.length, int):
            total = response.length
    known = download.expected_size()
    if total is not None and known is not None and total != known:
        response.deliverBody(Protocol())
        raise IntegrityError(f"upstream says {total} bytes, the index page says {known}")
    return skip, total


def _content_range(value: str | None) -> tuple[int, int | None]:
    """
    Parse ``bytes START-END/TOTAL`` of a 206 response.
    """
    if not value or not value.startswith("bytes "):
        raise FetchError(f"bad Content-Range {value!r}")
    try:
        span, _, total = value[6:].partition("/")
        start = int(span.split("-", 1)[0])
        return start, (None if total.strip() == "*" else int(total))
    except ValueError as e:
        raise FetchError(f"bad Content-Range {value!r}") from e

# -*- test-case-name: tests.test_upstream,tests.test_index -*-
"""
Project pages from the upstreams: the first group that has the project
answers; a 404 from a group passes to the next; a group whose members all
fail is skipped.  A project whose page we already hold stays with the group
that served it: if that group fails, the stale page is served rather than a
page from another group (the pages of two groups are never mixed).
Within a group, members are tried in the order `Pool.plan` gives.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import attrs
from packaging.utils import NormalizedName
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from proxypypi.simple.model import ProjectPage
from proxypypi.simple.negotiate import HTML, HTML_V1, JSON_V1
from proxypypi.simple.parse import PageParseError, ascii_int, parse_project_page
from proxypypi.upstream.budget import Overloaded, PageBudget
from proxypypi.upstream.fetch import (
    Body,
    FetchError,
    Timing,
    UpstreamTimeout,
    describe_failure,
    final_url,
    gunzip,
    gzip_encoded,
    header,
    is_unreachable,
    read_body,
    request,
)
from proxypypi.upstream.member import Upstream
from proxypypi.upstream.pool import Pool

#: What we ask upstreams for: JSON first (cheaper to parse, carries more).
PAGE_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, {HTML};q=0.01".encode()

#: Pages larger than this (about 200 files, 3 ms of parsing) are parsed off
#: the reactor thread.
PARSE_IN_THREAD_BYTES = 64 * 1024

#: Seconds one page fetch from one member may take in all (headers, then a
#: body that trickles in just fast enough to dodge the idle timeout).
PAGE_TIMEOUT = 60.0


def decode_and_parse(
    body: Body,
    gzipped: bool,
    limit: int,
    content_type: str,
    page_url: str,
    name: NormalizedName,
    last_serial: int | None,
) -> tuple[ProjectPage, list[str]]:
    """
    Decode (at most ``limit`` bytes) and parse a page body.  Blocking for
    a large page.  A body that ended with the connection must prove itself
    whole: a gzip stream by its end (`gunzip` checks it), a page by its own
    (`parse_project_page` with ``framed`` false).
    """
    try:
        if gzipped:
            return parse_project_page(
                gunzip(body.data, limit), content_type, page_url, name, last_serial
            )
        return parse_project_page(
            body.data, content_type, page_url, name, last_serial, framed=not body.unframed
        )
    except Exception as e:
        # The frames of its traceback hold the expanded page (tens of
        # megabytes, and a gzip bomb's are always that): in the reference
        # cycle a traceback makes, they would stay until the garbage
        # collector next runs, eight refused pages holding 300 MB.
        raise e.with_traceback(None) from None


class ProjectNotFound(Exception):
    """
    Every upstream that answered says the project does not exist.
    """


class UpstreamUnavailable(FetchError):
    """
    No upstream could answer; the message lists what each one did.
    """



@attrs.frozen
class Validators:
    """
    What we know of the copy we hold, for a conditional request to the
    upstream that served it.
    """

    source: str
    etag: str | None = None
    last_modified: str | None = None


@attrs.frozen
class PageResult:
    """
    A project page as an upstream answered it.

    :ivar page: the parsed page; ``None`` when the upstream said our copy
        is still current (304).
    :ivar source: the base URL of the member that answered.
    """

    page: ProjectPage | None
    source: str
    group: int
    etag: str | None = None
    last_modified: str | None = None


class _GroupSaysNotFound(Exception):
    pass


class _GroupFailed(Exception):
    pass


class _MemberFailed(Exception):
    pass




#: Warnings about dropped page entries remembered as logged.
MAX_WARNED = 10_000


@attrs.define
class PageFetcher:
    """
    Fetches project pages from the upstreams of ``pool``.

    :ivar max_page_bytes: the largest page accepted.
    :ivar budget: the bytes all page bodies in flight may hold together.
    :ivar page_timeout: seconds one page fetch from one member may take.
    :ivar parse_in: runs the parsing of pages larger than
        `PARSE_IN_THREAD_BYTES` off the reactor thread (a page of twenty
        thousand files takes most of a second to parse).
    """

    pool: Pool
    max_page_bytes: int = 32 * 1024 * 1024
    budget: PageBudget = attrs.field(factory=PageBudget)
    page_timeout: float = PAGE_TIMEOUT
    parse_in: Callable[..., Deferred[Any]] | None = None
    #: Pages at least this large are parsed through ``parse_in``.
    thread_threshold: int = PARSE_IN_THREAD_BYTES
    log = Logger()
    #: What was dropped from which project's page, already logged (see
    #: `_log_new_warnings`).
    _warned: OrderedDict[tuple[str, str], None] = attrs.field(factory=OrderedDict)

    def lags(
        self, name: NormalizedName, source: str, serial: int | None, result: PageResult
    ) -> bool:
        """
        Whether ``result`` is older than the page of ``name`` we hold (from
        ``source``, at ``serial``): a lagging mirror of the group that
        served ours sent it (the members of a group mirror one index, so
        their serials compare).
        """
        new = None if result.page is None else result.page.last_serial
        if serial is None or new is None or new >= serial:
            return False
        member = self.pool.member_for(source)
        if source != result.source and (member is None or member.group != result.group):
            return False
        self.log.info(
            "{upstream} sent {project} at serial {new}, older than our {old}; kept ours",
            upstream=result.source,
            project=name,
            new=new,
            old=serial,
        )
        return True

    def _sticky_group(self, validators: Validators | None) -> int | None:
        if validators is None:
            return None
        member = self.pool.member_for(validators.source)
        return None if member is None else member.group

    async def fetch(
        self, name: NormalizedName, validators: Validators | None = None
    ) -> PageResult:
        """
        Fetch a project page from the first group that has it.

        When ``validators`` says which member served the copy we hold, that
        member's group is where the project lives: if that group fails, no
        lower-ranked group is asked (the caller serves its stale copy); a
        404 from it still passes on, as from any group.

        :raises ProjectNotFound: every group asked answered 404.
        :raises UpstreamUnavailable: no 200/304 and not every group said 404.
        """
        errors: list[str] = []
        sticky = self._sticky_group(validators)
        for rank, group in enumerate(self.pool.groups):
            # A group entirely out of rotation is only tried when it is the
            # project's own group or nothing after it could answer: asking
            # dead members first would make every request wait for them.
            later = self.pool.groups[rank + 1 :]
            last_resort = rank == sticky or not any(m.health.usable for g in later for m in g)
            try:
                return await self._fetch_from_group(
                    rank, group, name, validators, errors, last_resort
                )
            except _GroupSaysNotFound:
                continue
            except _GroupFailed:
                if rank == sticky:
                    raise UpstreamUnavailable(
                        "; ".join(errors) + f" (the page of {name} came from this group; "
                        "it stays with it)"
                    ) from None
                continue
        if errors:
            raise UpstreamUnavailable("; ".join(errors))
        raise ProjectNotFound(name)

    async def _fetch_from_group(
        self,
        rank: int,
        group: Sequence[Upstream],
        name: NormalizedName,
        validators: Validators | None,
        errors: list[str],
        last_resort: bool,
    ) -> PageResult:
        plan = self.pool.plan(group, last_resort)
        if not plan:
            errors.append(f"group {rank + 1}: every member is out of rotation")
            raise _GroupFailed()
        for member in plan:
            try:
                return await self._ask_member(member, name, validators)
            except _MemberFailed as e:
                errors.append(f"{member.url}: {e}")
        raise _GroupFailed()

    async def _ask_member(
        self, member: Upstream, name: NormalizedName, validators: Validators | None
    ) -> PageResult:
        """
        One member's answer, bounded in time, reported to its health.

        :raises _GroupSaysNotFound: on 404 (a healthy answer).
        :raises _MemberFailed: for anything but a usable page or 304.
        """
        health = member.health
        timing = Timing(self.pool.clock.seconds())
        health.request_started()
        d = Deferred.fromCoroutine(self._fetch_from_member(member, name, validators, timing))
        d.addTimeout(self.page_timeout, self.pool.clock)
        try:
            result = await d
        except _GroupSaysNotFound:
            health.request_ended()
            health.report_success(timing.latency)
            raise
        except Exception as e:
            health.request_ended()
            if isinstance(e, DeferredTimeout):
                e = UpstreamTimeout(f"page not complete within {self.page_timeout:g}s")
            failure = Failure(e)
            reason = describe_failure(failure)
            if not isinstance(e, Overloaded):  # our own limit, not the member's fault
                health.report_failure(reason, fatal=is_unreachable(failure))
            self.log.warn(
                "upstream {upstream} failed for project {project}: {reason}",
                upstream=member.url,
                project=name,
                reason=reason,
            )
            raise _MemberFailed(reason) from e
        health.request_ended()
        health.report_success(timing.latency)
        return result

    def _log_new_warnings(self, upstream: str, name: str, warnings: list[str]) -> None:
        """
        Log what a page dropped, in one line per page, and each thing once
        (the page is fetched again at every refresh, every ten minutes,
        with the same unusable entries).  The memory of what was said is
        bounded: past `MAX_WARNED`, the oldest is forgotten (and said again
        should it come back).
        """
        new = []
        for warning in warnings:
            key = (name, warning)
            if key in self._warned:
                self._warned.move_to_end(key)
            else:
                new.append(warning)
                self._warned[key] = None
        while len(self._warned) > MAX_WARNED:
            self._warned.popitem(last=False)
        if new:
            self.log.warn(
                "{upstream}: page of {project}: {warnings}",
                upstream=upstream,
                project=name,
                warnings="; ".join(new),
            )

    async def _fetch_from_member(
        self,
        member: Upstream,
        name: NormalizedName,
        validators: Validators | None,
        timing: Timing,
    ) -> PageResult:
        url = member.page_url(name)
        # gzip is decoded here (`gunzip`), off the reactor thread for a
        # large page and bounded, rather than by Twisted's decoder, which
        # expands every chunk whole on the reactor thread.
        headers = {b"accept": PAGE_ACCEPT, b"accept-encoding": b"gzip"}
        if validators is not None and validators.source == member.url:
            if validators.etag:
                headers[b"if-none-match"] = validators.etag.encode("latin-1")
            if validators.last_modified:
                headers[b"if-modified-since"] = validators.last_modified.encode("latin-1")
        response = await request(
            member.agent, self.pool.clock, url, headers, member.config.first_byte_timeout
        )
        timing.latency = self.pool.clock.seconds() - timing.started
        etag = header(response, b"etag")
        last_modified = header(response, b"last-modified")
        if response.code == 304:
            response.deliverBody(Protocol())
            return PageResult(None, member.url, member.group, etag, last_modified)
        if response.code in (404, 410):
            response.deliverBody(Protocol())
            raise _GroupSaysNotFound()
        if response.code != 200:
            response.deliverBody(Protocol())
            raise FetchError(f"HTTP {response.code} for {url}")
        gzipped = gzip_encoded(response)
        share = self.budget.share()
        try:
            body = await read_body(
                response, self.pool.clock, member.idle_timeout, self.max_page_bytes, share.take
            )
            page, warnings = await self._parse(body, gzipped, response, url, name)
        finally:
            share.release()
        self._log_new_warnings(member.url, name, warnings)
        return PageResult(page, member.url, member.group, etag, last_modified)

    async def _parse(
        self, body: Body, gzipped: bool, response: IResponse, url: str, name: NormalizedName
    ) -> tuple[ProjectPage, list[str]]:
        """
        Decode and parse a page body, off the reactor thread when large.

        :raises FetchError: when it is not a usable page.
        """
        # An unusable serial (``²``, five thousand digits) is ignored.
        serial = ascii_int((header(response, b"x-pypi-last-serial") or "").strip())
        parse = partial(
            decode_and_parse,
            body,
            gzipped,
            self.max_page_bytes,
            header(response, b"content-type") or "",
            final_url(response, url),
            name,
            serial,
        )
        # An index page compresses about sevenfold.
        expanded = len(body.data) * 7 if gzipped else len(body.data)
        try:
            if self.parse_in is not None and expanded > self.thread_threshold:
                result: tuple[ProjectPage, list[str]] = await self.parse_in(parse)
                return result
            return parse()
        except PageParseError as e:
            raise FetchError(f"unusable page at {url}: {e}") from e

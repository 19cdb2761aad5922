# -*- test-case-name: tests.test_upstream -*-
"""
Ranked upstream indexes: which one to ask, and what to do when it fails.

Upstreams come in groups, in rank order.  A project page comes from the
first group that has the project: a 404 from a group passes to the next
one, an error from a member passes to the next member of the same group.
Files are only ever fetched from URLs that an upstream page listed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from packaging.utils import NormalizedName
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ContentDecoderAgent, GzipDecoder
from twisted.web.iweb import IAgent

from .config import UpstreamConfig
from .downloads import Origin
from .fetch import FetchError, describe_failure, final_url, header, read_body, request
from .simple.model import ProjectPage
from .simple.negotiate import HTML, HTML_V1, JSON_V1
from .simple.parse import PageParseError, parse_project_page

#: What we ask upstreams for: JSON first (cheaper to parse, carries more).
PAGE_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, {HTML};q=0.01".encode()

#: Consecutive failures after which a member is skipped while others work.
DOWN_AFTER = 3

#: Seconds a failed member is skipped before it is tried again.
RETRY_DOWN_AFTER = 30.0


class ProjectNotFound(Exception):
    """
    Every upstream that answered says the project does not exist.
    """


class UpstreamUnavailable(FetchError):
    """
    No upstream could answer; the message lists what each one did.
    """


@attrs.define(eq=False)
class Upstream:
    """
    One member of an upstream group, with what we learnt of its health.
    """

    config: UpstreamConfig
    group: int
    agent: IAgent
    failures: int = 0
    down_until: float = 0.0

    @property
    def url(self) -> str:
        return self.config.url

    def is_down(self, now: float) -> bool:
        return self.failures >= DOWN_AFTER and now < self.down_until

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.failures >= DOWN_AFTER:
            self.down_until = now + RETRY_DOWN_AFTER

    @property
    def page_agent(self) -> IAgent:
        """
        The agent for index pages, which may arrive gzip-compressed (never
        used for files, whose bytes must arrive exactly as stored).
        """
        return ContentDecoderAgent(self.agent, [(b"gzip", GzipDecoder)])

    def page_url(self, name: NormalizedName) -> str:
        return f"{self.url}{name}/"


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


@attrs.define
class Pool:
    """
    All upstreams, in rank order, and the policy of asking them.
    """

    groups: Sequence[Sequence[Upstream]]
    clock: IReactorTime
    idle_timeout: float = 30.0
    max_page_bytes: int = 128 * 1024 * 1024
    log = Logger()

    @classmethod
    def from_config(
        cls,
        groups: Sequence[Sequence[UpstreamConfig]],
        agent_for: Callable[[UpstreamConfig], IAgent],
        clock: IReactorTime,
        **kwargs: float,
    ) -> Pool:
        members = [
            [Upstream(cfg, rank, agent_for(cfg)) for cfg in group]
            for rank, group in enumerate(groups)
        ]
        return cls(members, clock, **kwargs)  # type: ignore[arg-type]

    def members(self) -> list[Upstream]:
        return [m for group in self.groups for m in group]

    def member_for(self, url: str) -> Upstream | None:
        """
        The member whose base URL is C{url}.
        """
        for m in self.members():
            if m.url == url:
                return m
        return None

    def origins(self, source: str, url: str) -> list[Origin]:
        """
        Where to fetch C{url}, a file listed on a page that the member
        C{source} served.
        """
        member = self.member_for(source) or self.groups[0][0]
        return [Origin(url, member.agent, member.config.first_byte_timeout)]

    def in_order(self) -> list[Upstream]:
        """
        Every member, in the order to try them for something any of them
        can answer (the project list).
        """
        return [m for group in self.groups for m in self._order(group)]

    def _order(self, group: Sequence[Upstream]) -> list[Upstream]:
        now = self.clock.seconds()
        return sorted(group, key=lambda m: m.is_down(now))

    async def fetch_page(
        self, name: NormalizedName, validators: Validators | None = None
    ) -> PageResult:
        """
        Fetch a project page from the first group that has it.

        :raises ProjectNotFound: every group answered 404.
        :raises UpstreamUnavailable: no 200/304 and not every group said 404.
        """
        errors: list[str] = []
        for group in self.groups:
            try:
                return await self._fetch_from_group(group, name, validators, errors)
            except (_GroupSaysNotFound, _GroupFailed):
                continue
        if errors:
            raise UpstreamUnavailable("; ".join(errors))
        raise ProjectNotFound(name)

    async def _fetch_from_group(
        self,
        group: Sequence[Upstream],
        name: NormalizedName,
        validators: Validators | None,
        errors: list[str],
    ) -> PageResult:
        failed_before = len(errors)
        for member in self._order(group):
            try:
                result = await self._fetch_from_member(member, name, validators)
            except _GroupSaysNotFound:
                member.succeeded()
                raise
            except Exception as e:
                member.failed(self.clock.seconds())
                reason = describe_failure(Failure(e))
                errors.append(f"{member.url}: {reason}")
                self.log.warn(
                    "upstream {upstream} failed for project {project}: {reason}",
                    upstream=member.url,
                    project=name,
                    reason=reason,
                )
                continue
            member.succeeded()
            return result
        assert len(errors) > failed_before
        raise _GroupFailed()

    async def _fetch_from_member(
        self, member: Upstream, name: NormalizedName, validators: Validators | None
    ) -> PageResult:
        url = member.page_url(name)
        headers = {b"accept": PAGE_ACCEPT}
        if validators is not None and validators.source == member.url:
            if validators.etag:
                headers[b"if-none-match"] = validators.etag.encode("latin-1")
            if validators.last_modified:
                headers[b"if-modified-since"] = validators.last_modified.encode("latin-1")
        response = await request(
            member.page_agent, self.clock, url, headers, member.config.first_byte_timeout
        )
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
        body = await read_body(response, self.clock, self.idle_timeout, self.max_page_bytes)
        serial = header(response, b"x-pypi-last-serial")
        try:
            page, warnings = parse_project_page(
                body,
                header(response, b"content-type") or "",
                final_url(response, url),
                name,
                last_serial=int(serial) if serial and serial.isdigit() else None,
            )
        except PageParseError as e:
            raise FetchError(f"unusable page at {url}: {e}") from e
        for warning in warnings:
            self.log.warn("{upstream}: {warning}", upstream=member.url, warning=warning)
        return PageResult(page, member.url, member.group, etag, last_modified)

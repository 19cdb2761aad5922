# -*- test-case-name: tests.test_upstream -*-
"""
Ranked upstream indexes: which one to ask, and what to do when it fails.

Upstreams come in groups, in rank order; the members of a group are
mirrors of the same index and share its load.

- A project page comes from the first group that has the project: a 404
  from a group passes to the next group; a group whose members all fail is
  skipped.  A project whose page we already hold stays with the group that
  served it: if that group fails, the stale page is served rather than a page
  from another group (the pages of two groups are never mixed).
- Within a group a request goes to one member chosen by weight and load
  (`Pool.plan`); if it fails, the next member is asked at once, a bounded
  number of times.
- Each member's `Health` decides whether it takes traffic: a member that is
  down gets none (only probes) unless its whole group is down and there is
  nowhere else to go.
- Files are only ever fetched from URLs an upstream page listed, from the
  member that served the page or, failing it, the same path on the other
  members of its group (`Pool.origins`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
from packaging.utils import NormalizedName
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ContentDecoderAgent, GzipDecoder
from twisted.web.iweb import IAgent, IResponse

from proxypypi.config import UpstreamConfig, display_url
from proxypypi.simple.model import ProjectPage
from proxypypi.simple.negotiate import HTML, HTML_V1, JSON_V1
from proxypypi.simple.parse import PageParseError, parse_project_page
from proxypypi.upstream.fetch import (
    FetchError,
    Timing,
    UpstreamTimeout,
    describe_failure,
    final_url,
    header,
    is_unreachable,
    read_body,
    request,
)
from proxypypi.upstream.health import Health, State
from proxypypi.upstream.origin import Origin

#: What we ask upstreams for: JSON first (cheaper to parse, carries more).
PAGE_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, {HTML};q=0.01".encode()

#: Pages larger than this are parsed off the reactor thread.
PARSE_IN_THREAD_BYTES = 256 * 1024

#: Most members of one group a single page request tries.
MAX_ATTEMPTS_PER_GROUP = 3

#: Seconds one page fetch from one member may take in all (headers, then a
#: body that trickles in just fast enough to dodge the idle timeout).
PAGE_TIMEOUT = 60.0

#: The load guard of `Pool.plan`: the member the weights chose is passed
#: over when its load per weight is more than this many times the least
#: loaded member's, and it has at least `LOAD_GUARD_MARGIN` more requests
#: in flight.
LOAD_GUARD_FACTOR = 2.0
LOAD_GUARD_MARGIN = 2


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
    One member of an upstream group, with its health.

    :ivar group: the rank of its group, from 0.
    :ivar idle_timeout: seconds without a byte mid-body before a response
        from this member is abandoned.
    :ivar credit: the member's running credit in the smooth weighted
        round robin of `Pool.plan`.
    """

    config: UpstreamConfig
    group: int
    agent: IAgent = attrs.field(repr=False)
    clock: IReactorTime = attrs.field(repr=False)
    idle_timeout: float = 10.0
    jitter: Callable[[], float] = attrs.field(default=random.random, repr=False)
    credit: float = 0.0
    health: Health = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.health = Health(self.url, self.clock, self.probe, jitter=self.jitter)

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def weight(self) -> float:
        return self.config.weight

    @property
    def page_agent(self) -> IAgent:
        """
        The agent for index pages, which may arrive gzip-compressed (never
        used for files, whose bytes must arrive exactly as stored).
        """
        return ContentDecoderAgent(self.agent, [(b"gzip", GzipDecoder)])

    def page_url(self, name: NormalizedName) -> str:
        return f"{self.url}{name}/"

    def probe(self) -> Deferred[None]:
        """
        The health probe: ``HEAD`` of the base URL (cheap even where a
        ``GET`` would be the whole project list).  Any answer below 500 means
        the member is up: some mirrors refuse ``HEAD`` or list no projects,
        and still serve pages and files.
        """

        def check(response: IResponse) -> None:
            response.deliverBody(Protocol())
            if response.code >= 500:
                raise FetchError(f"HTTP {response.code}")

        d = request(self.agent, self.clock, self.url, {}, self.config.first_byte_timeout, b"HEAD")
        return d.addCallback(check)

    def origin(self, url: str) -> Origin:
        """
        An origin fetching ``url`` through this member, reporting to its
        health.
        """
        return Origin(
            url,
            self.agent,
            self.config.first_byte_timeout,
            health=self.health,
            idle_timeout=self.idle_timeout,
        )


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


def _root(base: str) -> tuple[str, str, str]:
    """
    Scheme, host and path prefix under which a member serves everything:
    its base URL without a final ``simple/`` segment (file paths of the
    public index and its mirrors are relative to that).
    """
    parts = urlsplit(base)
    path = parts.path
    if path.endswith("/simple/"):
        path = path[: -len("simple/")]
    return parts.scheme.lower(), parts.netloc.lower(), path


def rebase(url: str, source_base: str, target_base: str) -> str:
    """
    The URL of the file at ``url`` (listed by the member at ``source_base``)
    on the mirror at ``target_base``.

    Mirrors keep the index's relative file paths, so a URL under the source
    member's root moves under the target's root.  A URL elsewhere (a
    separate file host) keeps its path and query on the target's host.
    """
    parts = urlsplit(url)
    scheme, netloc, path = _root(source_base)
    t_scheme, t_netloc, t_path = _root(target_base)
    if (parts.scheme.lower(), parts.netloc.lower()) == (scheme, netloc) and parts.path.startswith(
        path
    ):
        new_path = t_path + parts.path[len(path) :]
    else:
        new_path = parts.path
    return urlunsplit((t_scheme, t_netloc, new_path, parts.query, ""))


@attrs.define
class Pool:
    """
    All upstreams, in rank order, and the policy of asking them.

    :ivar idle_timeout: the default idle timeout of members that set none.
    :ivar page_timeout: seconds one page fetch from one member may take.
    :ivar parse_in: runs the parsing of pages larger than
        `PARSE_IN_THREAD_BYTES` off the reactor thread (a page of twenty
        thousand files takes most of a second to parse).
    """

    groups: Sequence[Sequence[Upstream]]
    clock: IReactorTime
    idle_timeout: float = 10.0
    max_page_bytes: int = 128 * 1024 * 1024
    page_timeout: float = PAGE_TIMEOUT
    parse_in: Callable[..., Deferred[Any]] | None = None
    log = Logger()

    @classmethod
    def from_config(
        cls,
        groups: Sequence[Sequence[UpstreamConfig]],
        agent_for: Callable[[UpstreamConfig], IAgent],
        clock: IReactorTime,
        idle_timeout: float = 10.0,
        jitter: Callable[[], float] = random.random,
        **kwargs: Any,
    ) -> Pool:
        """
        Members for ``groups`` (rank order), each with the agent
        ``agent_for`` gives it.
        """
        members = [
            [
                Upstream(
                    cfg,
                    rank,
                    agent_for(cfg),
                    clock,
                    idle_timeout=cfg.idle_timeout if cfg.idle_timeout is not None else idle_timeout,
                    jitter=jitter,
                )
                for cfg in group
            ]
            for rank, group in enumerate(groups)
        ]
        return cls(members, clock, idle_timeout, **kwargs)

    # Members and their state

    def members(self) -> list[Upstream]:
        return [m for group in self.groups for m in group]

    def member_for(self, url: str) -> Upstream | None:
        """
        The member whose base URL is ``url``.
        """
        for m in self.members():
            if m.url == url:
                return m
        return None

    def usable(self) -> bool:
        """
        Whether some group has a member in rotation.
        """
        return any(m.health.usable for m in self.members())

    def start_probing(self) -> None:
        """
        Let down members be probed (the service calls this on start).
        """
        for m in self.members():
            m.health.start_probing()

    def check_all(self) -> None:
        """
        Probe every member in rotation once now, counting the outcome as a
        request's (at service start: a member that is not there is known
        before the first client asks).
        """
        for m in self.members():
            m.health.check_now()

    def stop_probing(self) -> None:
        """
        Cancel every probe timer and probe in flight (on service stop).
        """
        for m in self.members():
            m.health.stop_probing()

    def health_report(self) -> list[dict[str, object]]:
        """
        Each member's health, for ``/health``.
        """
        now = self.clock.seconds()
        report = []
        for m in self.members():
            h = m.health
            next_probe = h.next_probe_at()
            report.append(
                {
                    "url": display_url(m.url),
                    "group": m.group + 1,
                    "weight": m.weight,
                    "state": h.state.value,
                    "error-rate": round(h.error_rate(), 3),
                    "latency-ms": None if h.latency is None else round(h.latency * 1000, 1),
                    "outstanding": h.outstanding,
                    "consecutive-failures": h.consecutive_failures,
                    "last-error": h.last_error,
                    "next-probe-in": None if next_probe is None else round(next_probe - now, 1),
                }
            )
        return report

    # Choosing members

    def plan(self, group: Sequence[Upstream], last_resort: bool = True) -> list[Upstream]:
        """
        The members of ``group`` to try for one request, in order.

        The first is chosen by smooth weighted round robin over the members
        in rotation (nginx's algorithm: it follows the weights exactly, also
        for requests that come one at a time, and interleaves them rather
        than sending runs to one member).  A load guard then looks at the
        requests in flight: when the chosen member carries far more per unit
        of weight than the least loaded one (it is slow, or stuck), the
        request goes to the least loaded member instead.  The rest follow by
        load per weight, ties by position in the group.

        When no member is in rotation and ``last_resort`` is true, every
        member is tried anyway, the most promising first; otherwise the
        group is skipped (empty plan).
        """
        usable = [m for m in group if m.health.usable]
        if not usable:
            if not last_resort:
                return []
            order = sorted(
                range(len(group)),
                key=lambda i: (
                    group[i].health.state is not State.PROBING,
                    group[i].health.consecutive_failures,
                    group[i].health.error_rate(),
                    i,
                ),
            )
            return [group[i] for i in order][:MAX_ATTEMPTS_PER_GROUP]
        chosen = self._pick(usable)
        by_load = sorted(range(len(usable)), key=lambda i: (_load(usable[i]), i))
        least = usable[by_load[0]]
        if (
            _load(chosen) > LOAD_GUARD_FACTOR * _load(least)
            and chosen.health.outstanding - least.health.outstanding >= LOAD_GUARD_MARGIN
        ):
            chosen = least
        rest = [usable[i] for i in by_load if usable[i] is not chosen]
        return [chosen, *rest][:MAX_ATTEMPTS_PER_GROUP]

    @staticmethod
    def _pick(usable: Sequence[Upstream]) -> Upstream:
        total = 0.0
        best: Upstream | None = None
        for m in usable:
            m.credit += m.weight
            total += m.weight
            if best is None or m.credit > best.credit:
                best = m
        assert best is not None
        best.credit -= total
        return best

    def origins(self, source: str, url: str) -> list[Origin]:
        """
        Where to fetch ``url``, a file listed on a page that the member
        ``source`` served: that member first, then the other members of its
        group at the same relative path (see `rebase`).  Members out of
        rotation come last, so they are only tried when the others fail.
        """
        member = self.member_for(source)
        if member is None:
            # A page stored under an upstream no longer configured: its
            # URL is all we have; fetch it through the first member's agent.
            first = self.groups[0][0]
            return [Origin(url, first.agent, first.config.first_byte_timeout)]
        group = self.groups[member.group]
        others = [m for m in group if m is not member]
        others.sort(key=lambda m: (_load(m), group.index(m)))
        ordered = [member, *others]
        ordered.sort(key=lambda m: not m.health.usable)  # stable: keeps the order above
        seen: set[str] = set()
        out = []
        for m in ordered:
            target = url if m is member else rebase(url, member.url, m.url)
            if target not in seen:
                seen.add(target)
                out.append(m.origin(target))
        return out

    def in_order(self) -> list[Upstream]:
        """
        Every member, in the order to try them for something any of them
        can answer (the project list): members in rotation by rank first.
        """
        members = self.members()
        return sorted(members, key=lambda m: not m.health.usable)

    # Pages

    def _sticky_group(self, validators: Validators | None) -> int | None:
        if validators is None:
            return None
        member = self.member_for(validators.source)
        return None if member is None else member.group

    async def fetch_page(
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
        for rank, group in enumerate(self.groups):
            # A group entirely out of rotation is only tried when it is the
            # project's own group or nothing after it could answer: asking
            # dead members first would make every request wait for them.
            later = self.groups[rank + 1 :]
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
        plan = self.plan(group, last_resort)
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
        timing = Timing(self.clock.seconds())
        health.request_started()
        d = Deferred.fromCoroutine(self._fetch_from_member(member, name, validators, timing))
        d.addTimeout(self.page_timeout, self.clock)
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

    async def _fetch_from_member(
        self,
        member: Upstream,
        name: NormalizedName,
        validators: Validators | None,
        timing: Timing,
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
        timing.latency = self.clock.seconds() - timing.started
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
        body = await read_body(response, self.clock, member.idle_timeout, self.max_page_bytes)
        serial = header(response, b"x-pypi-last-serial")
        parse = partial(
            parse_project_page,
            body,
            header(response, b"content-type") or "",
            final_url(response, url),
            name,
            last_serial=int(serial) if serial and serial.isdigit() else None,
        )
        try:
            if self.parse_in is not None and len(body) > PARSE_IN_THREAD_BYTES:
                page, warnings = await self.parse_in(parse)
            else:
                page, warnings = parse()
        except PageParseError as e:
            raise FetchError(f"unusable page at {url}: {e}") from e
        for warning in warnings:
            self.log.warn("{upstream}: {warning}", upstream=member.url, warning=warning)
        return PageResult(page, member.url, member.group, etag, last_modified)


def _load(member: Upstream) -> float:
    """
    Requests in flight per unit of weight, counting the one to be sent.
    """
    return (member.health.outstanding + 1) / member.weight

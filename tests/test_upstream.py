"""
Upstream groups: the health state machine, probes, selection by weight and
load, failover within and across groups, stickiness of cached projects,
file failover, bad upstream answers, ``/health`` and the TOML form.

Each member is its own fake index behind its own in-memory agent (treq's
RequestTraversalAgent); a Clock drives every timeout and probe.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import RedirectAgent
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from proxypypi.cache.download import Download, IntegrityError
from proxypypi.cache.downloads import Manager
from proxypypi.cache.pages import PageCache
from proxypypi.cache.storage import FileKey, Storage
from proxypypi.cache.usage import SizeAccounting
from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.config.settings import build_config, parse_upstreams
from proxypypi.config.urls import ConfigError
from proxypypi.service.compose import build_proxy
from proxypypi.simple.parse import MAX_WARNINGS
from proxypypi.testing import FakeIndex, Fault, make_wheel
from proxypypi.upstream.fetch import BodyTooLarge, FetchError, GunzipStream
from proxypypi.upstream.health import PROBE_FIRST_DELAY, PROBE_MAX_DELAY, Health, State
from proxypypi.upstream.member import rebase
from proxypypi.upstream.pages import (
    PageFetcher,
    PageResult,
    ProjectNotFound,
    UpstreamUnavailable,
    Validators,
)
from proxypypi.upstream.pool import Pool
from proxypypi.web.root import RootResource
from tests.support.disk import stored, sync_run
from tests.support.pumping import QUIET, pump

PROJECT: Any = "proto-alpha"
ONE_WHEEL = "proto_alpha-1.0-py3-none-any.whl"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def json_page_of(project: str, extra: Sequence[object] = ()) -> bytes:
    """
    A JSON page of ``project`` listing `ONE_WHEEL`, then ``extra`` entries.
    """
    files = [{"filename": ONE_WHEEL, "url": f"/files/{ONE_WHEEL}"}, *extra]
    return json.dumps({"meta": {"api-version": "1.0"}, "name": project, "files": files}).encode()


@implementer(IAgent)
class SwitchAgent:
    """
    An agent that refuses every connection (a member that is not
    listening) until it is given a target to pass requests to.
    """

    def __init__(self, target: IAgent | None = None) -> None:
        self.target = target
        self.refused = 0

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Any = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        if self.target is None:
            self.refused += 1
            return fail(ConnectionRefusedError("not listening"))
        return self.target.request(method, uri, headers, bodyProducer)


class Scripted(Resource):
    """
    An upstream that answers every request with one fixed response.
    """

    isLeaf = True

    def __init__(
        self, code: int, content_type: str, body: bytes, location: str = "", encoding: str = ""
    ) -> None:
        super().__init__()
        self.code, self.content_type, self.body = code, content_type, body
        self.location, self.encoding = location, encoding

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        request.setHeader("content-type", self.content_type)
        if self.location:
            request.setHeader("location", self.location)
        if self.encoding:
            request.setHeader("content-encoding", self.encoding)
        return self.body


def url_of(name: str) -> str:
    return f"http://{name}.example/simple/"


class Members:
    """
    A pool over named fake members: ``groups`` lists each group's members
    as (name, weight).
    """

    def __init__(
        self,
        clock: Clock,
        groups: Sequence[Sequence[tuple[str, float]]],
        **fetch_settings: Any,
    ) -> None:
        self.clock = clock
        self.index: dict[str, FakeIndex] = {}
        self.agents: dict[str, RequestTraversalAgent] = {}
        self.switch: dict[str, SwitchAgent] = {}
        configs = []
        for group in groups:
            members = []
            for name, weight in group:
                self.index[name] = FakeIndex(clock)
                self.agents[name] = RequestTraversalAgent(self.index[name].resource())
                self.switch[name] = SwitchAgent(self.agents[name])
                members.append(UpstreamConfig(url_of(name), weight=weight))
            configs.append(members)
        self.pool = Pool.from_config(
            configs,
            lambda cfg: self.switch[cfg.url.split("//")[1].split(".")[0]],
            clock,
            jitter=lambda: 0.5,
        )
        self.fetcher = PageFetcher(self.pool, **fetch_settings)

    def add(self, *names: str, version: str = "1.0", payload: int = 0) -> Any:
        dist = make_wheel(PROJECT, version, payload_size=payload)
        for name in names:
            self.index[name].add(dist)
        return dist

    def member(self, name: str) -> Any:
        member = self.pool.member_for(url_of(name))
        assert member is not None
        return member

    def flush(self) -> None:
        """
        Carry requests and answers between the pool and the members until
        nothing more happens without time passing.
        """
        pump(*self.agents.values(), clock=self.clock, until=QUIET, what="the members to answer")

    def pages(self, name: str) -> int:
        return self.index[name].count("/simple/proto-alpha/", "GET")

    def fetch(self, validators: Validators | None = None) -> Deferred[PageResult]:
        d = Deferred.fromCoroutine(self.fetcher.fetch(PROJECT, validators))
        self.flush()
        return d


class HealthMachineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.probes: list[Deferred[None]] = []
        self.health = Health("m", self.clock, self.probe, jitter=lambda: 0.5)

    def probe(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.probes.append(d)
        return d

    def test_failures_then_probe_back(self) -> None:
        """healthy -> suspect -> down after 3 failures -> probing on time -> healthy."""
        h = self.health
        self.assertIs(h.state, State.HEALTHY)
        h.report_failure("HTTP 500")
        self.assertIs(h.state, State.SUSPECT)
        self.assertTrue(h.usable)
        h.report_success(0.1)
        self.assertIs(h.state, State.HEALTHY)
        for _ in range(3):
            h.report_failure("HTTP 500")
        self.assertIs(h.state, State.DOWN)
        self.assertFalse(h.usable)
        self.assertEqual(h.next_probe_at(), PROBE_FIRST_DELAY)
        self.clock.advance(PROBE_FIRST_DELAY - 0.01)
        self.assertEqual(self.probes, [])
        self.clock.advance(0.01)
        self.assertIs(h.state, State.PROBING)
        self.probes[0].callback(None)
        self.assertIs(h.state, State.HEALTHY)
        self.assertEqual(h.consecutive_failures, 0)

    def test_refused_is_fatal(self) -> None:
        """One fatal failure (connection refused) takes a healthy member straight out."""
        self.health.report_failure("connection refused", fatal=True)
        self.assertIs(self.health.state, State.DOWN)

    def test_probe_backoff(self) -> None:
        """Failed probes wait twice as long each time, up to the cap; jitter stays in bounds."""
        h = self.health
        h.report_failure("refused", fatal=True)
        delays = []
        for i in range(8):
            due = h.next_probe_at()
            assert due is not None
            delays.append(due - self.clock.seconds())
            self.clock.advance(delays[-1])
            self.assertIs(h.state, State.PROBING)
            self.probes[i].errback(ConnectionRefusedError())
            self.assertIs(h.state, State.DOWN)
        self.assertEqual(delays, [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0, 120.0])
        low = Health("m", self.clock, self.probe, jitter=lambda: 0.0).probe_delay(0)
        high = Health("m", self.clock, self.probe, jitter=lambda: 0.999).probe_delay(5)
        self.assertEqual(low, PROBE_FIRST_DELAY * 0.8)
        self.assertLess(high, PROBE_MAX_DELAY * 1.2)
        self.assertGreater(high, 64 * 1.19)

    def test_real_success_while_down(self) -> None:
        """A real request that works while the member is out brings it back, timer cancelled."""
        h = self.health
        h.report_failure("refused", fatal=True)
        h.report_success(0.2)
        self.assertIs(h.state, State.HEALTHY)
        self.assertIsNone(h.next_probe_at())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_late_probe_result_ignored(self) -> None:
        """A probe that answers after a real success changed the state is ignored."""
        h = self.health
        h.report_failure("refused", fatal=True)
        self.clock.advance(PROBE_FIRST_DELAY)
        h.report_success(0.1)
        self.assertIs(h.state, State.HEALTHY)
        self.assertEqual(len(self.probes), 1)  # cancelled; nothing else happens
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_and_start_probing(self) -> None:
        """Stopping cancels timers and probes in flight; starting reschedules a down member."""
        h = self.health
        h.report_failure("refused", fatal=True)
        self.clock.advance(PROBE_FIRST_DELAY)
        h.stop_probing()
        self.assertTrue(self.probes[0].called)  # cancelled
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIs(h.state, State.DOWN)
        h.report_failure("refused", fatal=True)  # still out; nothing scheduled while stopped
        self.assertEqual(self.clock.getDelayedCalls(), [])
        h.start_probing()
        self.assertIsNotNone(h.next_probe_at())

    def test_error_rate_and_latency(self) -> None:
        """The error rate covers the last minute; latency is a moving average."""
        h = self.health
        h.report_success(1.0)
        h.report_failure("x")
        self.assertEqual(h.error_rate(), 0.5)
        h.report_success(2.0)
        self.assertAlmostEqual(h.latency or 0, 1.2)
        self.clock.advance(61)
        self.assertEqual(h.error_rate(), 0.0)
        h.request_started()
        h.request_started()
        h.request_ended()
        self.assertEqual(h.outstanding, 1)


class SelectionTests(SynchronousTestCase):
    def split(self, weights: tuple[float, float], concurrency: int, total: int = 400) -> float:
        """
        Send ``total`` page requests to a group of two members, ``concurrency``
        at a time; return the first member's share.
        """
        members = Members(Clock(), [[("a", weights[0]), ("b", weights[1])]])
        members.add("a", "b")
        for _ in range(total // concurrency):
            ds = [
                Deferred.fromCoroutine(members.fetcher.fetch(PROJECT)) for _ in range(concurrency)
            ]
            members.flush()
            for d in ds:
                self.successResultOf(d)
        a, b = members.pages("a"), members.pages("b")
        self.assertEqual(a + b, total)
        return a / total

    def test_even_split(self) -> None:
        """Two members weighted 1:1 share requests within 10% of even, one at a time or 8."""
        for concurrency, total in ((1, 400), (8, 200)):
            share = self.split((1, 1), concurrency, total)
            self.assertTrue(0.45 <= share <= 0.55, share)

    def test_weighted_split(self) -> None:
        """Weights 3:1 split requests within 10% of 3:1, one at a time or 8."""
        for concurrency, total in ((1, 400), (8, 200)):
            share = self.split((3, 1), concurrency, total)
            self.assertTrue(0.675 <= share <= 0.825, share)

    def test_sequential_requests_interleave(self) -> None:
        """Requests one at a time alternate rather than run in blocks."""
        members = Members(Clock(), [[("a", 1), ("b", 1), ("c", 1)]])
        group = members.pool.groups[0]
        firsts = [members.pool.plan(group)[0].url[7] for _ in range(6)]
        self.assertEqual(firsts, ["a", "b", "c", "a", "b", "c"])

    def test_load_guard(self) -> None:
        """A member with many requests stuck in flight is passed over for the idle one."""
        members = Members(Clock(), [[("a", 1), ("b", 1)]])
        a, b = members.pool.groups[0]
        for _ in range(4):
            a.health.request_started()
        firsts = [members.pool.plan(members.pool.groups[0])[0] for _ in range(4)]
        self.assertEqual(firsts, [b, b, b, b])

    def test_down_members_skipped_unless_all_are(self) -> None:
        """Down members get no traffic; when every member is down, all are tried, best first."""
        members = Members(Clock(), [[("a", 1), ("b", 1), ("c", 1)]])
        a, b, c = members.pool.groups[0]
        a.health.report_failure("refused", fatal=True)
        self.assertNotIn(a, members.pool.plan(members.pool.groups[0]))
        b.health.report_failure("refused", fatal=True)
        c.health.report_failure("refused", fatal=True)
        c.health.report_success()
        c.health.report_failure("refused", fatal=True)
        b.health.report_failure("refused", fatal=True)
        self.assertEqual(members.pool.plan(members.pool.groups[0]), [c, a, b])
        self.assertEqual(members.pool.plan(members.pool.groups[0], last_resort=False), [])


class GroupFailoverTests(SynchronousTestCase):
    def test_dead_broken_and_working_member(self) -> None:
        """
        One member refuses connections, one answers 500, one works: every
        request succeeds, the failing two get no requests after their first
        few failures, and they come back once they recover.
        """
        clock = Clock()
        members = Members(clock, [[("dead", 1), ("bad", 1), ("good", 1)]])
        members.add("dead", "bad", "good")
        members.switch["dead"].target = None
        members.index["bad"].fault = Fault(status=500)
        for _ in range(30):
            result = self.successResultOf(members.fetch())
            self.assertEqual(result.source, url_of("good"))
        self.assertEqual(members.switch["dead"].refused, 1)
        self.assertEqual(members.pages("bad"), 3)
        self.assertEqual(members.pages("good"), 30)
        dead, bad = members.member("dead"), members.member("bad")
        self.assertEqual((dead.health.state, bad.health.state), (State.DOWN, State.DOWN))
        # Probes fail while they are still broken, and back off.
        clock.advance(PROBE_FIRST_DELAY)
        members.flush()
        self.assertEqual(members.index["bad"].count("/simple/", "HEAD"), 1)
        self.assertEqual((dead.health.state, bad.health.state), (State.DOWN, State.DOWN))
        # They recover: the next probes bring them back, and they take traffic again.
        members.switch["dead"].target = members.agents["dead"]
        members.index["bad"].fault = None
        clock.advance(2 * PROBE_FIRST_DELAY)
        members.flush()
        self.assertEqual((dead.health.state, bad.health.state), (State.HEALTHY, State.HEALTHY))
        for _ in range(9):
            self.successResultOf(members.fetch())
        self.assertGreaterEqual(members.pages("dead"), 2)
        self.assertGreaterEqual(members.pages("bad"), 3 + 2)

    def test_hang_times_out_to_next_member(self) -> None:
        """A member that never answers is given up on after its first-byte timeout."""
        clock = Clock()
        members = Members(clock, [[("slow", 1), ("good", 1)]])
        members.add("slow", "good")
        members.index["slow"].fault = Fault(hang=True)
        d = members.fetch()
        self.assertNoResult(d)
        clock.advance(UpstreamConfig("http://x.example/").first_byte_timeout)
        members.flush()
        self.assertEqual(self.successResultOf(d).source, url_of("good"))
        self.assertEqual(members.member("slow").health.state, State.SUSPECT)

    def test_404_passes_to_next_group(self) -> None:
        """A 404 from a healthy group passes on; the page comes from the next group."""
        members = Members(Clock(), [[("a1", 1), ("a2", 1)], [("b", 1)]])
        members.add("b")
        result = self.successResultOf(members.fetch())
        self.assertEqual((result.source, result.group), (url_of("b"), 1))
        self.assertEqual(members.pages("a1") + members.pages("a2"), 1)
        self.assertEqual(members.member("a1").health.state, State.HEALTHY)

    def test_failed_group_skipped(self) -> None:
        """A group whose members all fail is skipped for the next group."""
        members = Members(Clock(), [[("a1", 1), ("a2", 1)], [("b", 1)]])
        members.add("a1", "a2", "b")
        members.index["a1"].fault = Fault(status=503)
        members.index["a2"].fault = Fault(status=502)
        result = self.successResultOf(members.fetch())
        self.assertEqual(result.source, url_of("b"))
        self.assertEqual(members.pages("a1") + members.pages("a2"), 2)

    def test_every_group_404(self) -> None:
        """When every group says 404 the project does not exist."""
        members = Members(Clock(), [[("a", 1)], [("b", 1)]])
        self.failureResultOf(members.fetch(), ProjectNotFound)

    def test_down_group_not_asked_when_another_can_answer(self) -> None:
        """A group entirely out of rotation costs no request while a later group is usable."""
        members = Members(Clock(), [[("a", 1)], [("b", 1)]])
        members.add("a", "b")
        members.member("a").health.report_failure("refused", fatal=True)
        self.assertEqual(self.successResultOf(members.fetch()).source, url_of("b"))
        self.assertEqual(members.pages("a"), 0)


class StickinessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.members = Members(self.clock, [[("a", 1)], [("b", 1)]])
        self.old = self.members.add("a")
        self.members.add("b", version="9.0")
        storage = Storage(self.mktemp(), sync_run)
        storage.prepare()
        self.cache = PageCache(self.members.fetcher, storage, self.clock, ttl=600)

    def get(self, filename: str = "") -> Any:
        """
        The facts of the page and its entry for ``filename``.
        """
        d = Deferred.fromCoroutine(self.cache.entry(PROJECT, filename))
        self.members.flush()
        return self.successResultOf(d)

    def test_cached_project_stays_with_its_group(self) -> None:
        """While its group fails, a cached project is served stale, not from another group."""
        self.assertEqual(self.get()[0].source, url_of("a"))
        self.members.index["a"].fault = Fault(status=500)
        self.clock.advance(601)
        for _ in range(3):
            facts, f = self.get(self.old.filename)
            self.assertEqual(facts.source, url_of("a"))
            self.assertEqual(f.filename, self.old.filename)
        self.assertEqual(self.members.pages("b"), 0)

    def test_without_a_copy_the_next_group_answers(self) -> None:
        """A project never fetched before comes from the next group while the first fails."""
        self.members.index["a"].fault = Fault(status=500)
        self.assertEqual(self.get()[0].source, url_of("b"))

    def test_pool_refuses_to_switch(self) -> None:
        """Asked with validators of the failing group, the pool reports it unavailable."""
        self.members.index["a"].fault = Fault(status=500)
        failure = self.failureResultOf(
            self.members.fetch(Validators(url_of("a"))), UpstreamUnavailable
        )
        self.assertIn("stays with it", str(failure.value))


class FileFailoverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.members = Members(self.clock, [[("a", 1), ("b", 1)]])
        self.dist = self.members.add("a", "b", payload=60_000)
        for index in self.members.index.values():
            index.chunk_size = 4096
            index.throttle = 200_000
        self.storage = Storage(self.mktemp(), sync_run)
        self.storage.prepare()
        usage = SizeAccounting(self.storage, self.clock)
        self.manager = Manager(self.storage, self.clock, usage, idle_timeout=10)
        self.url = "http://a.example/files/" + self.dist.filename

    def start(self) -> Any:
        origins = self.members.pool.origins(url_of("a"), self.url)
        return self.manager.get(
            FileKey("proto-alpha", self.dist.filename),
            origins,
            {"sha256": self.dist.sha256},
            len(self.dist.data),
        )

    def run_until_done(self, download: Download) -> None:
        """
        Run the members and the clock, 50 ms a round, until ``download``
        has ended.
        """
        pump(
            *self.members.agents.values(),
            clock=self.clock,
            advance=0.05,
            until=download.when_done(),
            what="the download to end",
        )

    def stored(self) -> bytes | None:
        return stored(self.storage, "proto-alpha", self.dist.filename)

    def test_origins(self) -> None:
        """The source member comes first, then its group at the same path; down ones last."""
        urls = [o.url for o in self.members.pool.origins(url_of("a"), self.url)]
        self.assertEqual(urls, [self.url, "http://b.example/files/" + self.dist.filename])
        self.members.member("a").health.report_failure("refused", fatal=True)
        urls = [o.url for o in self.members.pool.origins(url_of("a"), self.url)]
        self.assertEqual(urls[0], "http://b.example/files/" + self.dist.filename)

    def test_rebase(self) -> None:
        """Paths under the source's root move under the target's; other hosts keep the path."""
        self.assertEqual(
            rebase(
                "https://one.example/pypi/packages/ab/x-1.0.tar.gz",
                "https://one.example/pypi/simple/",
                "http://two.example:8080/mirror/simple/",
            ),
            "http://two.example:8080/mirror/packages/ab/x-1.0.tar.gz",
        )
        self.assertEqual(
            rebase(
                "https://files.example/packages/ab/x-1.0.tar.gz?x=1#sha256=00",
                "https://one.example/simple/",
                "https://two.example/root/simple/",
            ),
            "https://two.example/packages/ab/x-1.0.tar.gz?x=1",
        )

    def test_reset_resumes_on_the_other_member(self) -> None:
        """A reset half-way resumes with Range from the other member; the file is identical."""
        self.members.index["a"].fault = Fault(drop_after=30_000, times=1)
        download = self.start()
        self.run_until_done(download)
        self.assertTrue(download.is_complete())
        self.assertEqual(self.stored(), self.dist.data)
        b_requests = [r for r in self.members.index["b"].requests if r.path.startswith("/files/")]
        self.assertEqual(len(b_requests), 1)
        assert b_requests[0].range is not None
        self.assertRegex(b_requests[0].range, r"^bytes=[1-9][0-9]*-$")
        a, b = self.members.member("a"), self.members.member("b")
        self.assertEqual((a.health.consecutive_failures, a.health.state), (1, State.SUSPECT))
        self.assertEqual((b.health.outstanding, b.health.state), (0, State.HEALTHY))

    def test_hash_mismatch_blames_the_member(self) -> None:
        """
        Corrupt bytes fail the download (nothing committed), count against
        the member, and the next download of the file starts elsewhere.
        """
        self.members.index["a"].fault = Fault(corrupt=True)
        download = self.start()
        waiting = download.when_done()
        self.run_until_done(download)
        self.successResultOf(waiting)
        failure = download.failure()
        assert failure is not None
        failure.trap(IntegrityError)
        self.assertIsNone(self.stored())
        a = self.members.member("a")
        self.assertEqual(a.health.consecutive_failures, 1)
        self.assertIn("mismatch", a.health.last_error or "")
        again = self.start()
        self.run_until_done(again)
        self.assertTrue(again.is_complete())
        self.assertEqual(self.stored(), self.dist.data)
        self.assertEqual(again.origins[0].url, "http://b.example/files/" + self.dist.filename)
        self.assertEqual(self.members.index["a"].count("/files/"), 1)

    def test_missing_on_a_mirror(self) -> None:
        """A mirror without the file (404) is skipped for the one that has it."""
        self.members.index["a"].remove("proto-alpha", self.dist.filename)
        download = self.start()
        self.run_until_done(download)
        self.assertTrue(download.is_complete())
        self.assertEqual(self.members.member("a").health.state, State.HEALTHY)


class BadAnswerTests(SynchronousTestCase):
    """
    Each bad answer is bounded and counts as a failure of the member that
    gave it; the other member of the group answers instead.
    """

    def members_with(self, resource: Resource | None = None, **fetch_settings: Any) -> Members:
        members = Members(Clock(), [[("bad", 1), ("good", 1)]], **fetch_settings)
        members.add("bad", "good")
        if resource is not None:
            members.agents["bad"] = RequestTraversalAgent(resource)
            members.switch["bad"].target = members.agents["bad"]
        return members

    def assert_member_failed(self, members: Members, reason: str) -> None:
        result = self.successResultOf(members.fetch())
        self.assertEqual(result.source, url_of("good"))
        bad = members.member("bad").health
        self.assertEqual(bad.consecutive_failures, 1)
        self.assertIn(reason, bad.last_error or "")

    def test_garbage_body(self) -> None:
        """A body that is not a page at all."""
        members = self.members_with(Scripted(200, "text/html", b"\x00\x01 binary junk"))
        self.assert_member_failed(members, "not an HTML page")

    def test_page_of_another_project(self) -> None:
        """An HTML page listing another project's files, and a JSON page naming another."""
        html = b'<html><body><a href="/f/other-1.0.tar.gz">other-1.0.tar.gz</a></body></html>'
        members = self.members_with(Scripted(200, "text/html", html))
        self.assert_member_failed(members, "another project")
        body = json.dumps({"meta": {"api-version": "1.0"}, "name": "other", "files": []})
        members = self.members_with(
            Scripted(200, "application/vnd.pypi.simple.v1+json", body.encode())
        )
        self.assert_member_failed(members, "expected")

    def test_html_instead_of_json(self) -> None:
        """HTML where JSON was asked is fine: it is parsed."""
        members = Members(Clock(), [[("html", 1)]])
        members.add("html")
        members.index["html"].formats = {"html"}
        self.assertEqual(len(self.successResultOf(members.fetch()).page.files), 1)  # type: ignore[union-attr]

    def test_redirect_loop(self) -> None:
        """A redirect loop ends at the redirect limit."""
        loop = Scripted(302, "text/plain", b"", location="http://bad.example/simple/proto-alpha/")
        members = self.members_with()
        members.agents["bad"] = RequestTraversalAgent(loop)
        members.switch["bad"].target = RedirectAgent(members.agents["bad"], redirectLimit=5)
        self.assert_member_failed(members, "redirect")

    def test_gigantic_page(self) -> None:
        """A page over the size limit is cut off there."""
        huge = b"<html>" + b"<p>padding</p>" * 1000
        members = self.members_with(Scripted(200, "text/html", huge), max_page_bytes=4096)
        self.assert_member_failed(members, "larger than 4096 bytes")

    def test_gzip_bomb(self) -> None:
        """
        A gzip-encoded page that expands beyond the size limit stops being
        decoded there (a few bytes that would expand to gigabytes).
        """
        bomb = gzip.compress(b"{" + b" " * 1_000_000)
        members = self.members_with(
            Scripted(200, JSON_TYPE, bomb, encoding="gzip"), max_page_bytes=4096
        )
        self.assert_member_failed(members, "expands beyond 4096 bytes")

    def test_broken_gzip(self) -> None:
        """A gzip body cut short, and a Content-Encoding that was never asked for."""
        page = gzip.compress(json_page_of(PROJECT))
        members = self.members_with(Scripted(200, JSON_TYPE, page[:-8], encoding="gzip"))
        self.assert_member_failed(members, "broken gzip encoding")
        members = self.members_with(Scripted(200, JSON_TYPE, page, encoding="br"))
        self.assert_member_failed(members, "unasked-for Content-Encoding 'br'")

    def test_gzip_page(self) -> None:
        """An index that gzips its pages is asked to and understood."""
        members = Members(Clock(), [[("gz", 1)]])
        dist = members.add("gz")
        members.index["gz"].gzip = True
        result = self.successResultOf(members.fetch())
        assert result.page is not None
        self.assertEqual([f.filename for f in result.page.files], [dist.filename])
        self.assertIn("gzip", members.index["gz"].requests[-1].accept_encoding or "")

    def test_json_labelled_html(self) -> None:
        """A JSON page whose Content-Type says HTML is read as the JSON it is."""
        members = Members(Clock(), [[("odd", 1)]])
        members.agents["odd"] = RequestTraversalAgent(
            Scripted(200, "text/html", b"\n " + json_page_of(PROJECT))
        )
        members.switch["odd"].target = members.agents["odd"]
        result = self.successResultOf(members.fetch())
        assert result.page is not None
        self.assertEqual([f.filename for f in result.page.files], [ONE_WHEEL])

    def test_dropped_entries_logged_once(self) -> None:
        """
        A page whose every other entry is unusable is served with the rest,
        and says so in one log line, however many were dropped.
        """
        entries = [{"filename": f"../evil-{i}.tar.gz", "url": "/x"} for i in range(200)]
        body = json_page_of(PROJECT, extra=entries)
        members = Members(Clock(), [[("odd", 1)]])
        members.agents["odd"] = RequestTraversalAgent(Scripted(200, JSON_TYPE, body))
        members.switch["odd"].target = members.agents["odd"]
        with capturedLogs() as events:
            result = self.successResultOf(members.fetch())
        assert result.page is not None
        self.assertEqual(len(result.page.files), 1)
        said = [e for e in events if e.get("project") == PROJECT and "warnings" in e]
        self.assertEqual(len(said), 1)
        self.assertIn(f"and {200 - MAX_WARNINGS} more like these", said[0]["warnings"])

    def test_dropped_entries_said_once_per_file(self) -> None:
        """
        The same unusable entry is not said again at every refresh of the
        page; a new one is, alone.
        """
        bad = {"filename": "../evil-1.tar.gz", "url": "/x"}
        members = Members(Clock(), [[("odd", 1)]])
        said: list[str] = []
        for extra in ([bad], [bad], [bad, {"filename": "../evil-2.tar.gz", "url": "/y"}]):
            script = Scripted(200, JSON_TYPE, json_page_of(PROJECT, extra=extra))
            members.agents["odd"] = members.switch["odd"].target = RequestTraversalAgent(script)
            with capturedLogs() as events:
                self.successResultOf(members.fetch())
            said += [e["warnings"] for e in events if "warnings" in e]
        self.assertEqual(said, ["dropped '../evil-1.tar.gz': unsafe file name",
                                "dropped '../evil-2.tar.gz': unsafe file name"])  # fmt: skip

    def test_slow_drip(self) -> None:
        """A body trickling in just fast enough to dodge the idle timeout hits the total bound."""
        members = self.members_with(page_timeout=5.0)
        members.index["bad"].throttle = 20
        members.index["bad"].chunk_size = 10
        d = Deferred.fromCoroutine(members.fetcher.fetch(PROJECT))
        pump(
            *members.agents.values(),
            clock=members.clock,
            advance=0.5,
            until=d,
            what="the page from the good member",
        )
        self.assertEqual(self.successResultOf(d).source, url_of("good"))
        self.assertIn("within 5s", members.member("bad").health.last_error or "")


class GunzipStreamTests(SynchronousTestCase):
    def test_streamed_whole(self) -> None:
        """A gzip body fed in any chunks comes out whole."""
        data = json_page_of(PROJECT) * 50
        packed = gzip.compress(data)
        stream = GunzipStream()
        out = b"".join(stream.feed(packed[i : i + 7]) for i in range(0, len(packed), 7))
        stream.close()
        self.assertEqual(out, data)

    def test_bomb_refused_before_it_expands(self) -> None:
        packed = gzip.compress(b"\0" * 10_000_000)
        with self.assertRaisesRegex(BodyTooLarge, "100-fold"):
            GunzipStream().feed(packed)

    def test_cut_short_and_trailing_data(self) -> None:
        packed = gzip.compress(b"x" * 1000)
        stream = GunzipStream()
        stream.feed(packed[:-4])
        with self.assertRaisesRegex(FetchError, "cut short"):
            stream.close()
        stream = GunzipStream()
        stream.feed(packed)
        with self.assertRaisesRegex(FetchError, "after its end"):
            stream.feed(b"more")


class HealthResourceTests(SynchronousTestCase):
    def test_report_and_status(self) -> None:
        """/health lists every member's state and numbers; 503 once no group is usable."""
        clock = Clock()
        index = FakeIndex(clock)
        agents = {"a": SwitchAgent(RequestTraversalAgent(index.resource())), "b": SwitchAgent()}
        config = Config(
            upstreams=((UpstreamConfig(url_of("a"), weight=2), UpstreamConfig(url_of("b"))),),
            storage=self.mktemp(),
        )
        storage = Storage(config.storage, sync_run)
        storage.prepare()
        proxy = build_proxy(config, clock, storage, lambda cfg: agents[cfg.url[7]])
        client = StubTreq(RootResource(proxy))

        def health() -> tuple[int, Any]:
            d = client.get("http://proxy.example/health")
            response = self.successResultOf(d)
            return response.code, json.loads(self.successResultOf(client.content(response)))

        a, b = proxy.pool.members()
        a.health.report_success(0.25)
        b.health.report_failure("connection refused", fatal=True)
        code, body = health()
        self.assertEqual(code, 200)
        report = {u["url"]: u for u in body["upstreams"]}
        self.assertEqual(report[url_of("a")]["state"], "healthy")
        self.assertEqual(report[url_of("a")]["latency-ms"], 250.0)
        self.assertEqual(report[url_of("a")]["weight"], 2)
        self.assertEqual(report[url_of("b")]["state"], "down")
        self.assertEqual(report[url_of("b")]["error-rate"], 1.0)
        next_probe = report[url_of("b")]["next-probe-in"]
        self.assertTrue(PROBE_FIRST_DELAY * 0.8 <= next_probe <= PROBE_FIRST_DELAY * 1.2)
        self.assertEqual(report[url_of("b")]["group"], 1)
        a.health.report_failure("connection refused", fatal=True)
        code, body = health()
        self.assertEqual((code, body["status"]), (503, "degraded"))


class ConfigFileTests(SynchronousTestCase):
    def test_tables_groups_weights(self) -> None:
        """[[upstream]] tables with group, weight and timeouts; groups rank by first appearance."""
        groups = parse_upstreams(
            [
                {"url": "https://a.example/simple/", "group": "main", "weight": 3},
                "https://solo.example/simple/",
                {"url": "https://b.example/simple", "group": "main", "connect-timeout": 2},
                {"url": "https://c.example/simple/", "group": 2, "idle-timeout": 7.5},
                {"url": "https://d.example/simple/", "first-byte-timeout": 4},
            ]
        )
        self.assertEqual(
            [[(u.url[8], u.weight) for u in g] for g in groups],
            [[("a", 3.0), ("b", 1.0)], [("s", 1.0)], [("c", 1.0)], [("d", 1.0)]],
        )
        self.assertEqual(groups[0][1].connect_timeout, 2.0)
        self.assertEqual(groups[2][0].idle_timeout, 7.5)
        self.assertEqual(groups[3][0].first_byte_timeout, 4.0)

    def test_toml_and_command_line(self) -> None:
        """The TOML form builds a Config; --upstream replaces the file's upstreams."""
        import tomllib

        settings = tomllib.loads(
            '[[upstream]]\nurl = "https://a.example/simple/"\ngroup = 1\nweight = 3\n'
            '[[upstream]]\nurl = "https://b.example/simple/"\ngroup = 1\n'
        )
        config = build_config(settings)
        self.assertEqual(
            config.describe(),
            "[https://a.example/simple/ (weight 3) + https://b.example/simple/ (weight 1)]",
        )
        config = build_config(settings, ["https://cli.example/simple/"])
        self.assertEqual(config.describe(), "[https://cli.example/simple/]")
        self.assertEqual(build_config({"upstream": "https://x.example/simple/"}).upstreams[0][0].url,
                         "https://x.example/simple/")  # fmt: skip

    def test_bad_tables(self) -> None:
        """Bad tables are refused with the URL or key named."""
        for table, words in (
            ({"url": "ftp://a.example/"}, "ftp://a.example/"),
            ({"url": "https://a.example/", "weight": 0}, "https://a.example/"),
            ({"url": "https://a.example/", "weight": "heavy"}, "weight"),
            ({"url": "https://a.example/", "colour": 1}, "colour"),
            ({"url": "https://a.example/", "group": True}, "group"),
            ({"weight": 1}, "url"),
        ):
            with self.assertRaises(ConfigError) as e:
                parse_upstreams([table])
            self.assertIn(words, str(e.exception))
        with self.assertRaises(ConfigError) as e:
            build_config({"upstream": ["https://a.example/simple/", "https://a.example/simple"]})
        self.assertIn("twice", str(e.exception))


class UpstreamProxyTests(SynchronousTestCase):
    def test_http_upstreams_go_through_the_proxy(self) -> None:
        """With --upstream-proxy, requests connect to the proxy, not to the upstream."""
        from twisted.internet.testing import MemoryReactorClock
        from twisted.web.client import HTTPConnectionPool

        from proxypypi.upstream.agents import upstream_agents

        reactor = MemoryReactorClock()
        agent_for = upstream_agents(
            reactor, HTTPConnectionPool(reactor), "http://proxy.example:8080"
        )
        agent_for(UpstreamConfig("http://mirror.example/simple/")).request(
            b"GET", b"http://mirror.example/simple/x/"
        )
        reactor.advance(0)
        # (the memory reactor resolves every name to 127.0.0.1)
        self.assertEqual([c[1] for c in reactor.tcpClients], [8080])

    def connects_to(self, url: str, proxy: str | None = None) -> list[int]:
        """
        The ports an agent from the service's factory connects to for ``url``
        (the memory reactor resolves every name to 127.0.0.1).
        """
        from twisted.internet.testing import MemoryReactorClock
        from twisted.web.client import HTTPConnectionPool

        from proxypypi.upstream.agents import upstream_agents

        reactor = MemoryReactorClock()
        agent_for = upstream_agents(
            reactor, HTTPConnectionPool(reactor), proxy, proxy_from_environment=True
        )
        agent_for(UpstreamConfig(url)).request(b"GET", (url + "x/").encode())
        reactor.advance(0)
        return [c[1] for c in reactor.tcpClients]

    def environment(self, **variables: str) -> None:
        for name, value in variables.items():
            self.patch(os, "environ", {**os.environ, name: value})

    def test_environment_proxy(self) -> None:
        """Without --upstream-proxy, the environment's proxy for the scheme is used."""
        self.environment(HTTP_PROXY="http://proxy.example:8080")
        self.assertEqual(self.connects_to("http://mirror.example/simple/"), [8080])

    def test_environment_no_proxy(self) -> None:
        """A host that no_proxy exempts is reached directly."""
        self.environment(http_proxy="http://proxy.example:8080", no_proxy="localhost,.example")
        self.assertEqual(self.connects_to("http://mirror.example/simple/"), [80])

    def test_explicit_proxy_wins(self) -> None:
        """--upstream-proxy overrides the environment, no_proxy included."""
        self.environment(HTTP_PROXY="http://env.example:8080", NO_PROXY="mirror.example")
        self.assertEqual(
            self.connects_to("http://mirror.example/simple/", "http://proxy.example:3128"),
            [3128],
        )

    def test_environment_proxy_by_scheme(self) -> None:
        """https upstreams use https_proxy, else all_proxy; http_proxy is for http only."""
        from proxypypi.config.urls import environment_proxy

        self.environment(http_proxy="http://plain.example:1")
        self.assertIsNone(environment_proxy("https://mirror.example/simple/"))
        self.environment(all_proxy="http://all.example:2")
        self.assertEqual(
            environment_proxy("https://mirror.example/simple/"), "http://all.example:2"
        )
        self.environment(HTTPS_PROXY="http://tls.example:3")
        self.assertEqual(
            environment_proxy("https://mirror.example/simple/"), "http://tls.example:3"
        )
        self.assertEqual(
            environment_proxy("http://mirror.example/simple/"), "http://plain.example:1"
        )

    def test_environment_proxy_unusable(self) -> None:
        """A proxy that is not http:// is refused at start, naming the variable and the fix."""
        from proxypypi.config.urls import environment_proxy

        self.environment(https_proxy="socks5://proxy.example:1080")
        with self.assertRaises(ConfigError) as e:
            environment_proxy("https://mirror.example/simple/")
        self.assertIn("https_proxy", str(e.exception))
        self.assertIn("--upstream-proxy", str(e.exception))

    def test_https_with_proxy_accepted(self) -> None:
        """https upstreams may go through a proxy (a CONNECT tunnel); only http proxies do."""
        config = build_config(
            {"upstream-proxy": "http://proxy.example:3128"}, ["https://a.example/simple/"]
        )
        self.assertEqual(config.upstream_proxy, "http://proxy.example:3128")
        with self.assertRaises(ConfigError):
            build_config({"upstream-proxy": "socks5://proxy.example"}, ["http://a.example/"])


class ClassificationTests(SynchronousTestCase):
    def test_unreachable(self) -> None:
        """Refused connections, unknown hosts and TLS failures take a member out at once."""
        from OpenSSL import SSL
        from twisted.internet.error import DNSLookupError
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseNeverReceived

        from proxypypi.upstream.fetch import UpstreamTimeout, is_unreachable

        tls = ResponseNeverReceived([Failure(SSL.Error("certificate verify failed"))])
        for exc in (ConnectionRefusedError(), DNSLookupError("x"), tls):
            self.assertTrue(is_unreachable(Failure(exc)), exc)
        for exc in (UpstreamTimeout("slow"), ResponseNeverReceived([Failure(ValueError())])):
            self.assertFalse(is_unreachable(Failure(exc)), exc)

    def test_probing_follows_the_service(self) -> None:
        """
        The service checks every member once at start, probes the ones out
        of rotation while it runs, and cancels the probes when it stops.
        """
        from proxypypi.service.lifecycle import HealthProbes

        clock = Clock()
        members = Members(clock, [[("a", 1), ("b", 1)]])
        members.switch["a"].target = None
        service = HealthProbes(members.pool)
        health = members.member("a").health
        service.startService()
        members.flush()
        self.assertEqual(health.state, State.DOWN)
        self.assertEqual(members.index["b"].count("/simple/", "HEAD"), 1)
        self.assertEqual(members.member("b").health.state, State.HEALTHY)
        self.assertIsNotNone(health.next_probe_at())
        service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])
        service.startService()
        self.assertIsNotNone(health.next_probe_at())


class ParseOffReactorTests(SynchronousTestCase):
    def test_large_pages_parsed_by_the_runner(self) -> None:
        """Pages past the size threshold are parsed through parse_in; small ones inline."""
        clock = Clock()
        index = FakeIndex(clock)
        index.add(make_wheel("proto-big", "1.0"))
        index.add(make_wheel("proto-small", "1.0"))
        agent = RequestTraversalAgent(index.resource())
        handed: list[object] = []

        def runner(f: Any, *args: Any) -> Deferred[Any]:
            handed.append(f)
            d: Deferred[Any] = Deferred()
            clock.callLater(0, lambda: d.callback(f(*args)))
            return d

        pool = Pool.from_config(
            [[UpstreamConfig("http://upstream.example/simple/")]], lambda cfg: agent, clock
        )
        small = Deferred.fromCoroutine(
            PageFetcher(pool, parse_in=runner).fetch("proto-small")  # type: ignore[arg-type]
        )
        agent.flush()
        self.assertEqual(self.successResultOf(small).page.name, "proto-small")  # type: ignore[union-attr]
        self.assertEqual(handed, [])
        big = Deferred.fromCoroutine(
            PageFetcher(pool, parse_in=runner, thread_threshold=10).fetch(
                "proto-big"  # type: ignore[arg-type]
            )
        )
        agent.flush()
        self.assertNoResult(big)
        clock.advance(0)
        self.assertEqual(self.successResultOf(big).page.name, "proto-big")  # type: ignore[union-attr]
        self.assertEqual(len(handed), 1)

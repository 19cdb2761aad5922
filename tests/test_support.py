"""
`tests.support.pumping.pump`, which the in-memory tests lean on to wait:
it stops as soon as the condition holds, fails naming what it waited for,
tells when nothing more happens, and the treq internals it reads are still
there.
"""

from __future__ import annotations

from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from tests.support.pumping import QUIET, pump


class Later(Resource):
    """
    Answers ``later`` seconds after the request, on ``clock``.
    """

    isLeaf = True

    def __init__(self, clock: Clock, later: float) -> None:
        super().__init__()
        self.clock = clock
        self.later = later

    def render_GET(self, request: Request) -> int:
        def answer() -> None:
            request.write(b"done")
            request.finish()

        self.clock.callLater(self.later, answer)
        return NOT_DONE_YET


class PumpTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.agent = RequestTraversalAgent(Later(self.clock, 1.0))

    def test_until_a_deferred_fires(self) -> None:
        """Rounds run until the Deferred fires, and no further."""
        d = self.agent.request(b"GET", b"http://example.invalid/")
        pump(self.agent, clock=self.clock, advance=0.25, until=d, what="the answer")
        self.assertEqual(self.successResultOf(d).code, 200)
        # treq's agent delivers the request as it connects: the answer came
        # 1 s later, and no round ran after it.
        self.assertEqual(self.clock.seconds(), 1.0)

    def test_condition_already_true(self) -> None:
        """A condition that holds already costs no round."""
        pump(self.agent, clock=self.clock, advance=1.0, until=lambda: True, what="nothing")
        self.assertEqual(self.clock.seconds(), 0.0)

    def test_bound(self) -> None:
        """When the rounds run out, the test fails naming what it waited for."""
        d = self.agent.request(b"GET", b"http://example.invalid/")
        with self.assertRaises(AssertionError) as e:
            pump(self.agent, clock=self.clock, advance=0.25, until=d, what="the answer", rounds=3)
        self.assertEqual(str(e.exception), "gave up after 3 rounds waiting for the answer")
        self.assertNoResult(d)

    def test_quiet(self) -> None:
        """QUIET stops once a round moved nothing and ran no call: here, until the answer is due."""
        d = self.agent.request(b"GET", b"http://example.invalid/")
        pump(self.agent, clock=self.clock, until=QUIET, what="the request to arrive")
        self.assertNoResult(d)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.0)
        pump(self.agent, clock=self.clock, until=QUIET, what="the answer")
        self.successResultOf(d)

    def test_quiet_never_comes(self) -> None:
        """Something that keeps happening makes QUIET fail at the bound."""

        def again() -> None:
            self.clock.callLater(1, again)

        again()
        with self.assertRaises(AssertionError):
            pump(clock=self.clock, advance=1, until=QUIET, what="an end", rounds=5)

    def test_step(self) -> None:
        """The step runs once a round, after the clock moved."""
        seen: list[float] = []
        pump(
            clock=self.clock,
            advance=2.0,
            step=lambda: seen.append(self.clock.seconds()),
            until=lambda: len(seen) == 3,
            what="three steps",
        )
        self.assertEqual(seen, [2.0, 4.0, 6.0])


class TreqInternalsTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        StubTreq keeps its agent in ``_agent``, and the agent the IOPump of
        each connection in ``_pumps``, whose ``flush`` tells whether it
        moved anything.
        """
        clock = Clock()
        stub: Any = StubTreq(Later(clock, 1.0))
        self.assertIsInstance(stub._agent, RequestTraversalAgent)
        d = stub.get("http://example.invalid/")
        (connection,) = stub._agent._pumps
        self.assertFalse(connection.flush())
        clock.advance(1.0)
        self.assertTrue(connection.flush())
        self.assertFalse(connection.flush())
        self.assertEqual(self.successResultOf(d).code, 200)

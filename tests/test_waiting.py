"""
One operation, many callers: `Waiters` and `SingleFlight`.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.waiting import SingleFlight, Waiters


class WaitersTests(SynchronousTestCase):
    def test_every_caller_gets_the_outcome(self) -> None:
        """Callers before and after the outcome get it, each in a Deferred of its own."""
        waiters: Waiters[str] = Waiters()
        early = [waiters.wait(), waiters.wait()]
        self.assertFalse(waiters.fired)
        for d in early:
            self.assertNoResult(d)
        waiters.fire("done")
        self.assertTrue(waiters.fired)
        self.assertEqual([self.successResultOf(d) for d in early], ["done", "done"])
        self.assertEqual(self.successResultOf(waiters.wait()), "done")
        self.assertIsNot(early[0], early[1])

    def test_failure_and_first_outcome_wins(self) -> None:
        """A failure reaches every caller; a second outcome is ignored."""
        waiters: Waiters[str] = Waiters()
        d = waiters.wait()
        waiters.fire(Failure(ValueError("no")))
        waiters.fire("late")
        self.failureResultOf(d, ValueError)
        self.failureResultOf(waiters.wait(), ValueError)

    def test_cancelled_caller_leaves_the_others(self) -> None:
        """A caller cancelling its wait changes nothing for the others."""
        waiters: Waiters[int] = Waiters()
        gone, kept = waiters.wait(), waiters.wait()
        gone.cancel()
        self.failureResultOf(gone)
        waiters.fire(7)
        self.assertEqual(self.successResultOf(kept), 7)


class SingleFlightTests(SynchronousTestCase):
    def test_one_operation_per_key(self) -> None:
        """Callers of a key in flight share its operation; once it lands, the next starts anew."""
        flight: SingleFlight[str, int] = SingleFlight()
        started: list[Deferred[int]] = []

        def operation() -> Deferred[int]:
            d: Deferred[int] = Deferred()
            started.append(d)
            return d

        first, second = flight.run("a", operation), flight.run("a", operation)
        other = flight.run("b", operation)
        self.assertEqual(len(started), 2)
        self.assertTrue(flight.running("a"))
        started[0].callback(1)
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (1, 1))
        self.assertFalse(flight.running("a"))
        self.assertNoResult(other)
        again = flight.run("a", operation)
        self.assertEqual(len(started), 3)
        started[2].errback(Failure(KeyError("gone")))
        self.failureResultOf(again, KeyError)
        started[1].callback(2)
        self.assertEqual(self.successResultOf(other), 2)

    def test_synchronous_operation(self) -> None:
        """An operation that is done at once leaves nothing in flight."""
        flight: SingleFlight[str, str] = SingleFlight()
        d = flight.run("a", lambda: Deferred.fromCoroutine(_answer()))
        self.assertEqual(self.successResultOf(d), "now")
        self.assertFalse(flight.running("a"))


async def _answer() -> str:
    return "now"

"""
Driving in-memory connections and a Clock until what the test waits for
has happened.

In memory nothing moves by itself: treq's in-memory agents carry bytes only
when flushed, and a `Clock` runs its calls only when advanced.  `pump` does
both, round after round, until a condition holds, and fails the test with
what it waited for when a bound on the rounds is reached.  So no test
depends on a magic number of rounds being enough, and a regression that
leaves something pending fails with a message instead of passing by luck
or failing further on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

#: Rounds `pump` runs at most, unless told otherwise: far more than any
#: test needs, few enough to fail at once.
ROUNDS = 200


class Quiet:
    """
    The type of `QUIET`.
    """

    def __repr__(self) -> str:
        return "QUIET"


#: Pump until nothing more happens: until a round in which no call of the
#: clock came due and no connection moved a byte or a close.  What is left
#: waits for the test, or for a later time than the round's ``advance``.
QUIET = Quiet()

#: What `pump` waits for: a Deferred (holds once its result is there, not
#: while it waits on another Deferred), a callable (holds when it returns
#: something true), or `QUIET`.
Condition = Deferred[Any] | Callable[[], object] | Quiet


def pump(
    *connections: RequestTraversalAgent | StubTreq,
    until: Condition,
    what: str,
    clock: Clock | None = None,
    advance: float = 0.0,
    step: Callable[[], object] | None = None,
    rounds: int = ROUNDS,
) -> None:
    """
    Run rounds until ``until`` holds, ``rounds`` of them at most.

    A round advances ``clock`` by ``advance`` seconds (running every call
    that comes due, zero-delay ones included), flushes each of the
    ``connections`` (treq's in-memory agents, or `StubTreq` clients), then
    runs ``step``, if any.  A condition that holds already needs no round.
    Each round ends by itself (a flush stops once nothing moves, and
    ``twisted.test.iosim.IOPump.flush`` gives up after 1000 exchanges), and
    the time pumped is bounded too: ``rounds * advance`` seconds of
    ``clock`` at most.

    :param what: what the test waits for, named in the failure.
    :raises AssertionError: when the rounds run out before ``until`` holds.
    """
    if not isinstance(until, Quiet) and _holds(until):
        return
    for _ in range(rounds):
        active = _round(connections, clock, advance, step)
        if (not active) if isinstance(until, Quiet) else _holds(until):
            return
    raise AssertionError(f"gave up after {rounds} rounds waiting for {what}")


def _holds(condition: Deferred[Any] | Callable[[], object]) -> bool:
    if isinstance(condition, Deferred):
        return condition.called and not condition.paused
    return bool(condition())


def _round(
    connections: tuple[RequestTraversalAgent | StubTreq, ...],
    clock: Clock | None,
    advance: float,
    step: Callable[[], object] | None,
) -> bool:
    """
    One round of `pump`.

    :returns: whether anything happened that the round can see: a call of
        the clock came due, or a connection moved something.
    """
    due = False
    if clock is not None:
        now = clock.seconds()
        due = any(call.getTime() <= now + advance for call in clock.getDelayedCalls())
        clock.advance(advance)
    moved = [_flush(connection) for connection in connections]
    if step is not None:
        step()
    return due or any(moved)


def _flush(connection: RequestTraversalAgent | StubTreq) -> bool:
    """
    Flush one in-memory agent.

    treq's ``flush`` does not tell whether it moved anything, so the
    `twisted.test.iosim.IOPump` of each of its connections is flushed here
    first, each telling whether it moved bytes or a close; treq's own
    ``flush`` then forgets the connections that are closed.  (``_agent``
    and ``_pumps`` are treq's own; ``tests/test_support.py`` checks both by
    name.)

    :returns: whether anything moved.
    """
    agent = connection._agent if isinstance(connection, StubTreq) else connection
    moved = False
    for connection_pump in list(agent._pumps):
        moved = connection_pump.flush() or moved
    agent.flush()
    return moved

# -*- test-case-name: tests.test_upstream -*-
"""
The health of one upstream member, as a small state machine.

Every member is in one of four states::

    healthy --failure--> suspect --N failures in a row--> down
       ^                    |                               |
       +----success---------+                  (backoff + jitter)
       ^                                                    v
       +------------------probe succeeds------------- probing
                                   probe fails: back to down, longer wait

A refused connection, an unknown host name or a TLS failure take a member
straight to ``down``: those do not get better on the next request.  While a
member is ``down`` (or being probed) the pool sends it no traffic unless
every member of its group is out; a real request that succeeds then brings
it back at once, as a probe would.

The machine is built with automat's ``TypeMachineBuilder``: the transition
table is declared in one place and is total (every input has an answer in
every state, most of them "ignore"), so a late probe result or a stale timer
can never raise.  The decision *which* failure input to send (``failed`` or
``taken_out``) is made by `Health` from its counters, because automat
transitions do not branch on data.

Besides the state, `Health` keeps what ``/health`` and the load balancer
read: requests in flight, an error rate over a sliding window, and an
exponentially weighted moving average of the latency to the first byte.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable
from typing import Protocol

import attrs
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxypypi.upstream.fetch import describe_failure, is_unreachable

#: Consecutive failures after which a member is taken out of rotation.
DOWN_AFTER = 3

#: Seconds before the first probe of a member that went down; doubled after
#: every failed probe, up to `PROBE_MAX_DELAY`.
PROBE_FIRST_DELAY = 2.0
PROBE_MAX_DELAY = 120.0

#: Each probe delay is varied by up to this fraction either way, so that
#: several proxies (or members) do not probe in lockstep.
PROBE_JITTER = 0.2

#: Seconds of request outcomes the error rate is computed over.
ERROR_WINDOW = 60.0

#: Most outcomes kept for the error rate, whatever the traffic.
ERROR_WINDOW_MAX = 500

#: Weight of the newest sample in the latency average.
LATENCY_ALPHA = 0.2


class State(enum.Enum):
    """
    Where a member stands; the value is what ``/health`` shows.
    """

    HEALTHY = "healthy"
    SUSPECT = "suspect"
    DOWN = "down"
    PROBING = "probing"

    @property
    def usable(self) -> bool:
        """
        Whether the member takes traffic in the normal course.
        """
        return self in (State.HEALTHY, State.SUSPECT)


class _Inputs(Protocol):
    """
    What can happen to a member.
    """

    def succeeded(self) -> None:
        """A real request worked."""

    def failed(self) -> None:
        """A real request failed, not (yet) enough to take it out."""

    def taken_out(self) -> None:
        """Too many failures in a row, or one that will not get better."""

    def probe_due(self) -> None:
        """The wait before the next probe is over."""

    def probe_succeeded(self) -> None:
        """The member answered a probe."""

    def probe_failed(self) -> None:
        """The member did not answer a probe."""

    def current(self) -> State:
        """The state, for readers."""


@attrs.define(eq=False)
class Health:
    """
    The health of one member, fed by its requests and probes.

    :ivar name: how logs name the member (its URL).
    :ivar clock: time for the window, the latency and the probe timers.
    :ivar probe: sends one cheap request to the member; the Deferred fails
        when the member did not answer properly.  Called only while the
        member is down.
    :ivar down_after: consecutive failures that take the member out.
    :ivar jitter: returns a number in [0, 1) for the probe jitter (tests
        make it constant).
    :ivar outstanding: requests to this member in flight now.
    :ivar consecutive_failures: failures since the last success.
    :ivar latency: the moving average of seconds to the first byte, or
        ``None`` before the first success.
    """

    name: str
    clock: IReactorTime
    probe: Callable[[], Deferred[None]]
    down_after: int = DOWN_AFTER
    jitter: Callable[[], float] = random.random
    #: Probe delays are this many times longer: with N worker processes
    #: each probing, a member down is still probed as often as by one.
    probe_spread: int = 1
    log = Logger()

    outstanding: int = 0
    consecutive_failures: int = 0
    latency: float | None = None
    last_error: str | None = None
    _outcomes: deque[tuple[float, bool]] = attrs.field(
        factory=lambda: deque(maxlen=ERROR_WINDOW_MAX)
    )
    _probes_failed: int = 0
    _timer: IDelayedCall | None = None
    _probe_running: Deferred[None] | None = None
    _check_running: Deferred[None] | None = None
    _probing_enabled: bool = True
    _machine: _Inputs = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._machine = _HealthMachine(self)

    # Reading

    @property
    def state(self) -> State:
        return self._machine.current()

    @property
    def usable(self) -> bool:
        """
        Whether the member takes traffic in the normal course.
        """
        return self.state.usable

    def error_rate(self) -> float:
        """
        The share of failed requests (and probes) over the last
        `ERROR_WINDOW` seconds; 0 when there were none.
        """
        self._prune()
        if not self._outcomes:
            return 0.0
        return sum(1 for _, ok in self._outcomes if not ok) / len(self._outcomes)

    def _prune(self) -> None:
        horizon = self.clock.seconds() - ERROR_WINDOW
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._outcomes.popleft()

    # What requests report (the shape proxypypi.cache.downloads.OriginHealth names)

    def request_started(self) -> None:
        self.outstanding += 1

    def request_ended(self) -> None:
        self.outstanding = max(0, self.outstanding - 1)

    def report_success(self, latency: float | None = None) -> None:
        """
        A request worked; ``latency`` is its time to the first byte.
        """
        if latency is not None:
            latency = max(0.0, latency)
            if self.latency is None:
                self.latency = latency
            else:
                self.latency += LATENCY_ALPHA * (latency - self.latency)
        self._outcomes.append((self.clock.seconds(), True))
        self.consecutive_failures = 0
        self._machine.succeeded()

    def report_failure(self, reason: str, fatal: bool = False) -> None:
        """
        A request failed because of this member.

        :param fatal: the failure will not get better on the next request
            (connection refused, unknown host, TLS failure): take the member
            out at once.
        """
        self._outcomes.append((self.clock.seconds(), False))
        self.consecutive_failures += 1
        self.last_error = reason
        if fatal or self.consecutive_failures >= self.down_after:
            self._machine.taken_out()
        else:
            self._machine.failed()

    # Probing life cycle (driven by the pool's service)

    def start_probing(self) -> None:
        """
        Allow probes; a member already down gets its first one scheduled.
        """
        self._probing_enabled = True
        if self.state is State.DOWN and self._timer is None:
            self._schedule_probe()

    def check_now(self) -> None:
        """
        Send one probe now and count its outcome as a real request's (the
        service does this once at start-up, so that ``/health`` and the
        first requests already know of a member that is not there).
        """
        if self._check_running is not None or not self.state.usable:
            return
        started = self.clock.seconds()
        d = maybeDeferred(self.probe)
        self._check_running = d

        def succeeded(_: object) -> None:
            if self._check_running is d:
                self._check_running = None
                self.report_success(self.clock.seconds() - started)

        def failed(failure: Failure) -> None:
            if self._check_running is d:
                self._check_running = None
                self.report_failure(describe_failure(failure), fatal=is_unreachable(failure))

        d.addCallbacks(succeeded, failed)

    def stop_probing(self) -> None:
        """
        Cancel the pending probe timer and any probe in flight; schedule no
        more until `start_probing`.
        """
        self._probing_enabled = False
        self._cancel_timer()
        check, self._check_running = self._check_running, None
        if check is not None:
            check.cancel()
        running, self._probe_running = self._probe_running, None
        if running is not None:
            running.cancel()
            # An unfinished probe proved nothing: back to down, so that
            # start_probing schedules the next one.
            self._machine.probe_failed()

    def next_probe_at(self) -> float | None:
        """
        When the next probe is due, or ``None`` when none is scheduled.
        """
        if self._timer is None or not self._timer.active():
            return None
        return self._timer.getTime()

    # Behaviour of the transitions (called by the machine only)

    def _went_down(self) -> None:
        self.log.warn(
            "upstream {upstream} taken out of rotation after {failures} failure(s): {reason}",
            upstream=self.name,
            failures=self.consecutive_failures,
            reason=self.last_error,
        )
        self._schedule_probe()

    def _probe_missed(self) -> None:
        self._probes_failed += 1
        self._schedule_probe()

    def _recovered(self) -> None:
        self._cancel_timer()
        running, self._probe_running = self._probe_running, None
        if running is not None:
            running.cancel()
        self._probes_failed = 0
        self.consecutive_failures = 0
        self.log.info("upstream {upstream} is back in rotation", upstream=self.name)

    def _schedule_probe(self) -> None:
        self._cancel_timer()
        if not self._probing_enabled:
            return
        delay = self.probe_delay(self._probes_failed)
        self._timer = self.clock.callLater(delay, self._probe_timer_fired)

    def probe_delay(self, failed_probes: int) -> float:
        """
        Seconds to wait before the next probe after ``failed_probes`` failed
        ones: exponential, capped, with jitter.
        """
        base = min(PROBE_MAX_DELAY, PROBE_FIRST_DELAY * 2.0 ** min(failed_probes, 32))
        return base * self.probe_spread * (1.0 + PROBE_JITTER * (2.0 * self.jitter() - 1.0))

    def _probe_timer_fired(self) -> None:
        self._timer = None
        self._machine.probe_due()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _send_probe(self) -> None:
        # A probe that cannot even start is a failed probe.
        d = maybeDeferred(self.probe)
        self._probe_running = d

        def succeeded(_: object) -> None:
            if self._probe_running is d:
                self._probe_running = None
                self._outcomes.append((self.clock.seconds(), True))
                self._machine.probe_succeeded()

        def failed(failure: Failure) -> None:
            if self._probe_running is d:
                self._probe_running = None
                self._outcomes.append((self.clock.seconds(), False))
                self.last_error = describe_failure(failure)
                self.log.info(
                    "probe of {upstream} failed: {reason}",
                    upstream=self.name,
                    reason=self.last_error,
                )
                self._machine.probe_failed()

        d.addCallbacks(succeeded, failed)


# The transition table.

_builder = TypeMachineBuilder(_Inputs, Health)
_healthy = _builder.state("healthy")
_suspect = _builder.state("suspect")
_down = _builder.state("down")
_probing = _builder.state("probing")

for _state, _value in (
    (_healthy, State.HEALTHY),
    (_suspect, State.SUSPECT),
    (_down, State.DOWN),
    (_probing, State.PROBING),
):
    _state.upon(_Inputs.current).loop().returns(_value)


def _went_down(inputs: _Inputs, core: Health) -> None:
    core._went_down()


def _probe_missed(inputs: _Inputs, core: Health) -> None:
    core._probe_missed()


def _recovered(inputs: _Inputs, core: Health) -> None:
    core._recovered()


def _send_probe(inputs: _Inputs, core: Health) -> None:
    core._send_probe()


# healthy: a failure makes it suspect; a fatal one (or the Nth) takes it out.
_healthy.upon(_Inputs.succeeded).loop().returns(None)
_healthy.upon(_Inputs.failed).to(_suspect).returns(None)
_healthy.upon(_Inputs.taken_out).to(_down)(_went_down)

# suspect: one success clears it.
_suspect.upon(_Inputs.succeeded).to(_healthy).returns(None)
_suspect.upon(_Inputs.failed).loop().returns(None)
_suspect.upon(_Inputs.taken_out).to(_down)(_went_down)

# down: wait for the probe timer; a real request that works (sent because
# the whole group was out) brings it back as a probe would.
_down.upon(_Inputs.probe_due).to(_probing)(_send_probe)
_down.upon(_Inputs.succeeded).to(_healthy)(_recovered)
_down.upon(_Inputs.failed).loop().returns(None)
_down.upon(_Inputs.taken_out).loop().returns(None)

# probing: the probe decides; failed probes wait longer each time.
_probing.upon(_Inputs.probe_succeeded).to(_healthy)(_recovered)
_probing.upon(_Inputs.probe_failed).to(_down)(_probe_missed)
_probing.upon(_Inputs.succeeded).to(_healthy)(_recovered)
_probing.upon(_Inputs.failed).loop().returns(None)
_probing.upon(_Inputs.taken_out).loop().returns(None)

# Inputs that mean nothing in a state are ignored there (stale timers and
# probe results that raced with a recovery).
for _state, _ignored in (
    (_healthy, (_Inputs.probe_due, _Inputs.probe_succeeded, _Inputs.probe_failed)),
    (_suspect, (_Inputs.probe_due, _Inputs.probe_succeeded, _Inputs.probe_failed)),
    (_down, (_Inputs.probe_succeeded, _Inputs.probe_failed)),
    (_probing, (_Inputs.probe_due,)),
):
    for _input in _ignored:
        _state.upon(_input).loop().returns(None)

_HealthMachine = _builder.build()

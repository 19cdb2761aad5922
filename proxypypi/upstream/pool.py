# -*- test-case-name: tests.test_upstream -*-
"""
Ranked upstream indexes: which one to ask, and what to do when it fails.

Upstreams come in groups, in rank order; the members of a group are
mirrors of the same index and share its load.

- A project page comes from the first group that has the project
  (`proxypypi.upstream.pages`).
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

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IAgent

from proxypypi.config.model import UpstreamConfig
from proxypypi.config.urls import display_url
from proxypypi.text import printable
from proxypypi.upstream.health import State
from proxypypi.upstream.member import Upstream, rebase
from proxypypi.upstream.origin import Origin

#: Most members of one group a single page request tries.
MAX_ATTEMPTS_PER_GROUP = 3

#: The load guard of `Pool.plan`: the member the weights chose is passed
#: over when its load per weight is more than this many times the least
#: loaded member's, and it has at least `LOAD_GUARD_MARGIN` more requests
#: in flight.
LOAD_GUARD_FACTOR = 2.0
LOAD_GUARD_MARGIN = 2



@attrs.define
class Pool:
    """
    All upstreams, in rank order, and the policy of asking them.

    :ivar idle_timeout: the default idle timeout of members that set none.
    """

    groups: Sequence[Sequence[Upstream]]
    clock: IReactorTime
    idle_timeout: float = 10.0

    @classmethod
    def from_config(
        cls,
        groups: Sequence[Sequence[UpstreamConfig]],
        agent_for: Callable[[UpstreamConfig], IAgent],
        clock: IReactorTime,
        idle_timeout: float = 10.0,
        jitter: Callable[[], float] = random.random,
        probe_spread: int = 1,
    ) -> Pool:
        """
        Members for ``groups`` (rank order), each with the agent
        ``agent_for`` gives it.

        :param probe_spread: how many processes probe the same members
            (their probes are that much further apart).
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
                    probe_spread=probe_spread,
                )
                for cfg in group
            ]
            for rank, group in enumerate(groups)
        ]
        return cls(members, clock, idle_timeout)

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
        Each member's health, for ``/health`` (open to anyone, even under
        ``--auth-read``): URLs without passwords, errors escaped.
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
                    "last-error": None if h.last_error is None else printable(h.last_error),
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

def _load(member: Upstream) -> float:
    """
    Requests in flight per unit of weight, counting the one to be sent.
    """
    return (member.health.outstanding + 1) / member.weight

"""
The scenarios, one module each, in the order a run takes them.

Each module exposes ``run(bench)``, which measures, adds its rows (or a
table of its own) to ``bench.report``, stops whatever it started, and
raises when it cannot go on; the run records the failure and goes on to
the next scenario.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from bench.context import Bench
from bench.scenarios import (
    cached,
    cold,
    crash,
    hostile,
    metrics,
    outage,
    pages,
    perrequest,
    pip,
    policy,
    slowloris,
    tiers,
    workers,
)


@attrs.frozen
class Scenario:
    """
    One entry of the table.

    :ivar needs: the tools it runs (see `bench.tools`), checked before
        the run starts anything.
    :ivar default: part of issue 3's table, which a run without scenario
        names measures.
    """

    run: Callable[[Bench], None]
    summary: str
    needs: tuple[str, ...] = ()
    default: bool = False


SCENARIOS: dict[str, Scenario] = {
    "cold": Scenario(
        cold.run,
        "issue 3, 1-2: cold time to first byte behind a slow upstream; 8 and 64 clients "
        "on one cold file; idle RSS",
        default=True,
    ),
    "cached": Scenario(
        cached.run,
        "issue 3, 3-4: a cached 200 MB file with 1, 8, 64 clients and a cached 300-file page "
        "(wrk), against nginx and the twisted.web floor",
        needs=("nginx", "wrk"),
        default=True,
    ),
    "pip": Scenario(
        pip.run,
        "issue 3, 5: cold and warm pip download of a 37-file install set, against the upstream",
        default=True,
    ),
    "pages": Scenario(
        pages.run,
        "issue 12: index pages at real sizes (an 8,000-file page, 40 pages of 37,000 files, "
        "1,000 projects, a 900,000-name list) against nginx serving them as the upstream",
        needs=("nginx",),
    ),
    "perrequest": Scenario(
        perrequest.run,
        "Python cost of one cached page request, in process, against bare twisted.web: "
        "steadier than wrk, for A/B work on the request path",
    ),
    "metrics": Scenario(
        metrics.run,
        "/metrics and the status page with 100 000 stored files, idle and under load, "
        "with and without --max-cache-size; memory; do the counters add up",
    ),
    "crash": Scenario(
        crash.run,
        "SIGKILL the proxy at random moments during concurrent cold downloads, restart it, "
        "check that nothing partial or corrupt is served (fails the run otherwise)",
    ),
    "hostile": Scenario(
        hostile.run,
        "issue 14: peak RSS with 8 concurrent gzip bombs, anchor floods and JSON value floods "
        "from a hostile upstream; every answer a 502, no traceback",
    ),
    "policy": Scenario(
        policy.run,
        "issue 15: cached page requests/s without and with a policy (7-day cooldown, "
        "100 deny rules): within 5%",
        needs=("wrk",),
    ),
    "tiers": Scenario(
        tiers.run,
        "issue 13: an edge proxypypi on a regional one on the slow upstream: cold first byte "
        "through both tiers, one origin fetch for two edges",
    ),
    "outage": Scenario(
        outage.run,
        "warm pip download and uv pip install with the upstream up, hanging, refusing",
        needs=("uv",),
    ),
    "slowloris": Scenario(
        slowloris.run,
        "issue 14: page requests with 1,000 slow-header connections open (target: within "
        "100 ms); the head deadline and the per-address cap at work",
    ),
    "workers": Scenario(
        workers.run,
        "issue 13: 2 worker processes against one: cached page requests/s, 8 cold clients "
        "over both workers, RSS per worker with 64 streaming clients, cold pip download, "
        "SIGKILL of the downloading worker",
        needs=("wrk",),
    ),
}

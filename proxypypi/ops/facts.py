# -*- test-case-name: tests.test_logs,tests.test_metrics -*-
"""
What a response learned about itself while it was answered, for its access
event (`proxypypi.ops.logs.log_access`) and the counters
(`proxypypi.ops.metrics.Metrics.request_done`).

One `RequestFacts` travels with each request of the site (see
`proxypypi.web.site.facts_of`); resources fill it in, the site hands it to
the log and the metrics when the request ends.
"""

from __future__ import annotations

import attrs

#: What a resource may note about the cache: ``hit`` served from what is
#: stored and fresh; ``stale`` a page served while it is refreshed;
#: ``miss`` fetched from an upstream for this request; ``join`` attached to
#: a download another request started; ``private`` an uploaded project (no
#: upstream involved).
CACHE_RESULTS = ("hit", "stale", "miss", "join", "private")


@attrs.define
class RequestFacts:
    """
    :ivar cache: one of `CACHE_RESULTS`, for project pages, the project
        list and files; ``None`` for anything else.
    :ivar upstream: the base URL of the upstream member the answer came
        from, when one was involved.
    """

    cache: str | None = None
    upstream: str | None = None

    def note(self, cache: str, upstream: str | None = None) -> None:
        """
        Record where the response came from.
        """
        self.cache = cache
        if upstream is not None:
            self.upstream = upstream

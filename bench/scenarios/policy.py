"""
Issue 15: the supply-chain policy costs nothing per page request.

Two proxies in front of the same fake upstream, one without a policy and
one with a 7-day cooldown and a 100-rule deny list (five of whose rules
withhold files of the page): requests/s on the cached 300-file page with
wrk, HTML and JSON, uncompressed and gzipped as pip asks, the two proxies
taking turns under load (median of ``--policy-reps`` runs each).  The
policy is applied when a page's forms are rendered, so the rates should
match within 5%.

wrk's rates swing with whatever else the machine runs; the same comparison
is also made in process (``perrequest``'s measurement: the best of many
rounds of the Python cost of one page request), which is steady.
"""

from __future__ import annotations

import json
import os
import statistics

from bench import BenchError
from bench.clients import HTML_TYPE, JSON_TYPE, PIP_ENCODING, fetch, page_load
from bench.context import Bench
from bench.report import Table, verdict
from bench.scenarios.perrequest import measure_apart
from bench.services import Proxy, start_proxy

#: Deny rules written, and how many of them hit files of the page.
RULES = 100
PAGE_RULES = 5


def _deny_file(path: str, project: str) -> None:
    """
    100 rules: five versions of the page's project, five digests, and
    ninety other projects, each with its reason.
    """
    lines = [f"{project}=={i}.{i}.0  # bench: withheld" for i in range(PAGE_RULES)]
    lines += [f"sha256:{i:064x}  # bench: unknown digest" for i in range(5)]
    lines += [f"not-here-{i}>=1.0  # bench: another project"
              for i in range(RULES - len(lines))]  # fmt: skip
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run(b: Bench) -> None:
    """
    Start both proxies, warm the page in each, then measure them in turn.
    """
    a, upstream = b.args, b.upstream()
    project = upstream.manifest["page"]["project"]
    deny = os.path.join(b.work, "deny.txt")
    _deny_file(deny, project)
    plain = start_proxy(b.procs, b.work, "policy-none", upstream.simple)
    policed = start_proxy(b.procs, b.work, "policy-on", upstream.simple,
                          extra=["--cooldown", "7d", "--deny", deny])  # fmt: skip
    try:
        withheld = _warm(plain, policed, project)
        rows = []
        for fmt, accept in (("HTML", HTML_TYPE), ("JSON", JSON_TYPE)):
            for encoding, label in ((None, ""), (PIP_ENCODING, ", gzip")):
                load = page_load(a, accept, encoding)
                without, with_ = [], []
                for _ in range(a.policy_reps):
                    without.append(load(f"{plain.simple}{project}/").requests_per_second)
                    with_.append(load(f"{policed.simple}{project}/").requests_per_second)
                off, on = statistics.median(without), statistics.median(with_)
                rows.append([f"{fmt}{label}", f"{off:,.0f} req/s", f"{on:,.0f} req/s",
                             f"{on / off:.3f}x", "≥ 0.95x", verdict(on / off >= 0.95)])  # fmt: skip
                b.report.note(
                    f"policy, page {fmt}{label}: req/s without "
                    + ", ".join(f"{r:,.0f}" for r in without)
                    + "; with "
                    + ", ".join(f"{r:,.0f}" for r in with_)
                )
    finally:
        b.stop(plain)
        b.stop(policed)
    b.report.table(
        Table(
            "policy: cached page requests/s without and with a policy (issue 15)",
            ["page", "no policy", "cooldown 7d + 100 deny rules", "ratio", "target", "met"],
            rows,
            intro=f"{upstream.manifest['page']['files']}-file page, {withheld} files withheld "
            f"by the policy; wrk -t{a.wrk_threads} -c{a.wrk_connections} -d{a.wrk_duration}s, "
            f"median of {a.policy_reps} alternating runs",
        )
    )
    _in_process(b, deny)


def _in_process(b: Bench, deny: str) -> None:
    """
    The Python cost of one cached page request, without and with the
    policy, each measured in a process of its own (best of its rounds),
    the two taking turns ``--policy-reps`` times (best of those).
    """
    a, rows = b.args, []
    policy = ["cooldown=7d", f"deny={deny}"]
    for fmt, accept in (("HTML", HTML_TYPE), ("JSON", JSON_TYPE)):
        for gzip, label in ((False, ""), (True, ", gzip")):
            offs, ons = [], []
            for _ in range(a.policy_reps):
                offs.append(measure_apart(a, accept, gzip)["proxy_us"])
                ons.append(measure_apart(a, accept, gzip, policy)["proxy_us"])
            off, on = min(offs), min(ons)
            rows.append([f"{fmt}{label}", f"{off:.1f} us", f"{on:.1f} us", f"{off / on:.3f}x",
                         "≥ 0.95x", verdict(off / on >= 0.95)])  # fmt: skip
    b.report.table(
        Table(
            "policy: Python cost of one cached page request, without and with a policy",
            ["page", "no policy", "cooldown 7d + 100 deny rules", "rate ratio", "target", "met"],
            rows,
            intro=f"in process, best of {a.policy_reps} alternating processes, each the best "
            f"of {a.perrequest_rounds} rounds of {a.perrequest_count} requests "
            "(bench/scenarios/perrequest.py)",
        )
    )


def _warm(plain: Proxy, policed: Proxy, project: str) -> int:
    """
    Fetch the page through both (every form), so wrk meets cached pages.

    :returns: how many files the policy withheld.
    :raises BenchError: when a page does not answer, or the policy withheld
        other than the page rules' files.
    """
    listed = {}
    for proxy in (plain, policed):
        for accept in (HTML_TYPE, JSON_TYPE):
            for encoding in ("identity", PIP_ENCODING):
                got = fetch(f"{proxy.simple}{project}/", accept=accept, encoding=encoding,
                            keep=True, timeout=60)  # fmt: skip
                if got.status != 200 or got.body is None:
                    raise BenchError(f"{proxy.simple}{project}/ answered {got.status}")
                if accept == JSON_TYPE and encoding == "identity":
                    listed[proxy.port] = len(json.loads(got.body)["files"])
    withheld = listed[plain.port] - listed[policed.port]
    if withheld != PAGE_RULES:
        raise BenchError(f"the policy withheld {withheld} files of the page, not {PAGE_RULES}")
    return withheld

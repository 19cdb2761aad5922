"""
Issue 13, tiers: an edge proxypypi whose upstream is a regional
proxypypi, in front of the slow fake upstream (the origin).

1. one client on a cold file through both tiers against straight from the
   origin: the first body byte within 40 ms of the origin's, the total
   time beside it;
2. two edges, each with clients on the same cold file at once: the origin
   is asked for it once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bench.clients import MB, Fetch, fetch, fetch_many, median
from bench.context import Bench, check_digest
from bench.report import Row, ms, verdict
from bench.services import Proxy, start_proxy

#: Clients on each edge in step 2.
EDGE_CLIENTS = 4


def run(b: Bench) -> None:
    """
    A regional tier and two edges on it; cold files through them.
    """
    a, rep, upstream = b.args, b.report, b.upstream()
    cold = upstream.manifest["cold"]["files"]
    project = upstream.manifest["cold"]["project"]
    if len(cold) < a.trials + 1:
        raise ValueError(f"the fake upstream has {len(cold)} cold files, {a.trials + 1} needed")
    regional = b.proxy("tier-regional")
    edges: list[Proxy] = []
    try:
        for name in ("tier-edge-a", "tier-edge-b"):
            edges.append(start_proxy(b.procs, b.work, name, regional.simple))
        upstream.control(
            latency=a.latency, throttle=int(a.throttle_mb * MB), chunk=16384, reset=True
        )
        through = b.file_urls(edges[0].simple, project)
        direct = b.file_urls(upstream.simple, project)
        rep.settings["tiers"] = (
            f"edge -> regional -> origin (the fake upstream: latency {a.latency:g} s, "
            f"{a.throttle_mb:g} MB/s); {a.trials} trials on files of "
            f"{cold[0]['size'] / MB:.0f} MB, medians"
        )
        ups: list[Fetch] = []
        tiers: list[Fetch] = []
        for entry in cold[: a.trials]:
            name = entry["filename"]
            up = fetch(direct[name], digest=True, timeout=120)
            tier = fetch(through[name], digest=True, timeout=120)
            check_digest([up, tier], entry["sha256"], f"{name} through two tiers")
            ups.append(up)
            tiers.append(tier)
        # Every body checked above, so each had a first byte.
        first = median([t.first_body_byte or 0.0 for t in tiers])
        first_up = median([u.first_body_byte or 0.0 for u in ups])
        rep.add(
            Row(
                "13. tiers: cold first body byte through edge and regional",
                f"{ms(first)} ({(first - first_up) * 1000:+.1f} ms)",
                f"{ms(first_up)} origin",
                f"{first / first_up:.3f}x",
                "≤ origin + 40 ms",
                verdict(first - first_up <= 0.040),
            )
        )
        total = median([t.total for t in tiers])
        total_up = median([u.total for u in ups])
        rep.add(
            Row(
                "13. tiers: cold total time, 1 client",
                f"{total:.3f} s",
                f"{total_up:.3f} s origin",
                f"{total / total_up:.3f}x",
            )
        )
        entry = cold[a.trials]
        name = entry["filename"]
        upstream.control(reset=True)
        urls = [b.file_urls(edge.simple, project)[name] for edge in edges]
        results = _both_at_once(urls)
        check_digest(results, entry["sha256"], f"{name} through two edges at once")
        fetches = upstream.file_fetches(name)
        rep.add(
            Row(
                f"13. tiers: 2 edges x {EDGE_CLIENTS} clients on one cold file: origin fetches",
                str(fetches),
                target="= 1",
                met=verdict(fetches == 1),
            )
        )
    finally:
        for edge in edges:
            b.stop(edge)
        b.stop(regional)


def _both_at_once(urls: list[str]) -> list[Fetch]:
    """
    `EDGE_CLIENTS` clients on each URL, all started together (each edge's
    group in a thread, as `fetch_many` runs its own event loop).
    """
    with ThreadPoolExecutor(len(urls)) as pool:
        groups = list(pool.map(lambda url: fetch_many(url, EDGE_CLIENTS, timeout=300), urls))
    return [f for group in groups for f in group]

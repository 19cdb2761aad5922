"""
Issue 3, scenarios 1 and 2: cold files behind a slow upstream (latency
before the headers, throttled body).

1. time to first byte and total time of one client, through the proxy
   against straight from the upstream, each trial on a file nobody asked
   for yet;
2. 8 and 64 concurrent clients on one cold file: how many times the proxy
   fetched it upstream (must be 1), and the slowest client's time against
   the lone client's.

Also the proxy's idle RSS at a fresh start, next to Twisted's own
``twistd web``, and its peak RSS during each step.
"""

from __future__ import annotations

import time

from bench.clients import MB, Fetch, fetch, fetch_many, median
from bench.context import CONCURRENCY, Bench, check_digest
from bench.references import twistd_web_idle_rss
from bench.report import Row, mib, ms, verdict
from bench.rss import RssMonitor, rss_mib


def run(b: Bench) -> None:
    """
    Cold time to first byte (one client), then 8 and 64 concurrent clients
    on one cold file each.
    """
    a, rep, upstream = b.args, b.report, b.upstream()
    rep.settings["cold files"] = (
        f"{a.cold_mb:g} MB each, upstream latency {a.latency:g} s, throttle {a.throttle_mb:g} MB/s"
    )
    latency, throttle = a.latency, int(a.throttle_mb * MB)
    cold = upstream.manifest["cold"]["files"]
    project = upstream.manifest["cold"]["project"]
    proxy = b.proxy("store-cold")
    try:
        time.sleep(1.0)
        idle = rss_mib(proxy.pid)
        floor = twistd_web_idle_rss(b.procs, b.work)
        if idle is not None:
            rep.add(
                Row(
                    "idle RSS (fresh start)",
                    mib(idle),
                    "—" if floor is None else f"{mib(floor)} twistd web",
                    "—" if floor is None else f"{idle / floor:.2f}x",
                    "< 50 MiB",
                    verdict(idle < 50),
                )
            )
        upstream.control(latency=latency, throttle=throttle, chunk=16384, reset=True)
        via_proxy = b.file_urls(proxy.simple, project)
        direct = b.file_urls(upstream.simple, project)
        size_mb = cold[0]["size"] / MB
        label = f"{size_mb:.0f} MB file, upstream {ms(latency)} + {a.throttle_mb:g} MB/s"
        rep.note(f"cold files: {label}; {a.trials} trials, medians; each trial a new file")

        ups: list[Fetch] = []
        pxs: list[Fetch] = []
        with RssMonitor(proxy.pid) as mon:
            for entry in cold[: a.trials]:
                name = entry["filename"]
                up = fetch(direct[name], digest=True, timeout=120)
                px = fetch(via_proxy[name], digest=True, timeout=120)
                check_digest([up, px], entry["sha256"], f"cold {name}")
                ups.append(up)
                pxs.append(px)
        for what, key in (
            ("TTFB (status line)", "first_byte"),
            ("first body byte", "first_body_byte"),
        ):
            p = median([getattr(x, key) for x in pxs])
            u = median([getattr(x, key) for x in ups])
            rep.add(
                Row(
                    f"1. cold {what}, 1 client",
                    f"{ms(p)} ({(p - u) * 1000:+.1f} ms)",
                    f"{ms(u)} upstream",
                    f"{p / u:.3f}x",
                    "≤ upstream + 20 ms",
                    verdict(p - u <= 0.020),
                )
            )
        lone = median([x.total for x in pxs])
        lone_up = median([x.total for x in ups])
        rep.add(
            Row(
                "1. cold total time, 1 client",
                f"{lone:.3f} s",
                f"{lone_up:.3f} s upstream",
                f"{lone / lone_up:.3f}x",
            )
        )
        rep.note(
            "trial TTFB proxy/upstream ms: "
            + ", ".join(
                f"{p.first_byte * 1000:.1f}/{u.first_byte * 1000:.1f}"
                for p, u in zip(pxs, ups, strict=True)
            )
        )
        rep.add(Row("6. peak RSS, scenario 1", mib(mon.peak_mib)))

        for i, clients in enumerate(CONCURRENCY):
            entry = cold[a.trials + i]
            name = entry["filename"]
            upstream.control(reset=True)
            with RssMonitor(proxy.pid) as mon:
                results = fetch_many(via_proxy[name], clients, timeout=300)
            check_digest(results, entry["sha256"], f"{clients} clients on {name}")
            fetches = upstream.file_fetches(name)
            rep.add(
                Row(
                    f"2. {clients} clients, one cold file: upstream fetches",
                    str(fetches),
                    target="= 1",
                    met=verdict(fetches == 1),
                )
            )
            slowest = max(r.total for r in results)
            rep.add(
                Row(
                    f"2. {clients} clients: slowest client's total time",
                    f"{slowest:.3f} s",
                    f"{lone:.3f} s lone client",
                    f"{slowest / lone:.3f}x",
                    "≤ 1.05x",
                    verdict(slowest / lone <= 1.05),
                )
            )
            worst_ttfb = max(r.first_byte for r in results)
            rep.note(
                f"{clients} clients: total median {median([r.total for r in results]):.3f} s, "
                f"max {slowest:.3f} s; TTFB max {ms(worst_ttfb)}; all {clients} sha256 match"
            )
            rep.add(Row(f"6. peak RSS, {clients} cold clients", mib(mon.peak_mib)))
    finally:
        b.stop(proxy)

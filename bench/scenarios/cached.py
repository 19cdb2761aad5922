"""
Issue 3, scenarios 3 and 4, against nginx serving the same bytes from disk.

3. a cached 200 MB file (filled by 64 clients streaming it cold), read by
   1, 8 and 64 clients at once: MB/s to all clients together;
4. requests/s on a cached 300-file project page, HTML and JSON, as wrk
   asks (uncompressed) and as pip asks (gzip), also against the twisted.web
   floor (``bench/floor.py``: the same bytes from memory, with no routing,
   logging or metrics).

Also the proxy's peak RSS during each step (scenario 6), and with
``--profile`` py-spy profiles of the proxy during the throughput and page
runs.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import time

from bench import BenchError
from bench.clients import (
    HTML_TYPE,
    JSON_TYPE,
    MB,
    PIP_ENCODING,
    drain_many,
    fetch,
    median,
    page_load,
)
from bench.context import Bench, check_digest
from bench.references import Nginx, free_port, start_floor, start_nginx
from bench.report import Row, mib, plural, verdict
from bench.rss import RssMonitor, rss_mib
from bench.services import Proxy


def streaming_rss(what: str, peak: float) -> Row:
    """
    The row of the peak RSS while 64 clients stream ``what``, against the
    issue's limit of 80 MiB.
    """
    return Row(
        f"6. peak RSS, 64 clients streaming {what}",
        mib(peak),
        target="< 80 MiB",
        met=verdict(peak < 80),
    )


def run(b: Bench) -> None:
    """
    Fill the cache with the 200 MB file (64 clients streaming it cold),
    then throughput against nginx, then page requests/s against nginx and
    the floor.
    """
    a, rep = b.args, b.report
    rep.settings["cached file"] = (
        f"{a.big_mb:g} MB; bench/drain.py clients, at least {a.volume_mb:g} MB per run; "
        f"{a.reps} repetitions, median"
    )
    rep.settings["page"] = (
        f"{a.page_files} files; wrk -t{a.wrk_threads} -c{a.wrk_connections} -d{a.wrk_duration}s"
    )
    rep.settings["nginx"] = f"worker_processes {a.nginx_workers}, sendfile on, access_log off"
    # The fake upstream wrote the big file here; the page copies go beside it.
    root = os.path.dirname(b.upstream().manifest["big"]["export"])
    proxy = b.proxy("store-cached")
    nginx = None
    try:
        url = _fill(b, proxy)
        nginx = start_nginx(b.procs, b.work, root, free_port(), a.nginx_workers)
        _file_throughput(b, proxy, url, nginx)
        _page_rate(b, proxy, root)
        time.sleep(2.0)
        idle = rss_mib(proxy.pid)
        if idle is not None:
            rep.add(Row("6. idle RSS after scenarios 3-4", mib(idle)))
    finally:
        if nginx is not None:
            b.procs.stop(nginx.proc)
        b.stop(proxy)


def _fill(b: Bench, proxy: Proxy) -> str:
    """
    Put the big file in the proxy's cache the hard way, 64 clients asking
    for it cold at once (the upstream unthrottled), with the proxy's peak
    RSS meanwhile; check what it then serves.

    :returns: the file's URL on the proxy.
    """
    rep, upstream = b.report, b.upstream()
    big = upstream.manifest["big"]
    size = int(big["size"])
    upstream.control(latency=0, throttle=0, chunk=65536, reset=True)
    url = b.file_urls(proxy.simple, big["project"])[big["filename"]]
    with RssMonitor(proxy.pid) as mon:
        filled = drain_many(url, 64, repeat=1, expect_size=size, timeout=600)
    fetches = upstream.file_fetches(big["filename"])
    rep.add(streaming_rss(f"a cold {size / MB:.0f} MB file", mon.peak_mib))
    rep.note(
        f"64 cold clients on the {size / MB:.0f} MB file (upstream unthrottled): "
        f"{fetches} upstream fetch(es), {filled.aggregate_mbps:.0f} MB/s to all clients, "
        f"{filled.wall:.1f} s"
    )
    got = fetch(url, digest=True, timeout=120)
    check_digest([got], big["sha256"], "cached big file")
    return url


def _file_throughput(b: Bench, proxy: Proxy, url: str, nginx: Nginx) -> None:
    """
    Scenario 3: 1, 8 and 64 clients reading the cached file, through the
    proxy and from nginx in turn.
    """
    a, rep = b.args, b.report
    big = b.upstream().manifest["big"]
    size = int(big["size"])
    ref_url = nginx.base + big["filename"]
    for clients in (1, 8, 64):
        px_runs, ng_runs = [], []
        reps = a.reps if clients < 64 else 1
        # Each run moves at least --volume-mb, so it lasts long enough to time.
        repeat = max(1, math.ceil(a.volume_mb * MB / (clients * size)))
        with RssMonitor(proxy.pid) as mon:
            for i in range(reps):
                profile = b.profile(proxy, f"file-{clients}-clients") if i == 0 else None
                with profile or contextlib.nullcontext():
                    px_runs.append(
                        drain_many(url, clients, repeat=repeat, expect_size=size, timeout=600)
                    )
                ng_runs.append(
                    drain_many(ref_url, clients, repeat=repeat, expect_size=size, timeout=600)
                )
        p = median([r.aggregate_mbps for r in px_runs])
        n = median([r.aggregate_mbps for r in ng_runs])
        target, met = ("≥ 0.80x nginx", verdict(p / n >= 0.80)) if clients < 64 else ("—", "—")
        rep.add(
            Row(
                f"3. cached {size / MB:.0f} MB file, {clients} {plural(clients)}",
                f"{p:.0f} MB/s",
                f"{n:.0f} MB/s nginx",
                f"{p / n:.2f}x",
                target,
                met,
            )
        )
        rep.note(
            f"cached, {clients} {plural(clients)} x {repeat} GET(s) each, "
            "MB/s per repetition: proxy "
            + ", ".join(f"{r.aggregate_mbps:.0f}" for r in px_runs)
            + "; nginx "
            + ", ".join(f"{r.aggregate_mbps:.0f}" for r in ng_runs)
        )
        if clients == 64:
            rep.add(streaming_rss(f"the cached {size / MB:.0f} MB file", mon.peak_mib))
        else:
            rep.add(
                Row(f"6. peak RSS, cached file, {clients} {plural(clients)}", mib(mon.peak_mib))
            )


def _page_rate(b: Bench, proxy: Proxy, root: str) -> None:
    """
    Scenario 4: requests/s on the cached project page with wrk, HTML and
    JSON, uncompressed and gzipped, through the proxy, from the floor and
    from nginx, which serve copies of the proxy's own answers from ``root``.
    nginx runs one worker here, as the proxy runs one process: issue 12
    asks for half nginx's rate on one core, with p99 under 10 ms.
    """
    a, rep, upstream = b.args, b.report, b.upstream()
    project = upstream.manifest["page"]["project"]
    page_url = f"{proxy.simple}{project}/"
    formats = (("HTML", HTML_TYPE, "html"), ("JSON", JSON_TYPE, "json"))
    files = upstream.manifest["page"]["files"]
    bodies: dict[str, bytes] = {}
    for fmt, accept, ext in formats:
        page = fetch(page_url, accept=accept, keep=True, timeout=60)
        if page.status != 200 or page.body is None:
            raise BenchError(f"{page_url} ({fmt}) answered {page.status}")
        bodies[fmt] = page.body
        static = os.path.join(root, f"page-{project}.{ext}")
        with open(static, "wb") as f:
            f.write(page.body)
        # nginx's gzip_static (and the floor) serve this copy to
        # clients that accept gzip.
        with open(static + ".gz", "wb") as f:
            f.write(gzip.compress(page.body, 6))
    floor = start_floor(b.procs, root)
    nginx = start_nginx(b.procs, b.work, root, free_port(), "1")
    try:
        for fmt, accept, ext in formats:
            static = f"page-{project}.{ext}"
            # As wrk sends it (no compression), then as pip and uv send it.
            for encoding, label in ((None, ""), (PIP_ENCODING, ", gzip as pip asks")):
                load = page_load(a, accept, encoding)
                with RssMonitor(proxy.pid) as mon, b.profile(proxy, f"page-{ext}"):
                    px = load(page_url)
                fl = load(floor.base + static)
                ng = load(nginx.base + static)
                ratio = px.requests_per_second / ng.requests_per_second
                p99 = px.latency_p99_ms
                ok = ratio >= 0.5 and p99 is not None and p99 < 10 and px.bad_responses == 0
                what = f"4. cached {files}-file page, {fmt}{label}"
                rep.add(
                    Row(
                        what,
                        f"{px.requests_per_second:,.0f} req/s, p99 {p99} ms",
                        f"{ng.requests_per_second:,.0f} req/s nginx, one worker",
                        f"{ratio:.2f}x",
                        "≥ 0.5x nginx, p99 < 10 ms (issue 12)",
                        verdict(ok),
                    )
                )
                rep.add(
                    Row(
                        f"{what}: vs bare twisted.web",
                        f"{px.requests_per_second:,.0f} req/s",
                        f"{fl.requests_per_second:,.0f} req/s floor",
                        f"{px.requests_per_second / fl.requests_per_second:.2f}x",
                    )
                )
                rep.note(
                    f"page {fmt}{label} ({len(bodies[fmt]):,} bytes uncompressed): proxy p50 "
                    f"{px.latency_p50_ms} ms, p99 {px.latency_p99_ms} ms, non-2xx "
                    f"{px.bad_responses}, socket errors {px.socket_errors}; floor p50 "
                    f"{fl.latency_p50_ms} ms; nginx p50 {ng.latency_p50_ms} ms"
                )
                rep.add(Row(f"6. peak RSS, page {fmt}{label} under wrk", mib(mon.peak_mib)))
    finally:
        b.procs.stop(floor.proc)
        b.procs.stop(nginx.proc)

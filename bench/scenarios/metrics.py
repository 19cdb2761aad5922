"""
How fast ``/metrics`` and the status page (``/``) answer with a large cache.

It builds a storage directory with 100 000 tiny stored files (2 000
projects of 50 files, each with its stored page, in the service's own
layout), starts a trivial upstream and the real service (``twistd -n
proxypypi``) on 127.0.0.1, waits until the service knows the size of its
cache, and times ``/metrics`` and ``/`` (median and p95 of 50 requests
each, one keep-alive connection) twice: idle, and while client processes
download pages and files from the cache.  It does this once without a
cache size limit (the size comes from a background scan) and once with
``--max-cache-size`` (the size comes from the eviction's running total).

It also records the service's resident memory (idle, and the peak under
load) and checks that the request counters of ``/metrics`` add up to the
requests the clients made.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
from prometheus_client.parser import text_string_to_metric_families

from bench import BenchError
from bench.context import Bench
from bench.processes import Processes
from bench.report import Table
from bench.rss import RssMonitor, rss_mib
from bench.services import start_proxy
from proxypypi.cache.page import CachedPage
from proxypypi.simple.model import DistFile, ProjectPage

FILES_PER_PROJECT = 50


def run(b: Bench) -> None:
    """
    Build the storage, measure without and with a cache size limit, and
    add the two tables.
    """
    a, rep = b.args, b.report
    rep.settings["metrics"] = (
        f"{a.metrics_files} stored files of {a.metrics_file_size} B; "
        f"{a.metrics_requests} timed requests per row; "
        f"load: {a.metrics_clients} client processes for {a.metrics_load_seconds:g} s"
    )
    workdir = tempfile.mkdtemp(dir=b.work, prefix="metrics-")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}/simple/"
    try:
        storage = os.path.join(workdir, "data")
        started = time.monotonic()
        made = build_storage(storage, a.metrics_files, upstream, a.metrics_file_size)
        built = time.monotonic() - started
        results = [
            run_mode("scan", [], storage, upstream, made, a, workdir),
            run_mode("eviction", ["--max-cache-size", "1T"], storage, upstream, made, a, workdir),
        ]
    finally:
        server.shutdown()
        server.server_close()

    timings = []
    for r in results:
        for state in ("idle", "load"):
            for path in ("/metrics", "/"):
                times, size = r.timings[(state, path)]
                ms = [t * 1000 for t in times]
                timings.append(
                    [
                        r.mode,
                        f"`{path}`",
                        state,
                        f"{statistics.median(ms):.2f} ms",
                        f"{percentile(ms, 0.95):.2f} ms",
                        f"{max(ms):.2f} ms",
                        f"{size:,} B",
                    ]
                )
    rep.table(
        Table(
            f"metrics: `/metrics` and `/` with {len(made):,} stored files",
            ["storage size from", "endpoint", "state", "median", "p95", "max", "body"],
            timings,
            intro=f"{len(made):,} stored files ({a.metrics_file_size} B each, "
            f"{len(made) // FILES_PER_PROJECT:,} projects with pages), built in {built:.1f} s; "
            f"{a.metrics_requests} timed requests per row; load: {a.metrics_clients} client "
            f"processes for {a.metrics_load_seconds:g} s",
        )
    )
    rep.table(
        Table(
            "metrics: memory and counters",
            [
                "storage size from",
                "size known after",
                "RSS idle",
                "RSS peak under load",
                "load (page+file req/s)",
                "counters add up",
            ],
            [
                [
                    r.mode,
                    f"{r.ready:.2f} s",
                    f"{r.rss_idle:.1f} MiB",
                    f"{r.rss_peak:.1f} MiB",
                    f"{r.load_rate:,.0f}",
                    "yes" if r.add_up else "NO " + repr(r.counted),
                ]
                for r in results
            ],
        )
    )


class _Upstream(BaseHTTPRequestHandler):
    """
    Answers the service's start-up probe; nothing else is asked (every
    page is stored and fresh).
    """

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args: Any) -> None:
        pass


def build_storage(root: str, files: int, upstream: str, size: int) -> list[tuple[str, str]]:
    """
    ``files`` stored files and their pages under ``root``.

    :returns: (project, filename) of every file.
    """
    made = []
    payload = os.urandom(size)
    digest = hashlib.sha256(payload).hexdigest()
    now = time.time()
    projects = (files + FILES_PER_PROJECT - 1) // FILES_PER_PROJECT
    os.makedirs(os.path.join(root, "pages"))
    for p in range(projects):
        project = f"bench-{p:05d}"
        directory = os.path.join(root, "files", project)
        os.makedirs(directory)
        listed = []
        for i in range(min(FILES_PER_PROJECT, files - p * FILES_PER_PROJECT)):
            filename = f"bench_{p:05d}-1.0.{i}-py3-none-any.whl"
            with open(os.path.join(directory, filename), "wb") as f:
                f.write(payload)
            listed.append(
                DistFile(
                    filename,
                    f"{upstream}../files/{project}/{filename}",
                    {"sha256": digest},
                    size=size,
                )
            )
            made.append((project, filename))
        page = ProjectPage(project, tuple(listed))  # type: ignore[arg-type]
        with open(os.path.join(root, "pages", project + ".json"), "wb") as f:
            f.write(CachedPage(page, upstream, now).to_bytes())
    return made


def get(conn: http.client.HTTPConnection, path: str) -> bytes:
    """
    The body of a GET of ``path`` on ``conn``.

    :raises BenchError: unless the status is 200.
    """
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise BenchError(f"GET {path}: {response.status}")
    return body


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of the service's ``/metrics``, by name and labels.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        text = get(conn, "/metrics").decode()
    finally:
        conn.close()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def time_requests(port: int, path: str, count: int) -> tuple[list[float], int]:
    """
    Seconds per request for ``count`` sequential GETs (after two warm-up
    requests), and the body size.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(2):
            body = get(conn, path)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            body = get(conn, path)
            times.append(time.perf_counter() - started)
        return times, len(body)
    finally:
        conn.close()


def _client(port: int, made: list[tuple[str, str]], until: float, seed: int, out: Any) -> None:
    """
    One load client: a project page, then one of its files, until ``until``.
    """
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    pages = files = 0
    while time.time() < until:
        project, filename = made[rng.randrange(len(made))]
        get(conn, f"/simple/{project}/")
        pages += 1
        get(conn, f"/files/{project}/{filename}")
        files += 1
    conn.close()
    out.put((pages, files))


def percentile(values: list[float], q: float) -> float:
    """
    The ``q`` quantile of ``values``, nearest rank.
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_for(check: Callable[[], bool], timeout: float) -> float:
    """
    Seconds until ``check()`` held, polled every 50 ms.

    :raises BenchError: when it still does not after ``timeout`` seconds.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise BenchError("timed out")


@attrs.define
class Mode:
    """
    The figures of one service on the storage.

    :ivar mode: where it learns its cache's size: ``scan`` or ``eviction``.
    :ivar ready: seconds until ``/metrics`` counted every stored file.
    :ivar timings: (state, path) → seconds of each timed request, and the
        body size.
    :ivar rss_idle: MiB, idle; ``rss_peak``: MiB, the peak under load.
    :ivar load_rate: the load clients' page and file requests per second.
    :ivar add_up: whether the request counters match what the clients made.
    :ivar counted: (page and file requests counted, pages and files made).
    """

    mode: str
    ready: float = 0.0
    timings: dict[tuple[str, str], tuple[list[float], int]] = attrs.field(factory=dict)
    rss_idle: float = 0.0
    rss_peak: float = 0.0
    load_rate: float = 0.0
    add_up: bool = False
    counted: tuple[float, float, int, int] = (0.0, 0.0, 0, 0)


def run_mode(
    name: str,
    extra: list[str],
    storage: str,
    upstream: str,
    made: list[tuple[str, str]],
    args: argparse.Namespace,
    workdir: str,
) -> Mode:
    """
    One service on the storage (started with ``extra`` options): how soon
    it knows its size, its timings idle and under load, its memory, and
    whether its counters add up.
    """
    result = Mode(name)
    with Processes() as procs:
        proxy = start_proxy(procs, workdir, storage, upstream, fresh=False, extra=extra)
        port = proxy.port
        key = ("proxypypi_storage_files", (("area", "files"),))
        result.ready = wait_for(lambda: scrape(port).get(key) == len(made), 120)
        time.sleep(1)
        idle = rss_mib(proxy.pid)
        if idle is None:
            raise BenchError("the service exited")
        result.rss_idle = idle
        for path in ("/metrics", "/"):
            result.timings[("idle", path)] = time_requests(port, path, args.metrics_requests)
        # Under load: clients read pages and files while we time again.
        queue: Any = multiprocessing.Queue()
        until = time.time() + args.metrics_load_seconds
        clients = [
            multiprocessing.Process(target=_client, args=(port, made, until, i, queue))
            for i in range(args.metrics_clients)
        ]
        for c in clients:
            c.start()
        # The monitor's sampling thread (its fallback) wakes seldom: the
        # timed requests below run in this process too.
        with RssMonitor(proxy.pid, interval=0.1) as mon:
            time.sleep(min(1.0, args.metrics_load_seconds / 4))
            for path in ("/metrics", "/"):
                result.timings[("load", path)] = time_requests(port, path, args.metrics_requests)
            pages = files = 0
            for _ in clients:
                p, f = queue.get(timeout=args.metrics_load_seconds + 60)
                pages += p
                files += f
            for c in clients:
                c.join()
        result.rss_peak = max(idle, mon.peak_mib)
        result.load_rate = (pages + files) / args.metrics_load_seconds
        # Do the counters add up?  Every earlier request of this run, by route.
        s = scrape(port)
        timed = 2 * (args.metrics_requests + 2)  # idle and under load, with warm-ups
        made_by_route = {"project_page": pages, "file": files, "status": timed}

        def count(route: str) -> float:
            return sum(
                v
                for (n, labels), v in s.items()
                if n == "proxypypi_requests_total" and ("route", route) in labels
            )

        ok = all(count(r) == n for r, n in made_by_route.items())
        # Plus the readiness checks, however many there were.
        ok = ok and count("metrics") >= timed
        hits = s[("proxypypi_cache_responses_total", (("kind", "file"), ("result", "hit")))]
        page_hits = s[("proxypypi_cache_responses_total", (("kind", "page"), ("result", "hit")))]
        ok = ok and hits == files and page_hits == pages
        result.add_up = ok
        result.counted = (count("project_page"), count("file"), pages, files)
    return result

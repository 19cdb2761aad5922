"""
How fast ``/metrics`` and the status page (``/``) answer with a large cache.

One command::

    python bench/metrics.py

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
requests the clients made.  Everything runs on loopback and is removed at
the end (``--keep`` keeps the directory).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness import Processes, start_proxy  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from proxypypi.cache.page import CachedPage  # noqa: E402
from proxypypi.simple.model import DistFile, ProjectPage  # noqa: E402

FILES_PER_PROJECT = 50


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


def rss(pid: int) -> int:
    """
    Resident memory of a process, in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status}")
    return body


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
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
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_for(check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError("timed out")


def run_mode(
    name: str,
    extra: list[str],
    storage: str,
    upstream: str,
    made: list[tuple[str, str]],
    args: argparse.Namespace,
    workdir: str,
) -> dict[str, Any]:
    procs = Processes()
    proxy = start_proxy(procs, workdir, storage, upstream, fresh=False, extra=extra)
    proc, port = proxy.proc, proxy.port
    result: dict[str, Any] = {"mode": name}
    try:
        key = ("proxypypi_storage_files", (("area", "files"),))
        result["ready"] = wait_for(lambda: scrape(port).get(key) == len(made), 120)
        time.sleep(1)
        result["rss_idle"] = rss(proc.pid)
        for path in ("/metrics", "/"):
            result[("idle", path)] = time_requests(port, path, args.requests)
        # Under load: clients read pages and files while we time again.
        queue: Any = multiprocessing.Queue()
        until = time.time() + args.load_seconds
        clients = [
            multiprocessing.Process(target=_client, args=(port, made, until, i, queue))
            for i in range(args.clients)
        ]
        for c in clients:
            c.start()
        peak = [result["rss_idle"]]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.1):
                peak.append(rss(proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        time.sleep(min(1.0, args.load_seconds / 4))
        for path in ("/metrics", "/"):
            result[("load", path)] = time_requests(port, path, args.requests)
        pages = files = 0
        for _ in clients:
            p, f = queue.get(timeout=args.load_seconds + 60)
            pages += p
            files += f
        for c in clients:
            c.join()
        sampling.set()
        sampler.join()
        result["rss_peak"] = max(peak)
        result["load_rate"] = (pages + files) / args.load_seconds
        # Do the counters add up?  Every earlier request of this run, by route.
        s = scrape(port)
        timed = 2 * (args.requests + 2)  # idle and under load, with warm-ups
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
        result["add_up"] = ok
        result["counted"] = (count("project_page"), count("file"), pages, files)
    finally:
        procs.stop_all()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000, help="stored files [100000]")
    parser.add_argument("--size", type=int, default=512, help="bytes per file [512]")
    parser.add_argument("--requests", type=int, default=50, help="timed requests [50]")
    parser.add_argument("--clients", type=int, default=4, help="load client processes [4]")
    parser.add_argument("--load-seconds", type=float, default=10.0, help="load duration [10]")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="proxypypi-bench-metrics-")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}/simple/"
    try:
        storage = os.path.join(workdir, "data")
        started = time.monotonic()
        made = build_storage(storage, args.files, upstream, args.size)
        built = time.monotonic() - started
        results = [
            run_mode("scan", [], storage, upstream, made, args, workdir),
            run_mode(
                "eviction", ["--max-cache-size", "1T"], storage, upstream, made, args, workdir
            ),
        ]
    finally:
        server.shutdown()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")

    print(
        f"\n{len(made):,} stored files ({args.size} B each, {len(made) // FILES_PER_PROJECT:,} "
        f"projects with pages), built in {built:.1f} s; {args.requests} timed requests per "
        f"row; load: {args.clients} client processes for {args.load_seconds:g} s\n"
    )
    print("| storage size from | endpoint | state | median | p95 | max | body |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        for state in ("idle", "load"):
            for path in ("/metrics", "/"):
                times, size = r[(state, path)]
                ms = [t * 1000 for t in times]
                print(
                    f"| {r['mode']} | `{path}` | {state} | {statistics.median(ms):.2f} ms "
                    f"| {percentile(ms, 0.95):.2f} ms | {max(ms):.2f} ms | {size:,} B |"
                )
    print()
    print(
        "| storage size from | size known after | RSS idle | RSS peak under load "
        "| load (page+file req/s) | counters add up |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['mode']} | {r['ready']:.2f} s | {r['rss_idle'] / 2**20:.1f} MiB "
            f"| {r['rss_peak'] / 2**20:.1f} MiB | {r['load_rate']:,.0f} "
            f"| {'yes' if r['add_up'] else 'NO ' + repr(r['counted'])} |"
        )


if __name__ == "__main__":
    main()

"""
proxypypi benchmark: the proxy side by side with its references, in one run.

    python bench/run.py            # the full run, 3 to 4 minutes
    python bench/run.py --quick    # small sizes, a smoke test

Scenarios (issue 3, "Targets"):

1. cold time to first byte behind a slow upstream (latency before the
   headers, throttled body), through the proxy vs straight from the upstream;
2. 8 and 64 concurrent clients on one cold file: upstream fetches (must be
   1) and each client's time vs a lone client's;
3. a cached 200 MB file, 1 and 8 (and 64) clients, vs nginx serving the
   same file from disk;
4. requests/s on a cached 300-file project page, HTML and JSON (wrk), vs
   nginx serving the same bytes, and vs the twisted.web floor
   (``bench/floor.py``: bare twisted.web answering with the same bytes from
   memory, no routing, logging or metrics);
5. cold and warm ``pip download`` of a 37-file install set, through the
   proxy vs straight from the upstream;
6. the proxy's RSS: idle (next to Twisted's own ``twistd web`` serving an
   empty directory), and peak during each scenario.

Everything listens on 127.0.0.1; the fake upstream (``bench/upstream.py``),
the proxy (``twistd proxypypi``) and nginx run as subprocesses and are
stopped at the end, whatever happens.  Missing tools (nginx, wrk) are
installed with apt-get; the table is printed and written to
``bench/results/latest.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urljoin

import attrs
from clients import (
    MB,
    Fetch,
    clean_pip_env,
    drain_many,
    fetch,
    fetch_many,
    median,
    pip_download,
    wrk,
)
from harness import (
    REPO,
    BenchError,
    Processes,
    Proxy,
    RssMonitor,
    Upstream,
    ensure_python_deps,
    ensure_tools,
    free_port,
    rss_mib,
    start_floor,
    start_nginx,
    start_proxy,
    start_upstream,
    twistd_web_idle_rss,
)
from spy import find_py_spy, sampling, top_frames

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
#: The Accept-Encoding pip and uv send for index pages.
PIP_ENCODING = "gzip, deflate"
HTML_TYPE = "text/html"

# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


@attrs.define
class Row:
    """
    One line of the results table.
    """

    scenario: str
    proxy: str
    reference: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: str = "—"


def verdict(ok: bool | None) -> str:
    """
    The "met?" cell: ``yes``, ``NO``, or ``—`` when there is no target.
    """
    return "—" if ok is None else ("yes" if ok else "**NO**")


@attrs.define
class Report:
    """
    The table and the notes under it.
    """

    settings: dict[str, Any]
    rows: list[Row] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)

    def add(self, row: Row) -> None:
        """
        Add a row and echo it, so progress is visible during the run.
        """
        self.rows.append(row)
        cells = [row.proxy, row.reference, row.ratio, row.target, row.met]
        print(f"  {row.scenario}: " + " | ".join(cells), flush=True)

    def note(self, text: str) -> None:
        """
        Add a line to the details under the table.
        """
        self.notes.append(text)
        print(f"    {text}", flush=True)

    def markdown(self) -> str:
        """
        The whole report as Markdown.
        """
        head = ["scenario", "proxypypi", "reference", "ratio", "target", "met?"]
        table = [head, ["---"] * len(head)]
        table += [[r.scenario, r.proxy, r.reference, r.ratio, r.target, r.met] for r in self.rows]
        lines = ["# proxypypi benchmark", ""]
        lines += ["| " + " | ".join(cells) + " |" for cells in table]
        lines += ["", "## Settings", ""]
        lines += [f"- {key}: {value}" for key, value in self.settings.items()]
        lines += ["", "## Details", ""]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def ms(seconds: float) -> str:
    """
    Seconds as milliseconds, for the table.
    """
    return f"{seconds * 1000:.1f} ms"


def plural(clients: int) -> str:
    """
    "client" or "clients".
    """
    return "client" if clients == 1 else "clients"


def mib(value: float) -> str:
    """
    A memory size in MiB, for the table.
    """
    return f"{value:.1f} MiB"


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


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


@attrs.define
class Bench:
    """
    State shared by the scenarios.
    """

    args: argparse.Namespace
    work: str
    procs: Processes
    upstream: Upstream
    report: Report
    deadline: float
    lone_total: float | None = None
    py_spy: str | None = None

    def proxy(self, name: str) -> Proxy:
        """
        A fresh proxy (empty storage) in front of the fake upstream.
        """
        return start_proxy(self.procs, self.work, name, self.upstream.simple)

    def stop(self, proxy: Proxy) -> None:
        """
        Stop a proxy and note anything alarming in its log.
        """
        self.procs.stop(proxy.proc)
        with open(proxy.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        problems = [
            line for line in text.splitlines() if "Traceback" in line or "Unhandled" in line
        ]
        if problems:
            self.report.note(
                f"proxy log {os.path.basename(proxy.log_path)}: {len(problems)} "
                f"traceback/unhandled lines, e.g. {problems[0][:160]!r}"
            )

    def file_urls(self, index_url: str, project: str) -> dict[str, str]:
        """
        File name → absolute URL, read from a project page (JSON) the way an
        installer reads it.
        """
        page_url = f"{index_url}{project}/"
        got = fetch(page_url, accept=JSON_TYPE, keep=True, timeout=60)
        if got.status != 200 or got.body is None:
            raise BenchError(f"{page_url} answered {got.status}")
        files = json.loads(got.body)["files"]
        return {f["filename"]: urljoin(page_url, f["url"]) for f in files}

    def profile(self, proxy: Proxy, name: str) -> contextlib.AbstractContextManager[None]:
        """
        With ``--profile``: sample the proxy with py-spy during the block,
        into ``bench/results/profile-<name>.txt``, and note its hottest
        functions.  Otherwise nothing.
        """
        if self.py_spy is None:
            return contextlib.nullcontext()
        output = os.path.join(os.path.dirname(self.args.output), f"profile-{name}.txt")

        @contextlib.contextmanager
        def run() -> Iterator[None]:
            with sampling(self.py_spy, proxy.pid, output):
                yield
            top = top_frames(output)
            if top:
                self.report.note(
                    f"profile {name} ({os.path.basename(output)}), self time: "
                    + "; ".join(f"{frame} {share:.0%}" for frame, share in top)
                )

        return run()

    def time_left(self) -> float:
        """
        Seconds before the run's time limit.
        """
        return self.deadline - time.monotonic()


def check_digest(results: Sequence[Fetch], want: str, what: str) -> None:
    """
    :raises BenchError: if any body's sha256 differs from ``want``.
    """
    bad = [r for r in results if r.status != 200 or r.sha256 != want]
    if bad:
        raise BenchError(f"{what}: {len(bad)} of {len(results)} responses wrong or corrupt")


# ---------------------------------------------------------------------------
# Scenarios 1 and 2: cold files behind a slow upstream
# ---------------------------------------------------------------------------


def scenario_cold(b: Bench) -> None:
    """
    Cold time to first byte (one client), then 8 and 64 concurrent clients
    on one cold file each.
    """
    a, rep = b.args, b.report
    latency, throttle = a.latency, int(a.throttle_mb * MB)
    cold = b.upstream.manifest["cold"]["files"]
    project = b.upstream.manifest["cold"]["project"]
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
        b.upstream.control(latency=latency, throttle=throttle, chunk=16384, reset=True)
        via_proxy = b.file_urls(proxy.simple, project)
        direct = b.file_urls(b.upstream.simple, project)
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
        b.lone_total = lone
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

        for i, clients in enumerate(a.concurrency):
            entry = cold[a.trials + i]
            name = entry["filename"]
            b.upstream.control(reset=True)
            with RssMonitor(proxy.pid) as mon:
                results = fetch_many(via_proxy[name], clients, timeout=300)
            check_digest(results, entry["sha256"], f"{clients} clients on {name}")
            fetches = b.upstream.file_fetches(name)
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


# ---------------------------------------------------------------------------
# Scenarios 3, 4 and 6: cached file and page, against nginx
# ---------------------------------------------------------------------------


def scenario_cached(b: Bench) -> None:
    """
    Fill the cache with the 200 MB file (64 clients streaming it cold),
    then throughput against nginx, then page requests/s against nginx.
    """
    a, rep = b.args, b.report
    big = b.upstream.manifest["big"]
    size = int(big["size"])
    root = os.path.dirname(big["export"])
    proxy = b.proxy("store-cached")
    nginx = None
    try:
        b.upstream.control(latency=0, throttle=0, chunk=65536, reset=True)
        url = b.file_urls(proxy.simple, big["project"])[big["filename"]]
        with RssMonitor(proxy.pid) as mon:
            run = drain_many(url, 64, repeat=1, expect_size=size, timeout=600)
        fetches = b.upstream.file_fetches(big["filename"])
        rep.add(streaming_rss(f"a cold {size / MB:.0f} MB file", mon.peak_mib))
        rep.note(
            f"64 cold clients on the {size / MB:.0f} MB file (upstream unthrottled): "
            f"{fetches} upstream fetch(es), {run.aggregate_mbps:.0f} MB/s to all clients, "
            f"{run.wall:.1f} s"
        )
        got = fetch(url, digest=True, timeout=120)
        check_digest([got], big["sha256"], "cached big file")

        nginx = start_nginx(b.procs, b.work, root, free_port(), a.nginx_workers)
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

        project = b.upstream.manifest["page"]["project"]
        page_url = f"{proxy.simple}{project}/"
        formats = (("HTML", HTML_TYPE, "html"), ("JSON", JSON_TYPE, "json"))
        files = b.upstream.manifest["page"]["files"]
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
        try:
            for fmt, accept, ext in formats:
                static = f"page-{project}.{ext}"
                # As wrk sends it (no compression), then as pip and uv send it.
                for encoding, label in ((None, ""), (PIP_ENCODING, ", gzip as pip asks")):
                    load = functools.partial(
                        wrk,
                        accept=accept,
                        threads=a.wrk_threads,
                        connections=a.wrk_connections,
                        duration=a.wrk_duration,
                        encoding=encoding,
                    )
                    with RssMonitor(proxy.pid) as mon, b.profile(proxy, f"page-{ext}"):
                        px = load(page_url)
                    fl = load(floor.base + static)
                    ng = load(nginx.base + static)
                    ok = px.requests_per_second >= 9000 and px.bad_responses == 0
                    what = f"4. cached {files}-file page, {fmt}{label}"
                    rep.add(
                        Row(
                            what,
                            f"{px.requests_per_second:,.0f} req/s",
                            f"{ng.requests_per_second:,.0f} req/s nginx",
                            f"{px.requests_per_second / ng.requests_per_second:.2f}x",
                            "≥ 9,000 req/s",
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
        time.sleep(2.0)
        idle = rss_mib(proxy.pid)
        if idle is not None:
            rep.add(Row("6. idle RSS after scenarios 3-4", mib(idle)))
    finally:
        if nginx is not None:
            b.procs.stop(nginx.proc)
        b.stop(proxy)


# ---------------------------------------------------------------------------
# Scenario 5: pip download
# ---------------------------------------------------------------------------


def check_download(dest: str, files: Sequence[dict[str, Any]]) -> None:
    """
    :raises BenchError: unless ``dest`` holds exactly the install set.
    """
    want = {f["filename"]: f["sha256"] for f in files}
    got = {}
    for name in os.listdir(dest):
        with open(os.path.join(dest, name), "rb") as f:
            got[name] = hashlib.sha256(f.read()).hexdigest()
    if got != want:
        raise BenchError(f"pip downloaded {len(got)} files, not the {len(want)} expected")


def scenario_pip(b: Bench) -> None:
    """
    ``pip download`` of the install set: straight from the upstream, then
    through a fresh proxy (cold), then again (warm); repeated.
    """
    a, rep = b.args, b.report
    install = b.upstream.manifest["install"]
    files = install["files"]
    b.upstream.control(
        latency=a.pip_latency, throttle=int(a.pip_throttle_mb * MB), chunk=16384, reset=True
    )
    rep.note(
        f"pip: {len(files)} files, {install['bytes'] / MB:.1f} MB, upstream "
        f"{ms(a.pip_latency)} per request + {a.pip_throttle_mb:g} MB/s per response; "
        f"{a.pip_reps} repetition(s), medians"
    )
    direct, cold, warm, peaks = [], [], [], []
    warm_upstream_requests = []
    for i in range(a.pip_reps):
        home = tempfile.mkdtemp(dir=b.work, prefix="home-")
        env = clean_pip_env(home)

        def run(index: str, tag: str, _i: int = i, _env: dict[str, str] = env) -> float:
            dest = os.path.join(b.work, f"pip-{tag}-{_i}")
            elapsed = pip_download(index, [install["root"]], dest, _env)
            check_download(dest, files)
            shutil.rmtree(dest)
            return elapsed

        direct.append(run(b.upstream.simple, "direct"))
        proxy = b.proxy(f"store-pip-{i}")
        try:
            with RssMonitor(proxy.pid) as mon:
                cold.append(run(proxy.simple, "cold"))
            peaks.append(mon.peak_mib)
            b.upstream.control(reset=True)
            warm.append(run(proxy.simple, "warm"))
            warm_upstream_requests.append(len(b.upstream.requests()))
        finally:
            b.stop(proxy)
    d, c, w = median(direct), median(cold), median(warm)
    rep.add(
        Row(
            f"5. pip download, {len(files)} files, cold",
            f"{c:.2f} s",
            f"{d:.2f} s upstream",
            f"{c / d:.3f}x",
            "≤ 1.05x",
            verdict(c / d <= 1.05),
        )
    )
    rep.add(
        Row(
            f"5. pip download, {len(files)} files, warm",
            f"{w:.2f} s",
            f"{d:.2f} s upstream",
            f"{w / d:.3f}x",
            "≤ 1.00x",
            verdict(w / d <= 1.0),
        )
    )
    rep.note(
        "pip seconds per repetition (direct/cold/warm): "
        + ", ".join(f"{x:.2f}/{y:.2f}/{z:.2f}" for x, y, z in zip(direct, cold, warm, strict=True))
    )
    rep.note(f"requests reaching the upstream during warm runs: {warm_upstream_requests}")
    rep.add(Row("6. peak RSS, cold pip download", mib(max(peaks))))


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "cold": scenario_cold,
    "cached": scenario_cached,
    "pip": scenario_pip,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line; every default is the full benchmark.
    """
    p = argparse.ArgumentParser(description="proxypypi benchmark (see bench/run.py's docstring)")
    p.add_argument("--quick", action="store_true", help="small sizes and short runs (smoke test)")
    p.add_argument(
        "--only",
        choices=sorted(SCENARIOS),
        action="append",
        help="run only these scenario groups (repeatable)",
    )
    p.add_argument("--big-mb", type=float, default=200.0, help="size of the cached file [200]")
    p.add_argument("--cold-mb", type=float, default=4.0, help="size of each cold file [4]")
    p.add_argument(
        "--latency",
        type=float,
        default=0.2,
        help="upstream seconds before headers, cold scenarios [0.2]",
    )
    p.add_argument(
        "--throttle-mb", type=float, default=2.0, help="upstream body MB/s, cold scenarios [2]"
    )
    p.add_argument("--trials", type=int, default=5, help="cold single-client trials [5]")
    p.add_argument("--reps", type=int, default=5, help="repetitions of throughput runs [5]")
    p.add_argument(
        "--volume-mb", type=float, default=1600.0, help="least MB per throughput run [1600]"
    )
    p.add_argument("--page-files", type=int, default=300, help="files on the page [300]")
    p.add_argument("--wrk-duration", type=int, default=10, help="seconds per wrk run [10]")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--wrk-connections", type=int, default=16)
    p.add_argument("--pip-reps", type=int, default=3, help="pip repetitions [3]")
    p.add_argument(
        "--pip-latency",
        type=float,
        default=0.05,
        help="upstream seconds before headers, pip scenario [0.05]",
    )
    p.add_argument(
        "--pip-throttle-mb",
        type=float,
        default=10.0,
        help="upstream body MB/s per response, pip scenario [10]",
    )
    p.add_argument("--nginx-workers", default="auto", help="nginx worker_processes [auto]")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=15.0,
        help="skip scenarios that would start after this [15]",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the proxy with py-spy during the throughput and page runs "
        "(bench/results/profile-*.txt; slows it a little)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, stores)")
    p.add_argument("--output", default=os.path.join(REPO, "bench", "results", "latest.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.big_mb, args.cold_mb, args.trials, args.reps = 20.0, 1.0, 2, 1
        args.volume_mb = 200.0
        args.wrk_duration, args.pip_reps = 3, 1
    args.concurrency = (8, 64)
    return args


def load_average() -> str:
    """
    The 1, 5 and 15 minute load averages: other work on this 2-core machine
    skews every figure, so the report records it.
    """
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """
    What the run measured with, for the report.
    """

    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        lines = (done.stdout + done.stderr).strip().splitlines()
        return " ".join(lines[0].split()[:3]) if lines else "?"

    commit = version(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", REPO, "status", "--porcelain", "--", "proxypypi"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "load average at start": load_average(),
        "proxypypi": f"{commit}{' + uncommitted changes in proxypypi/' if dirty else ''}",
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}",
        "tools": "; ".join(version(x) for x in (["/usr/sbin/nginx", "-v"], ["wrk", "-v"])),
        "cold files": f"{args.cold_mb:g} MB each, upstream latency {args.latency:g} s, "
        f"throttle {args.throttle_mb:g} MB/s",
        "cached file": f"{args.big_mb:g} MB; bench/drain.py clients, at least "
        f"{args.volume_mb:g} MB per run; {args.reps} repetitions, median",
        "page": f"{args.page_files} files; wrk -t{args.wrk_threads} -c{args.wrk_connections} "
        f"-d{args.wrk_duration}s",
        "nginx": f"worker_processes {args.nginx_workers}, sendfile on, access_log off",
        "pip": f"latency {args.pip_latency:g} s, throttle {args.pip_throttle_mb:g} MB/s, "
        f"{args.pip_reps} repetitions",
    }


def main(argv: Sequence[str]) -> int:
    """
    Run the benchmark; 0 when it completed (targets met or not), 1 when a
    scenario could not run.
    """
    args = parse_args(argv)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    ensure_tools({"nginx": "nginx", "wrk": "wrk"})
    ensure_python_deps()

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    start = time.monotonic()
    procs = Processes()
    work = tempfile.mkdtemp(prefix="proxypypi-bench-")
    report = Report(settings(args))
    failed = False
    try:
        root = os.path.join(work, "nginx-root")
        os.makedirs(root)
        cold_files = args.trials + len(args.concurrency)
        print(f"building the upstream's files in {work} ...", flush=True)
        upstream = start_upstream(
            procs,
            work,
            [
                "--big-size",
                str(int(args.big_mb * MB)),
                "--cold-size",
                str(int(args.cold_mb * MB)),
                "--cold-files",
                str(cold_files),
                "--page-files",
                str(args.page_files),
                "--export-dir",
                root,
                "--max-seconds",
                str(args.max_minutes * 60 + 600),
            ],
        )
        bench = Bench(args, work, procs, upstream, report, start + args.max_minutes * 60)
        if args.profile:
            bench.py_spy = find_py_spy(install=True)
            if bench.py_spy is None:
                report.note("--profile: py-spy is not available; no profiles taken")
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            if bench.time_left() <= 0:
                report.add(Row(f"{name}: skipped (past --max-minutes)", "—"))
                continue
            print(f"scenario group '{name}' ...", flush=True)
            try:
                scenario(bench)
            except Exception as e:
                failed = True
                traceback.print_exc()
                report.add(
                    Row(
                        f"{name}: FAILED",
                        f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                        met="**NO**",
                    )
                )
    finally:
        procs.stop_all()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.settings["load average at end"] = load_average()
    report.note(f"whole run: {time.monotonic() - start:.0f} s")
    text = report.markdown()
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    print()
    print(text)
    print(f"written to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

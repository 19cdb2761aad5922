"""
Issue 13: worker processes (``--workers N``: the supervisor hands the
listening sockets to N processes sharing one storage directory) against
one process, in the same run, on this machine's cores.

1. requests/s on the cached 300-file page with wrk, as ``cached`` asks for
   it (HTML and JSON, plain and gzip as pip asks), N workers against one
   process, each service on storage of its own, taking turns under load:
   target 1.7x for 2 workers;
2. 8 concurrent clients of one cold file behind a throttled upstream, each
   on a new connection (the workers share the kernel's accept queue, so
   both get some): one upstream GET, and each client's time within 5% of a
   lone client's on another cold file of the same size;
3. each worker's peak RSS while 64 clients stream the large file, cold
   (filling the cache) then cached: at most 80 MiB each;
4. cold ``pip download`` of the pip scenario's 37-file set, N workers
   against one process: no slower (1.05x; the spread between repetitions
   is reported beside it);
5. SIGKILL of the worker that owns a download, at random moments during
   concurrent cold downloads (``crash``'s rounds, but the service keeps
   running: its supervisor starts the worker again, and another worker
   takes the download over with ``Range``): no complete-looking wrong
   response, nothing partial or corrupt stored, every client served right
   or cut off.

wrk and the service share the machine's cores, so the report records how
much CPU each used during the page runs.
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import signal
import tempfile
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from bench import BenchError
from bench.clients import (
    HTML_TYPE,
    JSON_TYPE,
    MB,
    PIP_ENCODING,
    WrkRun,
    clean_pip_env,
    drain_many,
    fetch,
    fetch_many,
    median,
    page_load,
)
from bench.context import Bench, check_digest
from bench.processes import Processes
from bench.report import Row, Table, mib, verdict
from bench.rss import children, monitor_each, rss_mib
from bench.scenarios.crash import (
    check_served,
    crash_upstream,
    forget_half,
    served_tree_problems,
    start_downloads,
)
from bench.scenarios.pip import slow_upstream, timed_download
from bench.services import WORKER_ACCEPTING, Proxy, start_proxy
from proxypypi.service.supervisor import QUICK_EXIT

#: Issue 13's targets.
RATE_TARGET = 1.7
COLD_TARGET = 1.05
RSS_TARGET = 80.0
PIP_TARGET = 1.05

#: The page's forms, as ``cached`` measures them.
FORMS = (("HTML", HTML_TYPE), ("JSON", JSON_TYPE))
ENCODINGS = ((None, ""), (PIP_ENCODING, ", gzip as pip asks"))

#: Cold files tried until the 8 clients of row 2 land on every worker.
ATTEMPTS = 4

#: Seconds a killed worker may take to be replaced: the supervisor's
#: longest pause after quick failures (30 s), and a start.
RESTART_TIMEOUT = 60.0


def run(b: Bench) -> None:
    """
    The five measurements in turn, each on services of its own.
    """
    a, rep = b.args, b.report
    n = a.worker_count
    if n < 2:
        raise BenchError("--worker-count must be at least 2")
    rep.settings["workers"] = (
        f"{n} worker processes against one process; page: wrk -t{a.workers_wrk_threads} "
        f"-c{a.wrk_connections} -d{a.wrk_duration}s, {a.workers_reps} run(s) each, "
        f"alternating, median; cold: {a.cold_mb:g} MB files, upstream latency {a.latency:g} s, "
        f"throttle {a.workers_throttle_mb:g} MB/s; streaming: {a.big_mb:g} MB; "
        f"pip: {a.pip_reps} repetition(s); kills: {a.workers_kills}"
    )
    _page_rate(b, n)
    _cold_and_streaming(b, n)
    _pip(b, n)
    _kills(b, n)


def _cpu_seconds(pid: int) -> float:
    """
    User and system CPU seconds ``pid`` used so far (0 once it is gone).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime, the 14th and 15th fields, in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """
    CPU seconds of this process's reaped children so far (wrk's, after it
    ran).
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _spread(counts: dict[int, int]) -> str:
    """
    "worker 0: 5, worker 1: 3".
    """
    return ", ".join(f"worker {i}: {c}" for i, c in sorted(counts.items())) or "none logged"


def _page_rate(b: Bench, n: int) -> None:
    """
    Row 1: the page's forms through one process and through ``n`` workers,
    each warmed first, the two taking turns under wrk; with the CPU the
    service (supervisor and workers) and wrk used.
    """
    a, rep, upstream = b.args, b.report, b.upstream()
    project = upstream.manifest["page"]["project"]
    files = upstream.manifest["page"]["files"]
    one = b.proxy("store-workers-one")
    many = b.proxy("store-workers-many", workers=n)
    try:
        for fmt, accept in FORMS:
            for encoding, _label in ENCODINGS:
                bodies = set()
                for proxy in (one, many):
                    # Several new connections, so that each worker reads the
                    # stored page before wrk starts.
                    for _ in range(2 * n):
                        got = fetch(
                            f"{proxy.simple}{project}/",
                            accept=accept,
                            encoding=encoding or "identity",
                            keep=True,
                            timeout=60,
                        )
                        if got.status != 200 or got.body is None:
                            raise BenchError(f"page {fmt} through {proxy.base}: {got.status}")
                        bodies.add(got.body)
                if len(bodies) != 1:
                    raise BenchError(f"page {fmt}: the services answered different bytes")
        for fmt, accept in FORMS:
            for encoding, label in ENCODINGS:
                load = page_load(a, accept, encoding, a.workers_wrk_threads)
                runs: dict[int, list[WrkRun]] = {1: [], n: []}
                cores: dict[int, list[tuple[float, float, float]]] = {1: [], n: []}
                spreads: list[str] = []
                for _ in range(a.workers_reps):
                    for proxy in (one, many):
                        pids = [proxy.pid, *children(proxy.pid)]
                        service = [_cpu_seconds(pid) for pid in pids]
                        client = _children_cpu()
                        offset = proxy.log_size()
                        started = time.monotonic()
                        result = load(f"{proxy.simple}{project}/")
                        wall = time.monotonic() - started
                        used = [_cpu_seconds(p) - s for p, s in zip(pids, service, strict=True)]
                        runs[proxy.workers].append(result)
                        # Cores used by the service (all its processes), by its
                        # first process (the supervisor, with workers), by wrk.
                        cores[proxy.workers].append(
                            (sum(used) / wall, used[0] / wall, (_children_cpu() - client) / wall)
                        )
                        if proxy is many:
                            path = urlsplit(f"{proxy.simple}{project}/").path
                            spreads.append(_spread(proxy.served_by(path, offset, result.requests)))
                o = median([r.requests_per_second for r in runs[1]])
                m = median([r.requests_per_second for r in runs[n]])
                p99 = median([r.latency_p99_ms or 0.0 for r in runs[n]])
                bad = sum(r.bad_responses + r.socket_errors for r in runs[1] + runs[n])
                rep.add(
                    Row(
                        f"1. cached {files}-file page, {fmt}{label}: {n} workers",
                        f"{m:,.0f} req/s, p99 {p99:g} ms",
                        f"{o:,.0f} req/s one process",
                        f"{m / o:.2f}x",
                        f"≥ {RATE_TARGET}x one process (issue 13)",
                        verdict(m / o >= RATE_TARGET and bad == 0),
                    )
                )

                def cpu(rows: Sequence[tuple[float, float, float]], supervised: bool) -> str:
                    of = f" (supervisor {median([r[1] for r in rows]):.2f})" if supervised else ""
                    return (
                        f"service {median([r[0] for r in rows]):.2f} cores{of}, "
                        f"wrk {median([r[2] for r in rows]):.2f}"
                    )

                rep.note(
                    f"workers page {fmt}{label}: req/s one process "
                    + ", ".join(f"{r.requests_per_second:,.0f}" for r in runs[1])
                    + f"; {n} workers "
                    + ", ".join(
                        f"{r.requests_per_second:,.0f} ({c[0]:.2f} cores; {where})"
                        for r, c, where in zip(runs[n], cores[n], spreads, strict=True)
                    )
                    + f"; median CPU one process: {cpu(cores[1], False)}; "
                    f"{n} workers: {cpu(cores[n], True)}; non-2xx and socket errors {bad}"
                )
    finally:
        b.stop(one)
        b.stop(many)


def _cold_and_streaming(b: Bench, n: int) -> None:
    """
    Rows 2 and 3, on one service of ``n`` workers: a lone client of a cold
    file, then 8 clients of another, behind the throttled upstream; then 64
    clients streaming the large file, cold then cached, each worker's RSS
    monitored.
    """
    a, rep, upstream = b.args, b.report, b.upstream()
    cold = upstream.manifest["cold"]["files"]
    project = upstream.manifest["cold"]["project"]
    proxy = b.proxy("store-workers-cold", workers=n)
    try:
        upstream.control(
            latency=a.latency, throttle=int(a.workers_throttle_mb * MB), chunk=16384, reset=True
        )
        urls = b.file_urls(proxy.simple, project)
        lone_entry = cold[0]
        lone_url = urls[lone_entry["filename"]]
        offset = proxy.log_size()
        lone = fetch(lone_url, digest=True, timeout=300)
        check_digest([lone], lone_entry["sha256"], "lone cold client")
        lone_worker = _spread(proxy.served_by(urlsplit(lone_url).path, offset, 1))

        clients = 8
        size = f"{cold[1]['size'] / MB:.0f} MB"
        # The clients connect at once, and the worker that wakes first may
        # accept every connection; the row is about clients on every worker
        # (the others following the download from its partial file), so
        # another cold file is tried until they were spread, while files
        # last (at most ATTEMPTS), each attempt in the details.
        fetches: list[int] = []
        for attempt, entry in enumerate(cold[1 : 1 + ATTEMPTS], start=1):
            name = entry["filename"]
            url = urls[name]
            upstream.control(reset=True)
            offset = proxy.log_size()
            results = fetch_many(url, clients, timeout=300)
            check_digest(results, entry["sha256"], f"{clients} clients on {name}")
            fetches.append(upstream.file_fetches(name))
            spread = proxy.served_by(urlsplit(url).path, offset, clients)
            times = sorted(r.total for r in results)
            rep.note(
                f"workers cold, attempt {attempt}: {clients} clients on new connections, "
                f"spread {_spread(spread)}; {fetches[-1]} upstream GET(s); times "
                + ", ".join(f"{t:.3f}" for t in times)
            )
            if len(spread) == n:
                break
        rep.add(
            Row(
                f"2. {clients} clients, one cold {size} file, {n} workers: upstream GETs",
                ", ".join(str(f) for f in fetches),
                target="= 1 (each attempt)",
                met=verdict(set(fetches) == {1}),
            )
        )
        rep.add(
            Row(
                f"2. {clients} clients, {n} workers: clients per worker",
                _spread(spread),
                f"{len(fetches)} attempt(s)",
                target=f"on all {n} workers",
                met=verdict(len(spread) == n),
            )
        )
        rep.add(
            Row(
                f"2. {clients} clients, {n} workers: each client's total time",
                f"{times[0]:.3f} to {times[-1]:.3f} s",
                f"{lone.total:.3f} s lone client",
                f"{times[0] / lone.total:.3f}x to {times[-1] / lone.total:.3f}x",
                f"within {COLD_TARGET - 1:.0%} of the lone client's",
                verdict(max(abs(t / lone.total - 1) for t in times) <= COLD_TARGET - 1),
            )
        )
        rep.note(
            f"workers cold: lone client ({lone_worker}) {lone.total:.3f} s, TTFB "
            f"{lone.first_byte * 1000:.1f} ms"
        )
        _streaming(b, proxy)
    finally:
        b.stop(proxy)


def _streaming(b: Bench, proxy: Proxy) -> None:
    """
    Row 3: 64 clients streaming the large file through ``proxy``, cold
    (upstream unthrottled) then cached, each worker's peak RSS.
    """
    rep, upstream = b.report, b.upstream()
    big = upstream.manifest["big"]
    size = int(big["size"])
    upstream.control(latency=0, throttle=0, chunk=65536, reset=True)
    url = b.file_urls(proxy.simple, big["project"])[big["filename"]]
    path = urlsplit(url).path
    numbers = proxy.worker_numbers()
    clients = 64
    for state in ("cold", "cached"):
        offset = proxy.log_size()
        supervisor = rss_mib(proxy.pid) or 0.0
        with monitor_each(children(proxy.pid)) as monitors:
            done = drain_many(url, clients, repeat=1, expect_size=size, timeout=600)
        peaks = {numbers.get(pid, -1): mon.peak_mib for pid, mon in monitors.items()}
        worst = max(peaks.values())
        rep.add(
            Row(
                f"3. peak RSS per worker, {clients} clients streaming the {state} "
                f"{size / MB:.0f} MB file",
                ", ".join(f"{mib(p)}" for _, p in sorted(peaks.items())),
                f"{mib(supervisor)} supervisor",
                target=f"≤ {RSS_TARGET:g} MiB each",
                met=verdict(worst <= RSS_TARGET),
            )
        )
        extra = f"; {upstream.file_fetches(big['filename'])} upstream GET(s)"
        rep.note(
            f"workers streaming {state}: {done.aggregate_mbps:.0f} MB/s to all clients, "
            f"{done.wall:.1f} s; clients per worker {_spread(proxy.served_by(path, offset, 64))}"
            + (extra if state == "cold" else "")
        )
    got = fetch(url, digest=True, timeout=120)
    check_digest([got], big["sha256"], "the streamed file, cached")


def _pip(b: Bench, n: int) -> None:
    """
    Row 4: cold ``pip download`` of the install set through a fresh
    one-process service and a fresh ``n``-worker one, in alternating order.
    """
    a, rep = b.args, b.report
    install = slow_upstream(b)
    times: dict[int, list[float]] = {1: [], n: []}
    for i in range(a.pip_reps):
        env = clean_pip_env(tempfile.mkdtemp(dir=b.work, prefix="home-"))
        one = b.proxy(f"store-workers-pip-one-{i}")
        many = b.proxy(f"store-workers-pip-many-{i}", workers=n)
        try:
            order = (one, many) if i % 2 == 0 else (many, one)
            for proxy in order:
                tag = f"workers-{proxy.workers}-{i}"
                times[proxy.workers].append(timed_download(b, proxy.simple, tag, env))
        finally:
            b.stop(one)
            b.stop(many)
    o, m = median(times[1]), median(times[n])
    noise = (max(times[1]) - min(times[1])) / o
    rep.add(
        Row(
            f"4. pip download, {len(install['files'])} files, cold, {n} workers",
            f"{m:.2f} s",
            f"{o:.2f} s one process",
            f"{m / o:.3f}x",
            f"≤ {PIP_TARGET}x (one process's runs spread {noise:.0%})",
            verdict(m / o <= PIP_TARGET),
        )
    )
    rep.note(
        "workers pip seconds per repetition (one process / workers): "
        + ", ".join(f"{x:.2f}/{y:.2f}" for x, y in zip(times[1], times[n], strict=True))
    )


def download_owners(storage: str) -> set[int]:
    """
    The processes that hold the claim on a partial download in ``tmp/``:
    an exclusive ``flock`` on the file, which ``/proc/locks`` lists with
    its holder's pid and the file's inode.
    """
    tmp = os.path.join(storage, "tmp")
    inodes = set()
    for name in os.listdir(tmp):
        if name.startswith("dl-"):
            try:
                inodes.add(os.stat(os.path.join(tmp, name)).st_ino)
            except FileNotFoundError:  # renamed into place meanwhile
                continue
    owners = set()
    with open("/proc/locks") as f:
        for line in f:
            # "1: FLOCK  ADVISORY  WRITE 5675 08:01:1234 0 EOF" (waiters: "1: -> FLOCK ...")
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[3] == "WRITE":
                if int(fields[5].rsplit(":", 1)[1]) in inodes:
                    owners.add(int(fields[4]))
    return owners


def _accepting(proxy: Proxy) -> int:
    """
    How many times a worker of ``proxy`` started accepting connections.
    """
    return len(WORKER_ACCEPTING.findall(proxy.log_since(0)))


def _kills(b: Bench, n: int) -> None:
    """
    Row 5: ``--workers-kills`` rounds of ``crash``'s checks, a random half
    of the files forgotten, ``--crash-files`` concurrent cold downloads,
    and a SIGKILL of the worker that owns one of them (of a random worker
    when none is in flight); then the service restarted on the same
    storage and checked once more.
    """
    a, rep = b.args, b.report
    rng = random.Random(a.crash_seed)
    workdir = tempfile.mkdtemp(dir=b.work, prefix="workers-kills-")
    stats = {"owner": 0, "idle": 0, "right": 0, "cut": 0, "wrong": 0, "checked": 0, "bad": 0}
    problems: list[str] = []
    restarts: list[float] = []
    started = time.monotonic()
    with Processes() as procs:
        upstream, project, wanted = crash_upstream(procs, workdir, a)
        proxy = start_proxy(procs, workdir, "kills", upstream.simple, workers=n)
        up_since = time.monotonic()
        for round_ in range(a.workers_kills):
            # A worker that dies within QUICK_EXIT of its start counts as
            # failing to start, and the supervisor waits longer before each
            # such restart; the kills stand for rare crashes, not a crash
            # loop, so each falls on workers that have been up that long.
            time.sleep(max(0.0, up_since + QUICK_EXIT - time.monotonic()))
            problems += served_tree_problems(proxy.storage, wanted)
            checked, bad = check_served(proxy, project, wanted)
            stats["checked"] += checked
            stats["bad"] += bad
            forget_half(proxy.storage, project, rng)
            threads, results = start_downloads(proxy, project, wanted)
            time.sleep(rng.uniform(0.05, 1.2))
            workers = children(proxy.pid)
            owners = sorted(download_owners(proxy.storage) & set(workers))
            stats["owner" if owners else "idle"] += 1
            before = _accepting(proxy)
            os.kill(rng.choice(owners or workers), signal.SIGKILL)
            killed = time.monotonic()
            for t in threads:
                t.join(timeout=60)
            if any(t.is_alive() for t in threads):
                problems.append(f"round {round_}: a client still downloading 60 s after the kill")
            clients_done = time.monotonic() - killed
            if clients_done > 15:
                problems.append(f"round {round_}: clients took {clients_done:.0f} s after the kill")
            for name, body in results.items():
                if body is None:
                    stats["cut"] += 1
                elif hashlib.sha256(body).hexdigest() == wanted[name]:
                    stats["right"] += 1
                else:
                    stats["wrong"] += 1
            # The supervisor starts the worker again (after a pause that
            # grows with quick failures); the next round needs all of them.
            deadline = killed + RESTART_TIMEOUT
            while _accepting(proxy) <= before and time.monotonic() < deadline:
                time.sleep(0.05)
            if _accepting(proxy) <= before:
                raise BenchError(f"round {round_}: the killed worker was not replaced")
            up_since = time.monotonic()
            restarts.append(up_since - killed)
        takeovers = sum(1 for m, p, r in upstream.requests() if m == "GET" and r is not None)
        procs.stop(proxy.proc)
        proxy = start_proxy(procs, workdir, "kills", upstream.simple, fresh=False, workers=n)
        if os.listdir(os.path.join(proxy.storage, "tmp")):
            problems.append("tmp/ not emptied at the restart")
        problems += served_tree_problems(proxy.storage, wanted)
        checked, bad = check_served(proxy, project, wanted)
        stats["checked"] += checked
        stats["bad"] += bad
        procs.stop(proxy.proc)
        b.check_log(proxy)
    elapsed = time.monotonic() - started
    failures = stats["wrong"] + stats["bad"] + len(problems)
    rep.add(
        Row(
            f"5. SIGKILL of a downloading worker x{a.workers_kills}: wrong responses, "
            "corrupt or partial files",
            f"{stats['wrong']} wrong, {stats['bad']} served wrong, {len(problems)} problems",
            f"{stats['right']} right, {stats['cut']} cut off",
            target="0",
            met=verdict(failures == 0),
        )
    )
    rows = [
        ("SIGKILLs of the worker owning a download", stats["owner"]),
        ("SIGKILLs of a random worker (no download in flight)", stats["idle"]),
        ("client downloads served right", stats["right"]),
        ("client downloads cut off", stats["cut"]),
        ("complete-looking wrong responses", stats["wrong"]),
        ("upstream GETs with Range (take-overs)", takeovers),
        ("stored files fetched back", stats["checked"]),
        ("served with wrong bytes", stats["bad"]),
        ("partial/corrupt/unknown files served, stalls, tmp/ not emptied", len(problems)),
        ("worker replaced after, median / longest", f"{median(restarts):.1f} / "
         f"{max(restarts):.1f} s" if restarts else "—"),
        ("elapsed", f"{elapsed:.0f} s"),
    ]  # fmt: skip
    rep.table(
        Table(
            f"workers: SIGKILL of a downloading worker ({n} workers)",
            ["check", "value"],
            [[label, str(value)] for label, value in rows],
            f"{a.crash_files} cold files of {a.crash_file_size} B per round, upstream "
            f"{a.crash_throttle} B/s per response; seed {a.crash_seed}",
        )
    )
    for problem in problems[:20]:
        rep.note(f"workers kill problem: {problem}")
    if failures:
        raise BenchError(
            f"{stats['wrong']} wrong responses, {stats['bad']} files served with wrong bytes, "
            f"{len(problems)} problems"
        )

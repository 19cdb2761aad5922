"""
Slow-header clients (issue 14, item 3): with 1,000 connections each
sending its request head a byte at a time, a normal client's page request
still answers within 100 ms; the slow ones are cut at the head deadline;
one address gets no more than its share of connections.

The slow connections come from 20 loopback addresses (127.0.0.2 to
127.0.0.21, 50 each), under the per-address cap, so that all 1,000 are
really open; the normal client comes from 127.0.0.1 on a new connection
per request (a worse case than pip's kept-alive ones).  The proxy runs
with ``--header-timeout 20`` (the default).
"""

from __future__ import annotations

import resource
import select
import socket
import statistics
import tempfile
import threading
import time

import attrs

from bench import BenchError
from bench.context import Bench
from bench.processes import Processes
from bench.report import Table, ms, verdict
from bench.services import Proxy, start_proxy, start_upstream

#: The target: a page request's time with the slow connections open.
TARGET = 0.100

#: Addresses the slow connections come from.
SLOW_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 22)]

#: Seconds between two bytes of a slow head.
DRIP_INTERVAL = 2.0

#: What a slow client sends, a byte at a time after the first line.
SLOW_HEAD = b"GET /simple/bench-page/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100


@attrs.define
class SlowClients:
    """
    Connections that send their head a byte every `DRIP_INTERVAL`, from a
    thread of their own, until told to stop.
    """

    sockets: list[socket.socket]
    stop: threading.Event = attrs.field(factory=threading.Event)
    sent: int = 0

    def drip(self) -> None:
        position = SLOW_HEAD.index(b"\r\n") + 2
        while not self.stop.wait(DRIP_INTERVAL) and position < len(SLOW_HEAD):
            for s in self.sockets:
                try:
                    s.send(SLOW_HEAD[position : position + 1])
                except OSError:
                    pass
            position += 1
            self.sent = position

    def still_open(self) -> int:
        """
        How many the proxy has not closed (nor answered) yet.
        """
        readable, _, _ = select.select(self.sockets, [], [], 0) if self.sockets else ([], [], [])
        return len(self.sockets) - len(readable)

    def answers(self) -> dict[str, int]:
        """
        The status line each closed connection got, counted.
        """
        counts: dict[str, int] = {}
        for s in self.sockets:
            try:
                s.setblocking(False)
                data = s.recv(64)
            except OSError:
                data = b""
            line = data.split(b"\r\n", 1)[0].decode("latin-1") or "(open, or closed silently)"
            counts[line] = counts.get(line, 0) + 1
        return counts

    def close(self) -> None:
        self.stop.set()
        for s in self.sockets:
            s.close()


def _connect(port: int, source: str, first: bytes) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    if first:
        s.sendall(first)
    return s


def _page_request(proxy: Proxy, path: str) -> float:
    """
    One page request on a new connection, read to its end; seconds.

    :raises BenchError: when the answer is not a 200.
    """
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: application/vnd.pypi.simple.v1+json\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    with _connect(proxy.port, "127.0.0.1", request) as s:
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    elapsed = time.perf_counter() - started
    status = b"".join(chunks).split(b"\r\n", 1)[0]
    if b" 200 " not in status:
        raise BenchError(f"page request answered {status!r}")
    return elapsed


def _timings(proxy: Proxy, path: str, count: int) -> list[float]:
    return [_page_request(proxy, path) for _ in range(count)]


def run(b: Bench) -> None:
    """
    Time page requests without and with 1,000 slow-header connections
    open; check the deadline and the per-address cap.
    """
    a, rep = b.args, b.report
    count, slow_count = a.slowloris_requests, a.slowloris_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * slow_count + 1024))
    # The proxy inherits the limit: its connection cap stays above the slow ones.
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    rep.settings["slowloris"] = (
        f"{slow_count} slow-header connections from {len(SLOW_ADDRESSES)} addresses, a byte "
        f"every {DRIP_INTERVAL:g} s; {count} page requests, each on a new connection; "
        f"file descriptor limit {wanted}"
    )
    work = tempfile.mkdtemp(dir=b.work, prefix="slowloris-")
    with Processes() as procs:
        upstream = start_upstream(
            procs, work, ["--big-size", "1000", "--cold-files", "1", "--export-dir", work]
        )
        proxy = start_proxy(procs, work, "slowloris", upstream.simple)
        path = f"/simple/{upstream.manifest['page']['project']}/"
        _page_request(proxy, path)  # cached from now on
        quiet = _timings(proxy, path, count)
        per_address = -(-slow_count // len(SLOW_ADDRESSES))
        first_line = SLOW_HEAD[: SLOW_HEAD.index(b"\r\n") + 2]
        slow = SlowClients(
            [
                _connect(proxy.port, SLOW_ADDRESSES[i // per_address], first_line)
                for i in range(slow_count)
            ]
        )
        dripper = threading.Thread(target=slow.drip, daemon=True)
        dripper.start()
        try:
            time.sleep(DRIP_INTERVAL + 0.5)  # every slow head has begun dripping
            open_before = slow.still_open()
            loaded = _timings(proxy, path, count)
            open_after = slow.still_open()
            # Past the deadline (20 s from each head's first byte).
            deadline = time.monotonic() + 30
            while slow.still_open() and time.monotonic() < deadline:
                time.sleep(0.5)
            answers = slow.answers()
        finally:
            slow.close()
        capped = _cap_check(proxy, a.slowloris_cap_probe)
    rows = [
        _row("no slow connections", quiet, None),
        _row(f"{open_before} slow connections open ({open_after} at the end)", loaded, TARGET),
    ]
    rep.table(
        Table(
            "slowloris: page requests while slow-header connections are open",
            ["state", "median", "p95", "max", "target (max)", "met?"],
            rows,
            intro=(
                f"{count} requests of a cached page, each on a new connection; then the "
                f"slow ones' answers after the head deadline: "
                + ", ".join(f"{n} × {line}" for line, n in sorted(answers.items()))
                + f"; {capped}"
            ),
        )
    )


def _row(label: str, timings: list[float], target: float | None) -> list[str]:
    worst = max(timings)
    p95 = statistics.quantiles(timings, n=20)[-1] if len(timings) > 1 else worst
    met = None if target is None else worst <= target
    goal = "—" if target is None else f"≤ {ms(target)}"
    return [label, ms(statistics.median(timings)), ms(p95), ms(worst), goal, verdict(met)]


def _cap_check(proxy: Proxy, count: int) -> str:
    """
    Open ``count`` silent connections from one address: how many got in,
    and what the others were told.
    """
    sockets = [_connect(proxy.port, "127.0.0.99", b"") for _ in range(count)]
    time.sleep(0.5)
    refused = 0
    for s in sockets:
        readable, _, _ = select.select([s], [], [], 0)
        if readable and s.recv(64).startswith(b"HTTP/1.1 503"):
            refused += 1
        s.close()
    return f"{count} silent connections from one address: {count - refused} open, {refused} got 503"

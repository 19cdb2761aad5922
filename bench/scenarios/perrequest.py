"""
Python cost of one cached page request, in process: proxypypi's site next
to bare twisted.web answering with the same bytes.

wrk's figures on a small shared machine move by 15% between runs of the
same code; this loop does not.  It starts the service (as ``twistd`` would,
with the text log observer writing to ``/dev/null``) in front of a fake
upstream in the same process, warms one 300-file page, then feeds complete
HTTP requests to a connection of each site over an in-memory transport and
reports the best of several rounds in microseconds per request.  Kernel
and socket costs are left out on purpose: they are the same for both.

Use it to A/B a change to the request path; the ``cached`` scenario remains
the judge of throughput.

The measurement runs in a process of its own, this file run as a script
by `run`: Twisted's reactor runs only once per process and takes over its
signals, and the benchmark goes on after this scenario.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogBeginner
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from bench import REPO, BenchError
from bench.context import Bench
from bench.processes import Processes, read_line
from bench.report import Table
from bench.upstream import PAGE_PROJECT, UPLOAD_TIME, PrehashedDist, page_set
from proxypypi.config.settings import build_config
from proxypypi.ops import logs
from proxypypi.service.compose import make_service
from proxypypi.service.lifecycle import WebServer
from proxypypi.testing import FakeIndex, serve


def run(b: Bench) -> None:
    """
    Measure in a process of its own; a table of the two sites' cost.
    """
    a, rep = b.args, b.report
    rep.settings["perrequest"] = (
        f"{a.page_files} files on the page, Accept {a.perrequest_accept}, "
        f"gzip {'asked' if a.perrequest_gzip else 'not asked'}; best of "
        f"{a.perrequest_rounds} rounds of {a.perrequest_count} requests"
    )
    got = measure_apart(a, a.perrequest_accept, a.perrequest_gzip)
    proxy_us, floor_us = got["proxy_us"], got["floor_us"]
    rep.table(
        Table(
            "perrequest: Python cost of one cached page request, in process",
            ["", "per request"],
            [
                ["proxypypi", f"{proxy_us:.1f} us"],
                ["bare twisted.web", f"{floor_us:.1f} us"],
                ["proxypypi adds", f"{proxy_us - floor_us:.1f} us"],
            ],
            intro=f"page: {a.page_files} files, {got['bytes']:,} bytes, "
            f"{a.perrequest_accept}, gzip={a.perrequest_gzip}",
        )
    )


def measure_apart(
    a: argparse.Namespace, accept: str, gzip: bool, settings: Sequence[str] = ()
) -> dict[str, Any]:
    """
    Run the measurement in a process of its own: the page's size and both
    sites' microseconds per request.

    :param settings: ``KEY=VALUE`` settings of the proxy measured (the
        policy scenario gives it a policy).
    :raises BenchError: when it prints no result.
    """
    # -P: this file's directory stays off sys.path, where its neighbours'
    # names (pip, metrics) would shadow the real modules.
    argv = [sys.executable, "-P", os.path.abspath(__file__), "--accept", accept]
    argv += ["--files", str(a.page_files), "--rounds", str(a.perrequest_rounds)]
    argv += ["--count", str(a.perrequest_count), *(["--gzip"] if gzip else [])]
    for setting in settings:
        argv += ["--setting", setting]
    with Processes() as procs:
        proc = procs.start(
            argv,
            env={**os.environ, "PYTHONPATH": REPO},
            cwd=REPO,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = read_line(proc, proc.stdout, timeout=600)
    if not line:
        raise BenchError("the per-request measurement printed no result")
    got: dict[str, Any] = json.loads(line)
    return got


class Bytes(Resource):
    """
    Every GET answered with one fixed body: the floor.
    """

    isLeaf = True

    def __init__(self, body: bytes, headers: dict[bytes, bytes]) -> None:
        super().__init__()
        self.body = body
        self.headers = headers

    def render_GET(self, request: Request) -> bytes:
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


def per_request_us(site: Any, raw: bytes, rounds: int, count: int) -> tuple[float, bytes]:
    """
    The best of ``rounds`` of ``count`` requests on one keep-alive
    connection, in microseconds per request; and the first response.
    """
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    first = transport.value()
    transport.clear()
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        for _ in range(count):
            channel.dataReceived(raw)
            transport.clear()
        best = min(best, (time.perf_counter() - started) / count * 1e6)
    return best, first


def split_response(response: bytes) -> tuple[dict[bytes, bytes], bytes]:
    """
    The headers (lower-cased names) and body of a complete response.
    """
    head, _, body = response.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


async def measure(reactor: Any, argv: list[str]) -> None:
    """
    The measurement process: print one JSON line, the page's size and
    both sites' microseconds per request.
    """
    p = argparse.ArgumentParser()
    p.add_argument("--accept", required=True)
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--files", type=int, required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    index = FakeIndex(reactor)
    for dist in page_set(args.files):
        index.add(PrehashedDist.of(dist), upload_time=UPLOAD_TIME)
    upstream_port, base = await serve(reactor, index.resource())

    logs.use_logfile(os.devnull)
    globalLogBeginner.beginLoggingTo([logs.text_observer()], redirectStandardIO=False)
    with tempfile.TemporaryDirectory() as storage:
        settings = dict(s.split("=", 1) for s in args.setting)
        config = build_config(
            {"storage": storage, "workers": 1, **settings},
            upstreams=[base + "simple/"],
            listen=["tcp:0:interface=127.0.0.1"],
        )
        service = make_service(config, reactor)
        service.startService()
        try:
            web = next(s for s in service if isinstance(s, WebServer))  # type: ignore[attr-defined]
            raw = (
                f"GET /simple/{PAGE_PROJECT}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Accept: {args.accept}\r\n"
                + ("Accept-Encoding: gzip, deflate\r\n" if args.gzip else "")
                + "\r\n"
            ).encode()
            # The first request fetches the page (asynchronously); wait for
            # it to be held in memory, so every timed request is a hit.
            for _ in range(200):
                _, response = per_request_us(web.site, raw, 0, 0)
                if response.startswith(b"HTTP/1.1 200"):
                    break
                await task.deferLater(reactor, 0.05, lambda: None)
            else:
                raise SystemExit("the page never came from the fake upstream")
            headers, body = split_response(response)
            keep = (b"content-type", b"content-encoding", b"vary", b"cache-control", b"etag")
            bare = Site(Bytes(body, {k: v for k, v in headers.items() if k in keep}))
            bare.log = lambda request: None  # type: ignore[method-assign]
            proxy_us, _ = per_request_us(web.site, raw, args.rounds, args.count)
            floor_us, _ = per_request_us(bare, raw, args.rounds, args.count)
        finally:
            await service.stopService()
            stopping = upstream_port.stopListening()
            if stopping is not None:
                await stopping
    result = {"bytes": len(body), "proxy_us": proxy_us, "floor_us": floor_us}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    task.react(lambda reactor: task.ensureDeferred(measure(reactor, sys.argv[1:])))

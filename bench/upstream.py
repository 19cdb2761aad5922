"""
The benchmark's fake upstream: a `proxypypi.testing.FakeIndex` in its own
process, on an ephemeral loopback port, with the real reactor.

It builds every distribution the benchmark needs, writes a copy of the
large file (for nginx, the disk reference) to ``--export-dir``, prints one
JSON line (the port and a manifest of what it serves) on stdout, and
serves until it is terminated, its parent goes away, or ``--max-seconds``
pass.

Two extra resources beside the index, for the benchmark driver only:

- ``GET /_stats``: every request recorded so far, as JSON
  (``{"requests": [[method, path, range], ...]}``).
- ``POST /_control?latency=S&throttle=BPS&chunk=N&reset=1``: change the
  fake's knobs (``throttle=0`` means unthrottled) and/or forget the
  request log.  Answers the knobs now in force.

Started by the benchmark (``bench/services.py``); ``PYTHONPATH`` must hold
the repository root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet import defer, task
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from proxypypi.testing import Dist, FakeIndex, make_wheel, serve

#: Name of the project holding the large cached-throughput file.
BIG_PROJECT = "bench-big"
#: Name of the project whose files are fetched cold (one file per trial).
COLD_PROJECT = "bench-cold"
#: Name of the project with the large page.
PAGE_PROJECT = "bench-page"
#: Root of the pip install set.
APP_PROJECT = "bench-app"
#: A fixed upload time, so pages are identical run to run.
UPLOAD_TIME = "2025-01-02T03:04:05.123456Z"


@attrs.frozen
class PrehashedDist(Dist):
    """
    A `Dist` whose sha256 is computed once: ``FakeIndex`` asks for it on
    every page render and file response, which for a 200 MB file would
    stall the fake for a noticeable fraction of a second each time.
    """

    digest: str = attrs.field(default="", repr=False)

    @property
    def sha256(self) -> str:
        """
        The precomputed hex sha256 of the file.
        """
        return self.digest

    @classmethod
    def of(cls, dist: Dist) -> PrehashedDist:
        """
        Wrap ``dist``, hashing it once.
        """
        return cls(dist.filename, dist.data, dist.metadata, hashlib.sha256(dist.data).hexdigest())


def install_set() -> list[Dist]:
    """
    The 37 wheels of the ``pip download`` scenario: ``bench-app`` requires
    six libraries, each of which requires five leaves (1 + 6 + 30 = 37), with
    payload sizes from 20 kB to 5 MB (about 20 MB in all), like a small web
    application's dependency tree.
    """
    mid_sizes = [3_000_000, 1_500_000, 800_000, 400_000, 2_000_000, 5_000_000]
    leaf_sizes = [30_000, 120_000, 60_000, 250_000, 500_000]
    dists: list[Dist] = []
    mids = [f"bench-lib{i}" for i in range(1, len(mid_sizes) + 1)]
    dists.append(
        make_wheel(
            APP_PROJECT,
            "1.0",
            requires_dist=[f"{m}>=1.0" for m in mids],
            requires_python=">=3.8",
            payload_size=20_000,
        )
    )
    for i, (mid, size) in enumerate(zip(mids, mid_sizes, strict=True), start=1):
        leaves = [f"bench-leaf{i}-{j}" for j in range(1, len(leaf_sizes) + 1)]
        dists.append(
            make_wheel(mid, "1.2.0", requires_dist=[f"{x}>=0.1" for x in leaves], payload_size=size)
        )
        for leaf, leaf_size in zip(leaves, leaf_sizes, strict=True):
            dists.append(make_wheel(leaf, "0.3.1", payload_size=leaf_size))
    return dists


def page_set(count: int) -> list[Dist]:
    """
    ``count`` small wheels of one project, for the page benchmark.
    """
    return [make_wheel(PAGE_PROJECT, f"{i // 10}.{i % 10}.0") for i in range(count)]


def _entry(dist: PrehashedDist) -> dict[str, Any]:
    return {"filename": dist.filename, "size": len(dist.data), "sha256": dist.sha256}


class StatsResource(Resource):
    """
    ``/_stats``: the request log as JSON.
    """

    isLeaf = True

    def __init__(self, index: FakeIndex) -> None:
        super().__init__()
        self.index = index

    def render_GET(self, request: IRequest) -> bytes:
        """
        Every recorded request as ``[method, path, range]``.
        """
        rows = [[r.method, r.path, r.range] for r in self.index.requests]
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"requests": rows}).encode()


class ControlResource(Resource):
    """
    ``/_control``: change latency, throttle, chunk size; reset the log.
    """

    isLeaf = True

    def __init__(self, index: FakeIndex) -> None:
        super().__init__()
        self.index = index

    def render_POST(self, request: IRequest) -> bytes:
        """
        Apply the query arguments; answer the knobs in force.
        """
        args: dict[bytes, list[bytes]] = getattr(request, "args", {}) or {}

        def arg(name: str) -> str | None:
            values = args.get(name.encode())
            return values[0].decode() if values else None

        latency, throttle, chunk, reset = (
            arg("latency"),
            arg("throttle"),
            arg("chunk"),
            arg("reset"),
        )
        if latency is not None:
            self.index.latency = float(latency)
        if throttle is not None:
            self.index.throttle = int(throttle) or None
        if chunk is not None:
            self.index.chunk_size = int(chunk)
        if reset:
            self.index.requests.clear()
        request.setHeader(b"content-type", b"application/json")
        state = {
            "latency": self.index.latency,
            "throttle": self.index.throttle,
            "chunk": self.index.chunk_size,
        }
        return json.dumps(state).encode()


class BenchRoot(Resource):
    """
    The fake index at ``/``, plus ``/_stats`` and ``/_control``.
    """

    def __init__(self, index: FakeIndex) -> None:
        super().__init__()
        self._index_resource = index.resource()
        self.putChild(b"_stats", StatsResource(index))
        self.putChild(b"_control", ControlResource(index))

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """
        Everything else goes to the fake index, which reads the full path.
        """
        return self._index_resource


def build(args: argparse.Namespace, index: FakeIndex) -> dict[str, Any]:
    """
    Add every benchmark distribution to ``index``; return the manifest.
    """
    manifest: dict[str, Any] = {}

    def add(dist: Dist, offer_metadata: bool = True) -> PrehashedDist:
        prehashed = PrehashedDist.of(dist)
        index.add(prehashed, upload_time=UPLOAD_TIME, offer_metadata=offer_metadata)
        return prehashed

    big = add(make_wheel(BIG_PROJECT, "1.0", payload_size=args.big_size))
    export = os.path.join(args.export_dir, big.filename)
    with open(export, "wb") as f:
        f.write(big.data)
    manifest["big"] = {"project": BIG_PROJECT, "export": export, **_entry(big)}

    cold = [
        add(make_wheel(COLD_PROJECT, f"{i}.0", payload_size=args.cold_size))
        for i in range(1, args.cold_files + 1)
    ]
    manifest["cold"] = {"project": COLD_PROJECT, "files": [_entry(d) for d in cold]}

    for dist in page_set(args.page_files):
        add(dist)
    manifest["page"] = {"project": PAGE_PROJECT, "files": args.page_files}

    # Offered without core metadata, as by the index of issue 16: uv then
    # probes every wheel with HEAD and Range requests, unless the proxy
    # offers the metadata of the wheels it stored.
    installed = [add(d, offer_metadata=False) for d in install_set()]
    manifest["install"] = {
        "root": APP_PROJECT,
        "files": [_entry(d) for d in installed],
        "bytes": sum(len(d.data) for d in installed),
    }
    return manifest


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """
    Build, serve, announce, then wait to be stopped.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big-size", type=int, default=200 * 1000 * 1000)
    parser.add_argument("--cold-size", type=int, default=4 * 1000 * 1000)
    parser.add_argument("--cold-files", type=int, default=8)
    parser.add_argument("--page-files", type=int, default=300)
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args(argv)

    index = FakeIndex(reactor)
    manifest = build(args, index)
    port, base = await serve(reactor, BenchRoot(index))
    manifest["port"] = int(base.rstrip("/").rsplit(":", 1)[1])
    manifest["base"] = base
    sys.stdout.write(json.dumps(manifest) + "\n")
    sys.stdout.flush()

    parent = os.getppid()
    stopped: defer.Deferred[None] = defer.Deferred()

    def stop() -> None:
        if not stopped.called:
            stopped.callback(None)

    def watchdog() -> None:
        # Bounded life: stop when orphaned (the time limit is below).
        if os.getppid() != parent:
            stop()

    loop = task.LoopingCall(watchdog)
    loop.clock = reactor
    loop.start(1.0, now=False)
    limit = reactor.callLater(args.max_seconds, stop)
    try:
        await stopped
    finally:
        loop.stop()
        if limit.active():
            limit.cancel()
        stopping = port.stopListening()
        if stopping is not None:
            await stopping


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))

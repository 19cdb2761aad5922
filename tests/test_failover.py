"""
Failover over real sockets: a real ``pip download`` through the service in
front of one group of three fake upstreams on 127.0.0.1, one not listening,
one answering 500 to everything, one working; ``/health`` tells the truth
afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory

from proxypypi.testing import FakeIndex, Fault, serve
from tests.support.clients import find_uv, pip_download, run
from tests.support.proxies import CHAIN, CHAIN_FILES, install_set, start_proxy


async def free_port() -> int:
    """
    A loopback port nothing listens on (bound, then released).
    """
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
    number: int = port.getHost().port
    await port.stopListening()
    return number


@pytest_twisted.ensureDeferred
async def test_pip_through_dead_broken_and_working_member(
    clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    pip downloads a dependency chain while two of the three members of the
    only group fail; each failing member is taken out, and /health shows
    which and why while the group stays usable (200).
    """
    good, bad = FakeIndex(reactor), FakeIndex(reactor)
    dists = {}
    for dist, extra in install_set():
        for index in (good, bad):
            index.add(dist, **extra)  # type: ignore[arg-type]
        dists[dist.filename] = dist
    bad.fault = Fault(status=500)
    good_port, good_base = await serve(reactor, good.resource())
    bad_port, bad_base = await serve(reactor, bad.resource())
    dead_base = f"http://127.0.0.1:{await free_port()}/"
    urls = [dead_base + "simple/", bad_base + "simple/", good_base + "simple/"]
    running = await start_proxy(urls, os.path.join(str(tmp_path), "data"), grouped=True)
    try:
        base = running.base
        dest = os.path.join(str(tmp_path), "d")
        await pip_download(running.simple, dest, clean_env, *CHAIN)
        assert sorted(os.listdir(dest)) == CHAIN_FILES
        for name in os.listdir(dest):
            with open(os.path.join(dest, name), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == dists[name].sha256

        # uv too, with the working member resetting the connection half-way
        # through a wheel once: the download resumes, uv sees nothing wrong.
        delta = next(d for d in dists.values() if d.filename.startswith("proto_delta"))
        good.fault_for["/files/" + delta.filename] = Fault(drop_after=100_000, times=1)
        uv = find_uv()
        assert uv is not None
        target = os.path.join(str(tmp_path), "uv-target")
        out, code = await run(
            [uv, "pip", "install", "--python", sys.executable, "--target", target,
             "--index-url", base + "simple/", "proto-alpha", "proto-delta"],
            clean_env,
        )  # fmt: skip
        assert code == 0, out
        assert os.path.isdir(os.path.join(target, "proto_delta"))
        assert good.count("/files/" + delta.filename, "GET") >= 2  # the reset, then a resume

        response = await treq.get(base + "health", persistent=False)
        report = json.loads(await response.content())
        assert response.code == 200, report
        states = {u["url"]: u for u in report["upstreams"]}
        dead, broken, working = (states[u] for u in urls)
        assert dead["state"] in ("down", "probing"), dead
        assert "refused" in dead["last-error"], dead
        assert broken["state"] in ("suspect", "down", "probing"), broken
        assert "HTTP 500" in broken["last-error"] and broken["error-rate"] > 0, broken
        # One reset among many good answers leaves the working member healthy.
        assert working["state"] == "healthy" and working["error-rate"] < 0.2, working
        assert working["latency-ms"] is not None and working["outstanding"] == 0, working
        # The broken member saw only a few requests, every one answered 500.
        assert 1 <= bad.count("/simple/proto-", "GET") <= 3
        assert bad.count("/files/") <= 1
    finally:
        await running.stop()
        await good_port.stopListening()
        await bad_port.stopListening()

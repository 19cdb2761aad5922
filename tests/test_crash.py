"""
Crash safety: SIGKILL the service in the middle of downloads, restart it on
the same storage, and check that nothing partial or corrupt is ever served.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater

from proxypypi.testing import make_wheel
from tests.support.clients import spawn, until
from tests.support.proxies import Upstream

KILLS = 3


def check_storage(root: str, upstream: Upstream) -> int:
    """
    Every stored file matches its upstream hash; no partial file is in the
    served tree; every page parses.  Returns the number of files checked.
    """
    checked = 0
    for dirpath, _dirs, names in os.walk(os.path.join(root, "files")):
        for name in names:
            assert not name.endswith(".part"), name
            with open(os.path.join(dirpath, name), "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            dist = upstream.dists[name.removesuffix(".metadata")]
            want = dist.metadata_sha256 if name.endswith(".metadata") else dist.sha256
            assert digest == want, name
            checked += 1
    for name in os.listdir(os.path.join(root, "pages")):
        if name.endswith(".json"):
            with open(os.path.join(root, "pages", name), "rb") as f:
                json.loads(f.read())
    return checked


async def fetch(url: str) -> None:
    try:
        response = await treq.get(url, persistent=False)
        await response.content()
    except Exception:
        pass  # the service was killed under us: expected


@pytest_twisted.ensureDeferred
async def test_sigkill_mid_download(upstream: Upstream, tmp_path: object) -> None:
    """
    After each of several SIGKILLs at random moments of a cold install loop,
    a restarted service serves only complete, verified files.
    """
    rng = random.Random(1234)
    dists = [make_wheel(f"proto-crash{i}", "1.0", payload_size=200_000) for i in range(4)]
    for dist in dists:
        upstream.index.add(dist)
        upstream.dists[dist.filename] = dist
    upstream.index.throttle = 1_000_000
    data = os.path.join(str(tmp_path), "data")
    args = ["proxypypi", "--upstream", upstream.simple, "--listen",
            "tcp:0:interface=127.0.0.1", "--storage", data]  # fmt: skip
    for _ in range(KILLS):
        proc = spawn(args, str(tmp_path))
        port = await proc.port
        base = f"http://127.0.0.1:{port}/"
        gets = [
            Deferred.fromCoroutine(fetch(f"{base}files/{d.project}/{d.filename}")) for d in dists
        ]
        # Not a wait for anything: the kill lands at a random moment of the
        # downloads, which is the point of the test.
        await deferLater(reactor, rng.uniform(0.05, 0.6), lambda: None)
        os.kill(proc.transport.pid, signal.SIGKILL)  # type: ignore[union-attr]
        assert await proc.ended == -signal.SIGKILL
        await DeferredList(gets)
        check_storage(data, upstream)

    proc = spawn(args, str(tmp_path))
    try:
        port = await proc.port
        # Partial files of the killed runs are gone at start; a storage
        # probe's file may come and go meanwhile.
        tmp = os.path.join(data, "tmp")
        await until(lambda: os.listdir(tmp) == [], "tmp/ emptied of the killed runs' files", 5)
        for d in dists:
            response = await treq.get(
                f"http://127.0.0.1:{port}/files/{d.project}/{d.filename}", persistent=False
            )
            assert await response.content() == d.data
        assert check_storage(data, upstream) >= len(dists)
    finally:
        proc.transport.signalProcess("TERM")  # type: ignore[union-attr]
        await proc.ended

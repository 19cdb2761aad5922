"""
The service as operators run it: ``twistd -n proxypypi`` and
``twistd -ny proxypypi.tac`` in a subprocess, in front of the fake upstream.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest_twisted
import treq

from proxypypi.testing import make_wheel
from tests.support.clients import ROOT, Twistd, serves_then_stops, spawn
from tests.support.proxies import Upstream


@pytest_twisted.async_yield_fixture
async def twistd_proxy(upstream: Upstream, tmp_path: object) -> AsyncIterator[tuple[Twistd, str]]:
    proc = spawn(
        ["proxypypi", "--upstream", upstream.simple, "--listen", "tcp:0:interface=127.0.0.1",
         "--storage", "data"],
        str(tmp_path),
    )  # fmt: skip
    try:
        port = await proc.port
        yield proc, f"http://127.0.0.1:{port}/"
    finally:
        if not proc.ended.called:
            os.kill(proc.transport.pid, signal.SIGKILL)  # type: ignore[union-attr]
            await proc.ended


@pytest_twisted.ensureDeferred
async def test_twistd_serves_and_stops_gracefully(
    upstream: Upstream, twistd_proxy: tuple[Twistd, str]
) -> None:
    """
    The plugin serves pages; SIGTERM lets a running download response
    finish, then the process exits cleanly.
    """
    proc, base = twistd_proxy
    response = await treq.get(base + "simple/proto-alpha/", persistent=False)
    assert response.code == 200
    await response.content()
    dist = make_wheel("proto-slow", "1.0", payload_size=400_000)
    upstream.index.add(dist)
    upstream.index.throttle = 400_000
    response = await treq.get(
        f"{base}files/proto-slow/{dist.filename}", persistent=False, unbuffered=True
    )
    assert response.code == 200
    proc.transport.signalProcess("TERM")  # type: ignore[union-attr]
    body = await response.content()
    assert body == dist.data
    assert await proc.ended == -signal.SIGTERM


@pytest_twisted.ensureDeferred
async def test_tac_reads_config(upstream: Upstream, tmp_path: object) -> None:
    """
    ``twistd -ny proxypypi.tac`` builds the same service from the TOML file
    named by PROXYPYPI_CONFIG.
    """
    config = os.path.join(str(tmp_path), "proxypypi.toml")
    with open(config, "w") as f:
        f.write(
            f'upstream = ["{upstream.simple}"]\n'
            'listen = "tcp:0:interface=127.0.0.1"\n'
            f'storage = "{tmp_path}/data"\n'
        )
    proc = spawn(["-y", os.path.join(ROOT, "proxypypi.tac")], str(tmp_path),
                 PROXYPYPI_CONFIG=config)  # fmt: skip
    await serves_then_stops(proc)

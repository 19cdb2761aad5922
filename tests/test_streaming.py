"""
Streaming over real sockets: many clients, one upstream fetch, bytes as
they land, integrity at the end.  The upstream throttles its body so the
download is still running while clients read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.web.client import HTTPConnectionPool, ResponseFailed

from proxypypi.testing import Fault, make_wheel
from tests.support.proxies import RunningProxy, Upstream, committed

SIZE = 600_000


@pytest_twisted.async_yield_fixture
async def pool() -> AsyncIterator[HTTPConnectionPool]:
    connections = HTTPConnectionPool(reactor, persistent=False)
    yield connections
    await connections.closeCachedConnections()


def big_file(upstream: Upstream) -> tuple[str, bytes]:
    dist = make_wheel("proto-big", "1.0", payload_size=SIZE)
    upstream.index.add(dist)
    upstream.dists[dist.filename] = dist
    return dist.filename, dist.data


class Client:
    """
    One streaming client: records when its headers came and what it got.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.headers_while_downloading: bool | None = None

    async def fetch(self, url: str, running: RunningProxy, pool: HTTPConnectionPool) -> bytes:
        response = await treq.get(url, unbuffered=True, pool=pool)
        assert response.code == 200
        self.headers_while_downloading = bool(running.proxy.downloads.in_flight())
        await treq.collect(response, self.chunks.append)
        return b"".join(self.chunks)


@pytest_twisted.ensureDeferred
async def test_many_clients_one_fetch(
    upstream: Upstream, proxy: RunningProxy, pool: HTTPConnectionPool
) -> None:
    """
    Eight clients on a cold, throttled file get headers while it downloads,
    byte-identical bodies, and the upstream sees one fetch.
    """
    filename, data = big_file(upstream)
    upstream.index.throttle = 1_500_000
    url = f"{proxy.base}files/proto-big/{filename}"
    clients = [Client() for _ in range(8)]
    results = await DeferredList(
        [Deferred.fromCoroutine(c.fetch(url, proxy, pool)) for c in clients],
        consumeErrors=True,
    )
    for ok, body in results:
        assert ok, body
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert all(c.headers_while_downloading for c in clients)
    assert upstream.index.count("/files/" + filename, "GET") == 1
    # The first client's bytes arrived in many chunks, not as one at the end.
    assert len(clients[0].chunks) > 4


@pytest_twisted.ensureDeferred
async def test_late_joiner_and_leaver(
    upstream: Upstream, proxy: RunningProxy, pool: HTTPConnectionPool
) -> None:
    """
    A client that joins mid-download gets the whole file from byte 0; one
    that leaves mid-file cancels nothing: the file is still committed.
    """
    filename, data = big_file(upstream)
    upstream.index.throttle = 1_000_000
    url = f"{proxy.base}files/proto-big/{filename}"

    leaver = await treq.get(url, unbuffered=True, pool=pool)
    first_chunk: Deferred[None] = Deferred()

    def on_chunk(chunk: bytes) -> None:
        if not first_chunk.called:
            first_chunk.callback(None)
            raise RuntimeError("client hangs up")

    gone = treq.collect(leaver, on_chunk)
    await first_chunk
    assert proxy.proxy.downloads.in_flight()
    late = Client()
    body = await late.fetch(url, proxy, pool)
    assert body == data
    try:
        await gone
    except Exception:
        pass
    await committed(proxy)
    stored = proxy.proxy.storage.file_path("proto-big", filename)
    with open(stored, "rb") as f:
        assert f.read() == data
    assert upstream.index.count("/files/" + filename, "GET") == 1


@pytest_twisted.ensureDeferred
async def test_corrupt_upstream_aborts_every_client(
    upstream: Upstream, proxy: RunningProxy, pool: HTTPConnectionPool
) -> None:
    """
    With a corrupting upstream, no client ever receives a complete body and
    nothing is stored.
    """
    filename, data = big_file(upstream)
    upstream.index.throttle = 2_000_000
    upstream.index.fault_for["/files/" + filename] = Fault(corrupt=True)
    url = f"{proxy.base}files/proto-big/{filename}"
    clients = [Client() for _ in range(3)]
    results = await DeferredList(
        [Deferred.fromCoroutine(c.fetch(url, proxy, pool)) for c in clients],
        consumeErrors=True,
    )
    for ok, result in results:
        assert not ok
        assert result.check(ResponseFailed), result
    for c in clients:
        assert len(b"".join(c.chunks)) < len(data)
    assert not os.path.exists(proxy.proxy.storage.file_path("proto-big", filename))
    assert os.listdir(proxy.proxy.storage.tmp_dir) == []

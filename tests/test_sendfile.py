"""
Cached files sent with os.sendfile over real sockets: whole, ranged,
concurrent, and abandoned mid-body.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ClientFactory, Protocol

from proxypypi.testing import make_wheel
from tests.support.proxies import RunningProxy, Upstream, committed


async def cached(upstream: Upstream, proxy: RunningProxy, size: int) -> tuple[str, bytes, str]:
    dist = make_wheel("proto-cached", "1.0", payload_size=size)
    upstream.index.add(dist)
    url = f"{proxy.base}files/proto-cached/{dist.filename}"
    response = await treq.get(url, persistent=False)
    assert await response.content() == dist.data
    await committed(proxy)
    assert proxy.proxy.storage.has_file("proto-cached", dist.filename)
    return url, dist.data, proxy.proxy.storage.file_path("proto-cached", dist.filename)


def open_on(path: str) -> int:
    """
    How many of this process's descriptors are open on ``path``.
    """
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == path:
                count += 1
        except OSError:
            pass
    return count


@pytest_twisted.ensureDeferred
async def test_whole_ranged_and_concurrent(
    upstream: Upstream, proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached file arrives byte-identical, whole, ranged and to several clients at once."""
    url, data, path = await cached(upstream, proxy, 3_000_000)
    sent: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        sent.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counting)
    responses = await DeferredList(
        [treq.get(url, persistent=False) for _ in range(4)], consumeErrors=True
    )
    bodies = await DeferredList([treq.content(r) for ok, r in responses if ok], consumeErrors=True)
    digests = {hashlib.sha256(body).hexdigest() for ok, body in bodies if ok}
    assert digests == {hashlib.sha256(data).hexdigest()}
    assert len(bodies) == 4
    response = await treq.get(url, headers={"Range": "bytes=1000-1999999"}, persistent=False)
    assert response.code == 206
    assert await response.content() == data[1000:2000000]
    assert open_on(path) == 0
    assert upstream.index.count("/files/proto_cached", "GET") == 1
    assert sum(sent) == 4 * len(data) + 1_999_000  # the kernel sent every body byte


class _HangUp(Protocol):
    """Sends a request, reads a little of the body, then disconnects."""

    def __init__(self, path: bytes, done: Deferred[int]) -> None:
        self.path, self.done, self.got = path, done, 0

    def connectionMade(self) -> None:
        self.transport.write(b"GET " + self.path + b" HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.got += len(data)
        if self.got > 100_000:
            self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: object) -> None:
        self.done.callback(self.got)


@pytest_twisted.ensureDeferred
async def test_client_leaves_mid_body(upstream: Upstream, proxy: RunningProxy) -> None:
    """A client hanging up mid-file leaves no open file and the service keeps serving."""
    url, data, path = await cached(upstream, proxy, 5_000_000)
    done: Deferred[int] = Deferred()
    path = "/" + url.split("/", 3)[3]
    factory = ClientFactory()
    factory.protocol = lambda: _HangUp(path.encode(), done)  # type: ignore[assignment,misc]
    port = int(proxy.base.rsplit(":", 1)[1].strip("/"))
    reactor.connectTCP("127.0.0.1", port, factory)  # type: ignore[attr-defined]
    got = await done
    assert 100_000 < got < len(data)
    response = await treq.get(url, persistent=False)
    assert await response.content() == data
    assert open_on(path) == 0

"""
The real service and a fake upstream index, both listening on 127.0.0.1 on
ports the OS picks, driven by the real reactor (pytest-twisted).  Nothing
here talks to any other address.

The pytest fixtures over these live in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import DeferredList
from twisted.internet.interfaces import IListeningPort

from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.service.compose import make_service
from proxypypi.service.lifecycle import WebServer
from proxypypi.testing import Dist, FakeIndex, make_sdist, make_wheel
from proxypypi.web.proxy import Proxy
from proxypypi.web.root import RootResource

#: What installers ask for in the end-to-end tests: a dependency chain
#: (``proto-alpha`` needs ``proto-beta``) and an sdist.
CHAIN = ("proto-alpha", "proto-gamma")

#: The files pip downloads for `CHAIN` from `install_set`, sorted.
CHAIN_FILES = [
    "proto_alpha-1.0-py3-none-any.whl",
    "proto_beta-1.1+local-py3-none-any.whl",
    "proto_gamma-2.0.tar.gz",
]


@attrs.define
class Upstream:
    """
    A fake upstream index listening on loopback.
    """

    index: FakeIndex
    port: IListeningPort
    base: str
    dists: dict[str, Dist]

    @property
    def simple(self) -> str:
        return self.base + "simple/"


def install_set() -> list[tuple[Dist, dict[str, object]]]:
    """
    A small, realistic install set: a dependency chain, a local version
    (``+`` in the file name), a yanked release, an sdist.
    """
    return [
        (make_wheel("Proto-Alpha", "1.0", requires_dist=["proto-beta>=1.0"]), {}),
        (make_wheel("proto_beta", "1.1+local", requires_python=">=3.8"), {}),
        (make_wheel("proto_beta", "3.0"), {"yanked": "broken build, use 1.x"}),
        (make_sdist("proto-gamma", "2.0"), {}),
        (make_wheel("proto-delta", "0.5", payload_size=300_000), {}),
    ]


@attrs.define
class RunningProxy:
    """
    The real service, started in this process.
    """

    service: Any
    base: str
    storage: str
    proxy: Proxy

    @property
    def simple(self) -> str:
        return self.base + "simple/"

    async def stop(self) -> None:
        """
        Stop the service as twistd would: listeners first, then the rest.
        """
        await self.service.stopService()


async def start_proxy(
    upstream_urls: Sequence[str], storage: str, *, grouped: bool = False, **settings: Any
) -> RunningProxy:
    """
    Start the real service, in this process, on an ephemeral port of
    127.0.0.1.

    :param upstream_urls: each an upstream group of its own (in order of
        preference), or with ``grouped`` the members of one group.
    :param settings: any other `Config` field (``workers`` is 1: worker
        processes are tested through twistd).
    """
    settings.setdefault("workers", 1)
    members = tuple(UpstreamConfig(u) for u in upstream_urls)
    config = Config(
        upstreams=(members,) if grouped else tuple((m,) for m in members),
        listen=("tcp:0:interface=127.0.0.1",),
        storage=storage,
        **settings,
    )
    service: Any = make_service(config, reactor)
    service.startService()
    web = next(s for s in service if isinstance(s, WebServer))
    address = (await web.when_listening()).getHost()
    root = web.site.resource
    assert isinstance(address, IPv4Address) and isinstance(root, RootResource)
    return RunningProxy(service, f"http://127.0.0.1:{address.port}/", storage, root.proxy)


@asynccontextmanager
async def running_proxy(
    upstream_urls: Sequence[str], storage: str, **settings: Any
) -> AsyncIterator[RunningProxy]:
    """
    `start_proxy`, stopped again when the block ends, however it ends.
    """
    running = await start_proxy(upstream_urls, storage, **settings)
    try:
        yield running
    finally:
        await running.stop()


async def committed(running: RunningProxy) -> None:
    """
    Wait until every download in flight is committed (or failed): clients
    get a file's last byte once it is verified, a moment before its commit.
    """
    await DeferredList([d.when_done() for d in running.proxy.downloads.in_flight()])

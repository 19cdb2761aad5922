"""
Shared fixtures: a fake upstream index and the real proxy service, both on
127.0.0.1 with ports picked by the OS, driven by the real reactor
(pytest-twisted).  Nothing here talks to any other address.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.interfaces import IListeningPort

from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.service.compose import make_service
from proxypypi.service.lifecycle import WebServer
from proxypypi.testing import Dist, FakeIndex, make_sdist, make_wheel, serve
from proxypypi.web.proxy import Proxy
from proxypypi.web.root import RootResource


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


@pytest_twisted.async_yield_fixture
async def upstream() -> AsyncIterator[Upstream]:
    index = FakeIndex(reactor)
    dists = {}
    for dist, extra in install_set():
        index.add(dist, upload_time="2025-01-02T03:04:05.123456Z", **extra)  # type: ignore[arg-type]
        dists[dist.filename] = dist
    port, base = await serve(reactor, index.resource())
    try:
        yield Upstream(index, port, base, dists)
    finally:
        stopped = port.stopListening()
        if stopped is not None:  # a test may have stopped it already
            await stopped


@attrs.define
class RunningProxy:
    """
    The real service, started in this process.
    """

    service: object
    base: str
    storage: str
    proxy: Proxy

    @property
    def simple(self) -> str:
        return self.base + "simple/"


async def start_proxy(upstream_urls: list[str], storage: str, **settings: object) -> RunningProxy:
    config = Config(
        upstreams=tuple((UpstreamConfig(u),) for u in upstream_urls),
        listen=("tcp:0:interface=127.0.0.1",),
        storage=storage,
        **settings,  # type: ignore[arg-type]
    )
    service = make_service(config, reactor)
    service.startService()
    web = next(s for s in service if isinstance(s, WebServer))  # type: ignore[attr-defined]
    port = await web.when_listening()
    root = web.site.resource
    assert isinstance(root, RootResource)
    return RunningProxy(service, f"http://127.0.0.1:{port.getHost().port}/", storage, root.proxy)


async def committed(running: RunningProxy) -> None:
    """
    Wait until every download in flight is committed (or failed): clients
    get a file's last byte once it is verified, a moment before its commit.
    """
    await DeferredList([d.when_done() for d in running.proxy.downloads.in_flight()])


@pytest_twisted.async_yield_fixture
async def proxy(upstream: Upstream, tmp_path: object) -> AsyncIterator[RunningProxy]:
    running = await start_proxy([upstream.simple], os.path.join(str(tmp_path), "data"))
    try:
        yield running
    finally:
        await running.service.stopService()  # type: ignore[attr-defined]


@pytest.fixture
def clean_env(tmp_path: object) -> dict[str, str]:
    """
    An environment for installer subprocesses that ignores this machine's
    own pip and uv settings.
    """
    home = os.path.join(str(tmp_path), "home")
    os.makedirs(home, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_NO_CONFIG": "1",
        "UV_CACHE_DIR": os.path.join(str(tmp_path), "uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",
    }


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Run every test in its own temporary directory, so trial's ``mktemp``
    never litters the working tree.
    """
    monkeypatch.chdir(str(tmp_path))
    # The service (and pip, uv, twine in subprocesses) would follow a proxy
    # set in the environment; every test talks to 127.0.0.1 directly.
    for scheme in ("http", "https", "all", "no"):
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            monkeypatch.delenv(name, raising=False)

"""
Shared fixtures: a fake upstream index and the real proxy service, both on
127.0.0.1 with ports picked by the OS, driven by the real reactor
(pytest-twisted).  Nothing here talks to any other address.

Only the fixtures live here; what they are built from is in
`tests.support.proxies`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from proxypypi.testing import FakeIndex, serve
from tests.support.proxies import RunningProxy, Upstream, install_set, running_proxy


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


@pytest_twisted.async_yield_fixture
async def proxy(upstream: Upstream, tmp_path: object) -> AsyncIterator[RunningProxy]:
    async with running_proxy([upstream.simple], os.path.join(str(tmp_path), "data")) as running:
        yield running


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

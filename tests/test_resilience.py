"""
Installs that survive the upstream: warm cache with the upstream refusing
connections, hanging, or having deleted the project.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import pytest_twisted

from proxypypi.testing import Fault
from tests.support.clients import find_uv, pip_download, run
from tests.support.proxies import RunningProxy, Upstream, running_proxy

PACKAGES = ["proto-alpha", "proto-gamma", "proto-delta"]


@pytest_twisted.async_yield_fixture
async def eager(upstream: Upstream, tmp_path: object) -> AsyncIterator[RunningProxy]:
    """
    A proxy whose pages are always stale, so every request tries the
    upstream again (in the background) and must not depend on it.
    """
    async with running_proxy(
        [upstream.simple], os.path.join(str(tmp_path), "data"), page_ttl=0.001
    ) as running:
        yield running


@pytest_twisted.ensureDeferred
async def test_upstream_gone_refused_then_hanging(
    upstream: Upstream, eager: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    With a warm cache, pip and uv installs succeed while the upstream hangs,
    and while it refuses connections.
    """
    await pip_download(eager.simple, os.path.join(str(tmp_path), "warm"), clean_env, *PACKAGES)
    upstream.index.fault = Fault(hang=True)
    await pip_download(eager.simple, os.path.join(str(tmp_path), "hanging"), clean_env, *PACKAGES)
    await upstream.port.stopListening()
    await pip_download(eager.simple, os.path.join(str(tmp_path), "refused"), clean_env, *PACKAGES)
    uv = find_uv()
    assert uv is not None
    target = os.path.join(str(tmp_path), "uv-target")
    out, code = await run(
        [uv, "pip", "install", "--python", sys.executable, "--target", target,
         "--index-url", eager.simple, *PACKAGES],
        clean_env,
    )  # fmt: skip
    assert code == 0, out
    assert os.path.isdir(os.path.join(target, "proto_alpha"))


@pytest_twisted.ensureDeferred
async def test_project_deleted_upstream_stays_installable(
    upstream: Upstream, eager: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    A project its author deleted upstream can still be installed from the
    files stored here.
    """
    await pip_download(eager.simple, os.path.join(str(tmp_path), "warm"), clean_env, *PACKAGES)
    for name in PACKAGES + ["proto-beta"]:
        upstream.index.remove(name)
    # One request sees the deletion (in the background), the next the kept files.
    await pip_download(eager.simple, os.path.join(str(tmp_path), "after1"), clean_env, *PACKAGES)
    await pip_download(eager.simple, os.path.join(str(tmp_path), "after2"), clean_env, *PACKAGES)
    assert sorted(os.listdir(os.path.join(str(tmp_path), "after2"))) == sorted(
        os.listdir(os.path.join(str(tmp_path), "warm"))
    )

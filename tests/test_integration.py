"""
End to end: the real service on loopback in front of the fake upstream,
with real pip and uv subprocesses installing through it.
"""

from __future__ import annotations

import hashlib
import os
import sys

import pytest
import pytest_twisted
import treq

from tests.support.clients import find_uv, pip_download, run
from tests.support.disk import listing
from tests.support.proxies import (
    CHAIN,
    CHAIN_FILES,
    RunningProxy,
    Upstream,
    committed,
    running_proxy,
)


def stored_files(root: str) -> dict[str, str]:
    """
    The sha256 of every file the service stored, by file name.
    """
    return {os.path.basename(p): d for p, d in listing(os.path.join(root, "files")).items()}


@pytest_twisted.ensureDeferred
async def test_pip_download_twice(
    upstream: Upstream, proxy: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    pip downloads a dependency chain through the proxy; every stored file
    matches the upstream's hash, and a second run fetches no file upstream.
    """
    dest = os.path.join(str(tmp_path), "d1")
    await pip_download(proxy.simple, dest, clean_env, *CHAIN)
    assert sorted(os.listdir(dest)) == CHAIN_FILES
    await committed(proxy)
    stored = stored_files(proxy.storage)
    for name, digest in stored.items():
        dist = upstream.dists.get(name.removesuffix(".metadata"))
        assert dist is not None, name
        want = dist.metadata_sha256 if name.endswith(".metadata") else dist.sha256
        assert digest == want, name
    assert "proto_alpha-1.0-py3-none-any.whl.metadata" in stored
    fetched = upstream.index.count("/files/")

    dest2 = os.path.join(str(tmp_path), "d2")
    await pip_download(proxy.simple, dest2, clean_env, *CHAIN)
    assert upstream.index.count("/files/") == fetched
    for name in os.listdir(dest2):
        with open(os.path.join(dest2, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == upstream.dists[name].sha256


@pytest_twisted.ensureDeferred
async def test_pip_install_pinned_yanked(
    proxy: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    pip installs into a target directory; a pin on a yanked release still
    works (with pip's warning), as PEP 592 allows.
    """
    target = os.path.join(str(tmp_path), "t")
    out, code = await run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "-i",
            proxy.simple,
            "--target",
            target,
            "proto-beta==3.0",
            "proto-delta",
        ],
        clean_env,
    )
    assert code == 0, out
    assert "broken build, use 1.x" in out
    assert os.path.isdir(os.path.join(target, "proto_beta"))
    assert os.path.isdir(os.path.join(target, "proto_delta"))


@pytest.mark.skipif(find_uv() is None, reason="uv is in the test extra")
@pytest_twisted.ensureDeferred
async def test_uv_pip_install(
    upstream: Upstream, proxy: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    uv installs the dependency chain and an sdist (built with its in-tree
    backend) through the proxy into a fresh virtualenv.
    """
    uv = find_uv()
    assert uv is not None
    venv = os.path.join(str(tmp_path), "venv")
    out, code = await run([uv, "venv", "--python", sys.executable, venv], clean_env)
    assert code == 0, out
    env = {**clean_env, "VIRTUAL_ENV": venv, "UV_INDEX_URL": proxy.simple}
    out, code = await run(
        [
            uv,
            "pip",
            "install",
            "--python",
            os.path.join(venv, "bin", "python"),
            "proto-alpha",
            "proto-gamma",
        ],
        env,
    )
    assert code == 0, out
    site = os.path.join(
        venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages"
    )
    assert os.path.isdir(os.path.join(site, "proto_alpha"))
    assert os.path.isdir(os.path.join(site, "proto_beta"))
    assert upstream.index.count("/files/proto_alpha-1.0-py3-none-any.whl.metadata") == 1


@pytest_twisted.ensureDeferred
async def test_unreachable_upstream_gives_502(tmp_path: object) -> None:
    """
    With no upstream listening, a project page is a 502 with a one-line
    reason, not a traceback.
    """
    async with running_proxy(["http://127.0.0.1:9/simple/"], str(tmp_path)) as running:
        response = await treq.get(running.simple + "anything/", persistent=False)
        body = await response.text()
        assert response.code == 502
        assert "127.0.0.1:9" in body and "Traceback" not in body
        assert len(body.strip().splitlines()) == 1

"""
Private packages end to end: real twine and ``uv publish`` uploads to the
real service on loopback, then real pip and uv installs through it, in
front of a fake upstream that publishes the same name with a higher version
(dependency confusion) next to a public dependency.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from proxypypi.testing import FakeIndex, make_sdist, make_wheel, serve
from tests.support.auth import htpasswd_line
from tests.support.clients import find_uv, run
from tests.support.proxies import RunningProxy, running_proxy
from tests.support.uploads import write_dists

PY = f"python{sys.version_info[0]}.{sys.version_info[1]}"


@pytest_twisted.async_yield_fixture
async def confusion() -> AsyncIterator[tuple[FakeIndex, str]]:
    """
    An upstream publishing ``corp-lib`` 99.0 (the attacker's) and the
    public ``proto-beta`` that the private ``corp-lib`` depends on.
    """
    index = FakeIndex(reactor)
    index.add(make_wheel("corp-lib", "99.0", summary="not ours"))
    index.add(make_sdist("corp-lib", "99.0"))
    index.add(make_wheel("proto-beta", "1.1"))
    port, base = await serve(reactor, index.resource())
    try:
        yield index, base + "simple/"
    finally:
        await port.stopListening()


@pytest_twisted.async_yield_fixture
async def private_proxy(
    confusion: tuple[FakeIndex, str], tmp_path: object
) -> AsyncIterator[RunningProxy]:
    auth_file = os.path.join(str(tmp_path), "htpasswd")
    with open(auth_file, "wb") as f:
        f.write(htpasswd_line("alice", "secret"))
    async with running_proxy(
        [confusion[1]], os.path.join(str(tmp_path), "data"), auth_file=auth_file
    ) as running:
        yield running


def installed_version(site: str, module: str) -> str:
    with open(os.path.join(site, module, "__init__.py")) as f:
        return f.read().split('"')[1]


@pytest_twisted.ensureDeferred
async def test_twine_upload_then_pip_and_uv_install(
    confusion: tuple[FakeIndex, str],
    private_proxy: RunningProxy,
    clean_env: dict[str, str],
    tmp_path: object,
) -> None:
    """
    twine uploads a wheel and an sdist (and again, idempotently); pip and
    uv then install the private 1.0 with its public dependency, never the
    upstream's 99.0, and the upstream is never asked about the name.
    """
    index, _ = confusion
    tmp = str(tmp_path)
    dists = write_dists(
        os.path.join(tmp, "dist"),
        make_wheel("Corp-Lib", "1.0", requires_dist=["proto-beta>=1.0"], requires_python=">=3.8"),
        make_sdist("corp-lib", "1.0"),
    )
    twine = [sys.executable, "-m", "twine", "upload", "--non-interactive"]
    twine += ["--disable-progress-bar", "--repository-url", private_proxy.base]
    twine += ["-u", "alice", "-p", "secret", *dists]
    for _ in range(2):
        out, code = await run(twine, clean_env)
        assert code == 0, out
    out, code = await run([*twine[:-4], "-u", "alice", "-p", "wrong", *dists], clean_env)
    assert code != 0 and "401" in out, out

    target = os.path.join(tmp, "pip-target")
    pip = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "-i", private_proxy.simple]
    out, code = await run([*pip, "--target", target, "corp-lib"], clean_env)
    assert code == 0, out
    assert installed_version(target, "corp_lib") == "1.0"
    assert installed_version(target, "proto_beta") == "1.1"

    uv = find_uv()
    if uv is not None:
        venv = os.path.join(tmp, "venv")
        out, code = await run([uv, "venv", "--python", sys.executable, venv], clean_env)
        assert code == 0, out
        env = {**clean_env, "VIRTUAL_ENV": venv, "UV_INDEX_URL": private_proxy.simple}
        python = os.path.join(venv, "bin", "python")
        out, code = await run([uv, "pip", "install", "--python", python, "corp-lib"], env)
        assert code == 0, out
        assert (
            installed_version(os.path.join(venv, "lib", PY, "site-packages"), "corp_lib") == "1.0"
        )

    assert index.count("/simple/corp-lib/") == 0
    assert index.count("/files/corp_lib") == 0
    assert index.count("/files/proto_beta") >= 1


@pytest.mark.skipif(find_uv() is None, reason="uv is in the test extra")
@pytest_twisted.ensureDeferred
async def test_uv_publish(
    private_proxy: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    ``uv publish`` uploads through the legacy API; the page then offers the
    wheel with its core metadata; bad credentials fail with the reason.
    """
    uv = find_uv()
    assert uv is not None
    wheel = make_wheel("corp-tool", "2.0")
    (path,) = write_dists(os.path.join(str(tmp_path), "dist"), wheel)
    publish = [uv, "publish", "--publish-url", private_proxy.base + "legacy/"]
    out, code = await run([*publish, "--username", "alice", "--password", "nope", path], clean_env)
    assert code != 0 and "valid credentials required" in out, out
    out, code = await run(
        [*publish, "--username", "alice", "--password", "secret", path], clean_env
    )
    assert code == 0, out
    response = await treq.get(
        private_proxy.simple + "corp-tool/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        persistent=False,
    )
    page = await response.json()
    (f,) = page["files"]
    assert f["filename"] == wheel.filename
    assert f["core-metadata"] == {"sha256": wheel.metadata_sha256}


@pytest_twisted.ensureDeferred
async def test_auth_read_with_pip(
    confusion: tuple[FakeIndex, str], clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    With --auth-read, pip with credentials in the index URL installs (it
    sends them with every request, files included); without, it cannot.
    """
    tmp = str(tmp_path)
    auth_file = os.path.join(tmp, "htpasswd")
    with open(auth_file, "wb") as f:
        f.write(htpasswd_line("alice", "secret"))
    async with running_proxy(
        [confusion[1]], os.path.join(tmp, "data"), auth_file=auth_file, auth_read=True
    ) as running:
        pip = [sys.executable, "-m", "pip", "download", "--no-cache-dir", "--no-deps"]
        url = running.simple.replace("http://", "http://alice:secret@")
        out, code = await run(
            [*pip, "-i", url, "-d", os.path.join(tmp, "d"), "proto-beta"], clean_env
        )
        assert code == 0, out
        assert os.listdir(os.path.join(tmp, "d")) == ["proto_beta-1.1-py3-none-any.whl"]
        out, code = await run(
            [*pip, "--no-input", "-i", running.simple, "-d", os.path.join(tmp, "e"), "proto-beta"],
            clean_env,
        )
        assert code != 0, out

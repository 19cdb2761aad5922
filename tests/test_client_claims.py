"""
What the README tells uploaders, checked with the real clients the test
extra installs: re-running ``twine upload`` with the same files succeeds,
``uv publish --check-url`` skips the files already here and refuses a
changed one, and twine's ``--skip-existing`` is refused by twine itself
for any index but the public one (so the README does not offer it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_twisted

from proxypypi.testing import make_wheel
from tests.support.auth import htpasswd_line
from tests.support.clients import find_uv, run
from tests.support.proxies import RunningProxy, Upstream, running_proxy
from tests.support.uploads import write_dists


@pytest_twisted.async_yield_fixture
async def uploads_proxy(upstream: Upstream, tmp_path: object) -> AsyncIterator[RunningProxy]:
    auth_file = os.path.join(str(tmp_path), "htpasswd")
    with open(auth_file, "wb") as f:
        f.write(htpasswd_line("alice", "secret"))
    data = os.path.join(str(tmp_path), "data")
    async with running_proxy([upstream.simple], data, auth_file=auth_file) as running:
        yield running


@pytest_twisted.ensureDeferred
async def test_twine_rerun_and_skip_existing(
    uploads_proxy: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    The same files uploaded again succeed; a changed file under the same
    name fails with the 409's reason; ``--skip-existing`` is refused by
    twine before it reaches the proxy.
    """
    tmp = str(tmp_path)
    (path,) = write_dists(os.path.join(tmp, "a"), make_wheel("corp-app", "1.0"))
    twine = [sys.executable, "-m", "twine", "upload", "--non-interactive",
             "--disable-progress-bar", "--repository-url", uploads_proxy.base,
             "-u", "alice", "-p", "secret"]  # fmt: skip
    for _ in range(2):
        out, code = await run([*twine, path], clean_env)
        assert code == 0, out
    (changed,) = write_dists(os.path.join(tmp, "b"), make_wheel("corp-app", "1.0", summary="x"))
    out, code = await run([*twine, changed], clean_env)
    words = " ".join(out.split())  # rich wraps twine's lines
    assert code != 0 and "409" in words, out
    assert "already exists here with different content" in words, out
    out, code = await run([*twine, "--skip-existing", changed], clean_env)
    assert code != 0 and "--skip-existing" in out, out


@pytest.mark.skipif(find_uv() is None, reason="uv is in the test extra")
@pytest_twisted.ensureDeferred
async def test_uv_publish_check_url(
    uploads_proxy: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    ``uv publish --check-url`` skips files the index already has and fails
    on one of the same name with other content.
    """
    uv = find_uv()
    assert uv is not None
    tmp = str(tmp_path)
    (path,) = write_dists(os.path.join(tmp, "a"), make_wheel("corp-svc", "2.0"))
    publish = [uv, "publish", "--publish-url", uploads_proxy.base + "legacy/",
               "--check-url", uploads_proxy.simple,
               "--username", "alice", "--password", "secret"]  # fmt: skip
    out, code = await run([*publish, path], clean_env)
    assert code == 0, out
    out, code = await run([*publish, path], clean_env)
    assert code == 0 and "skipping" in out.lower(), out
    (changed,) = write_dists(os.path.join(tmp, "b"), make_wheel("corp-svc", "2.0", summary="x"))
    out, code = await run([*publish, changed], clean_env)
    assert code != 0, out

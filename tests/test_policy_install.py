"""
The policy end to end: real pip and uv installing through the real service
with a cooldown, in front of an upstream whose newest release is a day
old; and ``twistd proxypypi`` taking new exemptions and deny rules on
``SIGHUP``, without a restart.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from proxypypi.config.policy import PolicyConfig
from proxypypi.policy.cooldown import iso
from proxypypi.testing import FakeIndex, make_wheel, serve
from tests.support.clients import find_uv, pip_download, run, spawn
from tests.support.proxies import Upstream, running_proxy

DAY = 86400.0
OLD = make_wheel("proto-cool", "1.0")
NEW = make_wheel("proto-cool", "2.0")


@pytest_twisted.async_yield_fixture
async def young_upstream() -> AsyncIterator[Upstream]:
    """
    ``proto-cool`` 1.0, a month old, and 2.0, a day old.
    """
    index = FakeIndex(reactor)
    index.add(OLD, upload_time=iso(time.time() - 30 * DAY))
    index.add(NEW, upload_time=iso(time.time() - DAY))
    port, base = await serve(reactor, index.resource())
    try:
        yield Upstream(index, port, base, {d.filename: d for d in (OLD, NEW)})
    finally:
        await port.stopListening()


async def refused(url: str) -> str:
    response = await treq.get(url, persistent=False)
    body: bytes = await response.content()
    assert response.code == 403, (response.code, body)
    return body.decode()


@pytest_twisted.ensureDeferred
async def test_pip_and_uv_install_the_previous_release(
    young_upstream: Upstream, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    Both installers pick 1.0, as if 2.0 did not exist yet; 2.0's own URL
    is refused with the moment it becomes available, and never fetched.
    """
    storage = os.path.join(str(tmp_path), "data")
    async with running_proxy([young_upstream.simple], storage,
                             policy=PolicyConfig(cooldown=7 * DAY)) as proxy:  # fmt: skip
        dest = os.path.join(str(tmp_path), "pip")
        await pip_download(proxy.simple, dest, clean_env, "proto-cool")
        assert os.listdir(dest) == [OLD.filename]
        uv = find_uv()
        if uv is not None:
            venv = os.path.join(str(tmp_path), "venv")
            out, code = await run([uv, "venv", "--python", sys.executable, venv], clean_env)
            assert code == 0, out
            out, code = await run(
                [uv, "pip", "install", "--python", os.path.join(venv, "bin", "python"),
                 "--index-url", proxy.simple, "proto-cool"],
                clean_env,
            )  # fmt: skip
            assert code == 0, out
            assert "proto-cool==1.0" in out, out
        why = await refused(f"{proxy.base}files/proto-cool/{NEW.filename}")
        assert "held back by the cooldown" in why and "available from" in why
        assert young_upstream.index.count(f"/files/{NEW.filename}") == 0
        response = await treq.get(proxy.base + "metrics", persistent=False)
        metrics = (await response.content()).decode()
        assert 'proxypypi_policy_refused_requests_total{reason="cooldown"} 1.0' in metrics


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP is POSIX")
@pytest_twisted.ensureDeferred
async def test_sighup_takes_exemptions_and_deny_rules(
    young_upstream: Upstream, tmp_path: object
) -> None:
    """
    ``twistd proxypypi --config``: an exemption added to the file, then a
    deny rule, each in force after a SIGHUP, with no restart.
    """
    here = str(tmp_path)
    config, deny = os.path.join(here, "proxypypi.toml"), os.path.join(here, "deny.txt")

    def settings(exempt: str) -> None:
        with open(config, "w") as f:
            f.write(f'cooldown = "7d"\ndeny = "{deny}"\ncooldown-exempt = [{exempt}]\n')

    settings("")
    with open(deny, "w") as f:
        f.write("# nothing yet\n")
    proc = spawn(["proxypypi", "--config", config, "--upstream", young_upstream.simple,
                  "--listen", "tcp:0:interface=127.0.0.1", "--storage", "data"], here)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{await proc.port}/"
        new_url = f"{base}files/proto-cool/{NEW.filename}"
        await refused(new_url)

        settings('"proto-cool==2.0"')
        reloaded = proc.logged(b"policy reloaded (SIGHUP)")
        proc.transport.signalProcess("HUP")  # type: ignore[union-attr]
        await reloaded
        response = await treq.get(new_url, persistent=False)
        assert response.code == 200
        assert await response.content() == NEW.data

        with open(deny, "w") as f:
            f.write("proto-cool==2.0  # pulled by its authors\n")
        reloaded = proc.logged(b"policy reloaded (SIGHUP)")
        proc.transport.signalProcess("HUP")  # type: ignore[union-attr]
        await reloaded
        assert "pulled by its authors" in await refused(new_url)
    finally:
        proc.transport.signalProcess("TERM")  # type: ignore[union-attr]
        assert await proc.ended == -signal.SIGTERM, proc.output.decode()

"""
Many hosts: three proxypypi instances on loopback behind Debian's real
``haproxy``, configured by ``contrib/haproxy/haproxy.cfg`` (only its
addresses changed): every project has one owner, so each file is fetched
from the upstream once across the cluster, and an instance that stops
hands only its own projects to the others.  Skipped without haproxy.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater

from proxypypi.testing import make_wheel
from tests.support.clients import ROOT
from tests.support.proxies import RunningProxy, Upstream, running_proxy

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
)
PROJECTS = [f"proto-c{i}" for i in range(12)]

pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def haproxy_config(port: int, servers: list[str]) -> str:
    """
    The shipped configuration, listening on ``port`` of 127.0.0.1, in front
    of ``servers`` (``host:port``), checked every tenth of a second, with
    its statistics at ``/haproxy-stats`` (CSV with ``;csv``).
    """
    with open(os.path.join(ROOT, "contrib", "haproxy", "haproxy.cfg")) as f:
        text = f.read()
    text = re.sub(r"(?m)^    bind .*$", f"    bind 127.0.0.1:{port}", text)
    text = re.sub(r"(?m)^    server .*\n", "", text)
    text = text.replace("inter 2s fall 3 rise 2", "inter 100ms fall 2 rise 2")
    stats = "    stats enable\n    stats uri /haproxy-stats\n"
    text = text.replace("frontend proxypypi\n", "frontend proxypypi\n" + stats)
    assert "stats uri" in text
    lines = "".join(f"    server p{i} {s}\n" for i, s in enumerate(servers))
    return text.rstrip("\n") + "\n" + lines


@pytest_twisted.async_yield_fixture
async def cluster(
    upstream: Upstream, tmp_path: object
) -> AsyncIterator[tuple[str, list[RunningProxy], subprocess.Popen[bytes]]]:
    for name in PROJECTS:
        upstream.index.add(make_wheel(name, "1.0", payload_size=20_000))
    async with AsyncExitStack() as stack:
        proxies = [
            await stack.enter_async_context(
                running_proxy([upstream.simple], os.path.join(str(tmp_path), f"host{i}"))
            )
            for i in range(3)
        ]
        port = free_port()
        config = os.path.join(str(tmp_path), "haproxy.cfg")
        with open(config, "w") as f:
            f.write(haproxy_config(port, [p.base.split("//")[1].rstrip("/") for p in proxies]))
        assert HAPROXY is not None
        proc = subprocess.Popen([HAPROXY, "-db", "-f", config], stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}/"
            for _ in range(100):
                try:
                    response = await treq.get(base + "health/ready", persistent=False)
                    await response.content()
                    if response.code == 200:
                        break
                except Exception:
                    pass
                await deferLater(reactor, 0.1, lambda: None)
            yield base, proxies, proc
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def install_everything(base: str) -> None:
    """
    Every project's page and wheel through the balancer, twice over.
    """
    for _ in range(2):
        for name in PROJECTS:
            response = await treq.get(f"{base}simple/{name}/", persistent=False)
            assert response.code == 200, name
            await response.content()
            wheel = make_wheel(name, "1.0", payload_size=20_000)
            response = await treq.get(f"{base}files/{name}/{wheel.filename}", persistent=False)
            assert await response.content() == wheel.data


def owners(proxies: list[RunningProxy]) -> dict[str, list[int]]:
    """
    Which hosts store each project's wheel.
    """
    found: dict[str, list[int]] = {}
    for i, p in enumerate(proxies):
        files = os.path.join(p.storage, "files")
        for name in os.listdir(files) if os.path.isdir(files) else []:
            found.setdefault(name, []).append(i)
    return found


@pytest_twisted.ensureDeferred
async def test_one_owner_per_project_and_a_host_stopped(
    upstream: Upstream, cluster: tuple[str, list[RunningProxy], subprocess.Popen[bytes]]
) -> None:
    base, proxies, _ = cluster
    await install_everything(base)
    before = owners(proxies)
    assert sorted(before) == sorted(PROJECTS)
    assert all(len(hosts) == 1 for hosts in before.values()), before
    assert len({hosts[0] for hosts in before.values()}) > 1, "every project on one host"
    for name in PROJECTS:
        wheel = make_wheel(name, "1.0", payload_size=20_000)
        assert upstream.index.count("/files/" + wheel.filename, "GET") == 1
        assert upstream.index.count(f"/simple/{name}/", "GET") == 1

    # Stop the host that owns the first project; the balancer notices.
    stopped = before[PROJECTS[0]][0]
    await proxies[stopped].service.stopService()
    seen: list[bytes] = []

    async def marked_down() -> bool:
        response = await treq.get(base + "haproxy-stats;csv", persistent=False)
        seen[:] = [await response.content()]
        return any(
            line.startswith(f"proxypypi,p{stopped},".encode()) and b",DOWN" in line
            for line in seen[0].splitlines()
        )

    for _ in range(100):
        if await marked_down():
            break
        await deferLater(reactor, 0.1, lambda: None)
    else:
        raise AssertionError(f"haproxy never marked p{stopped} down: {seen}")
    await install_everything(base)
    after = owners(proxies)
    for name, hosts in before.items():
        wheel = make_wheel(name, "1.0", payload_size=20_000)
        fetched = upstream.index.count("/files/" + wheel.filename, "GET")
        if hosts[0] == stopped:
            # Moved to a host that fetched it once.
            assert fetched == 2 and len(after[name]) == 2, (name, after[name])
        else:
            # The others' projects stayed where they were.
            assert fetched == 1 and after[name] == hosts, (name, after[name])

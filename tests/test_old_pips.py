"""
The oldest pips that distributions still ship, installing through the
proxy: Debian 12's 23.0.1 (one of the pips, 22.3 to 23.1, that fail on
every JSON page carrying PEP 714's retired ``dist-info-metadata`` key) and
Ubuntu 22.04's 22.0.2 (HTML pages only), each in a virtual environment of
its own, next to the newest (this environment's).

The old pips come from this machine's local package sources only (pip's
configured ``file:`` indexes and find-links directories); the test is
skipped when none has them, and never reaches another host.
"""

from __future__ import annotations

import os
import sys

import pytest
import pytest_twisted

from tests.support.clients import run
from tests.support.proxies import RunningProxy

#: Debian 12's and Ubuntu 22.04's pip.
OLD_PIPS = ("23.0.1", "22.0.2")


async def local_sources() -> list[str]:
    """
    pip's options naming the local package sources of this machine, from
    its configuration (files and environment): ``file:`` indexes and
    find-links directories; nothing that is reached over a network.
    """
    out, _ = await run([sys.executable, "-m", "pip", "config", "list"], dict(os.environ))
    options = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        for where in value.strip("'\"").split():
            local = where.startswith("file:") or os.path.isabs(where)
            if local and key.endswith("index-url"):
                options += ["--extra-index-url", where]
            elif local and key.endswith("find-links"):
                options += ["--find-links", where]
    return options


async def venv_with_pip(version: str, where: str, env: dict[str, str]) -> str:
    """
    A virtual environment of this Python with pip ``version`` in it; its
    Python.  Skips the test when no local source has that pip.
    """
    wheels = os.path.join(where, "wheels")
    empty = os.path.join(where, "empty-index")
    os.makedirs(empty, exist_ok=True)
    out, code = await run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--only-binary",
         ":all:", "--index-url", "file://" + empty, *await local_sources(), "-d", wheels,
         f"pip=={version}"],
        env,
    )  # fmt: skip
    if code != 0:
        pytest.skip(f"pip {version} is in no local package source of this machine")
    venv = os.path.join(where, f"venv-{version}")
    out, code = await run([sys.executable, "-m", "venv", "--without-pip", venv], env)
    assert code == 0, out
    python = os.path.join(venv, "bin", "python")
    (wheel,) = os.listdir(wheels)
    out, code = await run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--isolated", "--no-index",
         os.path.join(wheels, wheel)],
        env,
    )  # fmt: skip
    assert code == 0, out
    return python


@pytest.mark.parametrize("version", [*OLD_PIPS, "newest"])
@pytest_twisted.ensureDeferred
async def test_pip_installs_through_the_proxy(
    version: str, proxy: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    Each pip resolves and downloads a wheel with core metadata and its
    dependency through the proxy, whichever page form it asks for.
    """
    tmp = str(tmp_path)
    python = sys.executable if version == "newest" else await venv_with_pip(version, tmp, clean_env)
    out, code = await run([python, "-m", "pip", "--version"], clean_env)
    assert code == 0 and (version == "newest" or f"pip {version} " in out), out
    dest = os.path.join(tmp, "downloads")
    out, code = await run(
        [python, "-m", "pip", "download", "--isolated", "--no-cache-dir", "-i", proxy.simple,
         "-d", dest, "proto-alpha"],
        clean_env,
    )  # fmt: skip
    assert code == 0, out
    assert "Traceback" not in out, out
    got = sorted(os.listdir(dest))
    assert [name.split("-")[0] for name in got] == ["proto_alpha", "proto_beta"], got

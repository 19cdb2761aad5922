"""
``--workers 2``: the real service as ``twistd -n proxypypi`` runs it, a
supervisor and two worker processes on one storage, in front of the fake
upstream: one upstream fetch per page and per file across the workers,
figures added up whichever worker answers, and a worker killed in the
middle of a download taken over by the other.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from collections.abc import AsyncIterator

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.config.policy import PolicyConfig
from proxypypi.config.serial import config_from_json, config_to_json
from proxypypi.testing import make_wheel
from tests.support.clients import Twistd, spawn, until
from tests.support.proxies import Upstream

STARTED = re.compile(rb"worker (\d) started \(pid (\d+)\)")




@pytest_twisted.async_yield_fixture
async def workers(upstream: Upstream, tmp_path: object) -> AsyncIterator[tuple[Twistd, str, str]]:
    proc = spawn(
        ["proxypypi", "--workers", "2", "--upstream", upstream.simple,
         "--listen", "tcp:0:interface=127.0.0.1", "--storage", "data"],
        str(tmp_path),
    )  # fmt: skip
    try:
        port = await proc.port
        accepting = b"] accepting connections on"
        await until(lambda: proc.output.count(accepting) >= 2, "both workers to listen")
        yield proc, f"http://127.0.0.1:{port}/", os.path.join(str(tmp_path), "data")
    finally:
        if not proc.ended.called:
            proc.transport.signalProcess("TERM")  # type: ignore[union-attr]
            await proc.ended


async def fetch_all(urls: list[str]) -> list[tuple[int, bytes]]:
    """
    Every URL at once, each on a connection of its own (so the workers
    share them).
    """

    async def one(url: str) -> tuple[int, bytes]:
        response = await treq.get(url, persistent=False)
        return response.code, await response.content()

    from twisted.internet.defer import Deferred

    results = await DeferredList([Deferred.fromCoroutine(one(u)) for u in urls])
    return [value for ok, value in results if ok]


def worker_pids(proc: Twistd) -> dict[int, int]:
    return {int(i): int(pid) for i, pid in STARTED.findall(bytes(proc.output))}


def requests_counted(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("proxypypi_requests_total{")
    )


@pytest_twisted.ensureDeferred
async def test_one_fetch_across_workers_and_figures_added_up(
    upstream: Upstream, workers: tuple[Twistd, str, str]
) -> None:
    """
    Eight clients at once on a cold page, then on a cold file, on new
    connections spread over both workers: one upstream request each, the
    same bytes for all; ``/metrics`` counts every request, whichever
    worker answers it.
    """
    proc, base, _ = workers
    dist = make_wheel("proto-shared", "1.0", payload_size=300_000)
    upstream.index.add(dist)
    pages = await fetch_all([base + "simple/proto-shared/"] * 8)
    assert {code for code, _ in pages} == {200}
    assert len({body for _, body in pages}) == 1
    assert upstream.index.count("/simple/proto-shared/", "GET") == 1
    upstream.index.throttle = 600_000
    files = await fetch_all([f"{base}files/proto-shared/{dist.filename}"] * 8)
    assert [code for code, _ in files] == [200] * 8
    assert all(body == dist.data for _, body in files)
    assert upstream.index.count("/files/" + dist.filename, "GET") == 1

    async def counted() -> float:
        response = await treq.get(base + "metrics", persistent=False)
        return requests_counted((await response.content()).decode())

    seen: list[float] = []

    async def look() -> None:
        seen.append(await counted())

    # Each worker publishes its figures every second.
    for _ in range(50):
        await look()
        if seen[-1] >= 16:
            break
        await deferLater(reactor, 0.2, lambda: None)
    assert seen[-1] >= 16, seen


@pytest_twisted.ensureDeferred
async def test_stop_signalled_to_every_process(workers: tuple[Twistd, str, str]) -> None:
    """
    SIGTERM to the supervisor and to every worker at once (systemd's stop
    signals the whole group; the supervisor then signals its workers
    again): all drain and end, with no traceback.
    """
    proc, _, _ = workers
    pids = [*worker_pids(proc).values(), proc.transport.pid]  # type: ignore[union-attr]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    assert await proc.ended == -signal.SIGTERM
    assert b"Traceback" not in proc.output, proc.output.decode()


@pytest_twisted.ensureDeferred
async def test_worker_killed_mid_download(
    upstream: Upstream, workers: tuple[Twistd, str, str]
) -> None:
    """
    The worker fetching a file is killed halfway: the other worker takes
    the download over (resuming with Range); every client gets the right
    bytes or is cut off, never a wrong file; the file is stored right, and
    the killed worker is started again.
    """
    proc, base, data = workers
    dist = make_wheel("proto-killed", "1.0", payload_size=1_500_000)
    upstream.index.add(dist)
    upstream.index.throttle = 500_000
    url = f"{base}files/proto-killed/{dist.filename}"
    await fetch_all([base + "simple/proto-killed/"])
    clients = [treq.get(url, persistent=False) for _ in range(6)]
    holder: list[int] = []

    def find_holder() -> bool:
        holder[:] = [pid for pid in worker_pids(proc).values() if _writes_partial(pid)]
        return bool(holder)

    await until(find_holder, "a worker to start the download")
    tmp = os.path.join(data, "tmp")

    def partly_landed() -> bool:
        # A part of the file on disk, so that the next holder resumes it.
        try:
            sizes = [e.stat().st_size for e in os.scandir(tmp) if e.name.endswith(".part")]
        except FileNotFoundError:  # committed meanwhile: look again
            return False
        return any(200_000 <= size < len(dist.data) for size in sizes)

    await until(partly_landed, "part of the file to land")
    os.kill(holder[0], signal.SIGKILL)
    outcomes = []
    for d in clients:
        try:
            response = await d
            body = await response.content()
        except Exception:
            outcomes.append("cut")
            continue
        outcomes.append("right" if body == dist.data else "wrong")
    assert "wrong" not in outcomes, outcomes
    # Whoever asks next (a client of the other worker meanwhile, or now)
    # carries the download on from where it stopped.
    response = await treq.get(url, persistent=False)
    assert hashlib.sha256(await response.content()).hexdigest() == dist.sha256
    stored = os.path.join(data, "files", "proto-killed", dist.filename)
    # Clients get the last byte once it is verified, a moment before the
    # commit renames the file into place.
    await until(lambda: os.path.exists(stored), "the file to be stored")
    with open(stored, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == dist.sha256
    ranges = [r.range for r in upstream.index.requests if r.path.endswith(dist.filename)]
    assert any(r is not None and r.startswith("bytes=") for r in ranges), ranges
    await until(
        lambda: len(STARTED.findall(bytes(proc.output))) >= 3,
        "the killed worker to be started again",
    )


def _writes_partial(pid: int) -> bool:
    """
    Whether process ``pid`` holds a download's partial file open for
    writing (the holder; the other workers read it).
    """
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = int(f.read().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if "/tmp/dl-" in target and flags & os.O_ACCMODE != os.O_RDONLY:
            return True
    return False


def test_config_round_trip() -> None:
    """What the supervisor hands its workers is the configuration it has."""
    config = Config(
        upstreams=((UpstreamConfig("https://u:secret@a.example/simple/", weight=2.0),),),
        merge_upstream=("x",),
        workers=3,
        policy=PolicyConfig(cooldown=3600.0, cooldown_projects=(("y", 60.0),)),
    )
    assert config_from_json(config_to_json(config)) == config

"""
The two services every proxy measurement needs: the fake upstream
(``bench/upstream.py``) and the proxy itself (a real ``twistd proxypypi``),
each in a process of its own on 127.0.0.1, with the checkout's
``proxypypi`` on their ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs

from bench import REPO, BenchError
from bench.processes import Processes, read_line

#: What a proxy and the floor print once they listen.
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
#: What each worker process prints once it accepts connections, tagged with
#: its number by the supervisor that relays its log.
WORKER_ACCEPTING = re.compile(rb"\[worker-\d+ [^\]]*\] accepting connections")


def twistd_argv() -> list[str]:
    """
    How to run ``twistd`` with this interpreter.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; run()"]


@attrs.define
class Upstream:
    """
    The running fake upstream (``bench/upstream.py``) and its manifest.
    """

    proc: subprocess.Popen[bytes]
    manifest: dict[str, Any]

    @property
    def base(self) -> str:
        """
        ``http://127.0.0.1:PORT/``.
        """
        return str(self.manifest["base"])

    @property
    def simple(self) -> str:
        """
        The upstream's simple index URL.
        """
        return self.base + "simple/"

    def control(
        self,
        *,
        latency: float | None = None,
        throttle: int | None = None,
        chunk: int | None = None,
        reset: bool = False,
    ) -> dict[str, Any]:
        """
        Change the fake's knobs (``throttle`` 0 = unthrottled) and/or clear
        its request log.
        """
        query = []
        if latency is not None:
            query.append(f"latency={latency}")
        if throttle is not None:
            query.append(f"throttle={throttle}")
        if chunk is not None:
            query.append(f"chunk={chunk}")
        if reset:
            query.append("reset=1")
        req = urllib.request.Request(self.base + "_control?" + "&".join(query), method="POST")
        with urllib.request.urlopen(req, timeout=10) as response:
            return dict(json.load(response))

    def requests(self) -> list[tuple[str, str, str | None]]:
        """
        The requests the fake received since the last reset.
        """
        with urllib.request.urlopen(self.base + "_stats", timeout=10) as response:
            rows = json.load(response)["requests"]
        return [(m, p, r) for m, p, r in rows]

    def file_fetches(self, filename: str) -> int:
        """
        How many times the file was requested (GET) since the last reset.
        """
        path = "/files/" + filename
        return sum(1 for m, p, _ in self.requests() if m == "GET" and p == path)


def start_upstream(
    procs: Processes, workdir: str, args: Sequence[str], timeout: float = 180.0
) -> Upstream:
    """
    Start ``bench/upstream.py`` and wait for its manifest line.

    :raises BenchError: if it does not announce itself within ``timeout``.
    """
    log = open(os.path.join(workdir, "upstream.log"), "wb")
    proc = procs.start(
        [sys.executable, os.path.join(REPO, "bench", "upstream.py"), *args],
        env={**os.environ, "PYTHONPATH": REPO},
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    line = read_line(proc, proc.stdout, timeout)
    log.close()
    if not line:
        raise BenchError(f"the fake upstream did not start; see {log.name}")
    return Upstream(proc, json.loads(line))


@attrs.define
class Proxy:
    """
    One running ``twistd proxypypi``.
    """

    proc: subprocess.Popen[bytes]
    port: int
    storage: str
    log_path: str
    workers: int = 1

    @property
    def base(self) -> str:
        """
        ``http://127.0.0.1:PORT/``.
        """
        return f"http://127.0.0.1:{self.port}/"

    @property
    def simple(self) -> str:
        """
        The proxy's simple index URL.
        """
        return self.base + "simple/"

    @property
    def pid(self) -> int:
        """
        The twistd process id (the process to measure; with workers, their
        supervisor).
        """
        return self.proc.pid

    def log_size(self) -> int:
        """
        The length of the log so far: where to read lines written from now
        on (`served_by`).
        """
        return os.path.getsize(self.log_path)

    def log_since(self, offset: int) -> bytes:
        """
        What the log gained past ``offset``.
        """
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read()

    def worker_numbers(self) -> dict[int, int]:
        """
        Worker process id → its number (``worker-N`` in the log), as the
        supervisor logged each start: a restarted worker keeps its number
        under a new pid.
        """
        started = re.findall(rb"worker (\d+) started \(pid (\d+)\)", self.log_since(0))
        return {int(pid): int(index) for index, pid in started}

    def served_by(
        self, path: str, offset: int, expect: int, timeout: float = 10.0
    ) -> dict[int, int]:
        """
        Worker number → how many ``GET path`` requests it logged past
        ``offset`` (the access lines carry the worker's tag), once there are
        ``expect`` of them or ``timeout`` passed: the supervisor relays its
        workers' lines a moment after they write them.
        """
        line = re.compile(
            rb"\[worker-(\d+) proxypypi\.access#info\] GET " + re.escape(path.encode()) + rb" "
        )
        deadline = time.monotonic() + timeout
        while True:
            found = line.findall(self.log_since(offset))
            if len(found) >= expect or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return dict(Counter(int(index) for index in found))


def start_proxy(
    procs: Processes,
    workdir: str,
    name: str,
    upstream: str,
    timeout: float = 60.0,
    fresh: bool = True,
    extra: Sequence[str] = (),
    workers: int = 1,
) -> Proxy:
    """
    Start ``twistd -n proxypypi`` with the storage directory ``workdir/name``
    (emptied first when ``fresh``) on an ephemeral loopback port; wait for
    its "listening on" line.  One process unless ``workers`` says more
    (the service's default is one per CPU, but the scenarios' targets
    compare one process with one nginx worker, and measure the process
    they started).  With workers, it also waits for each of them to accept
    connections: the supervisor listens before they have started, and a
    measurement begun then would find one worker, or none.

    :raises BenchError: if it exits or does not listen within ``timeout``.
    """
    storage = os.path.join(workdir, name)
    if fresh and os.path.exists(storage):
        shutil.rmtree(storage)
    log_path = os.path.join(workdir, f"{name}.log")
    log = open(log_path, "wb" if fresh else "ab")
    since = log.tell()  # a reused log holds earlier runs' lines
    argv = [
        *twistd_argv(),
        "-n",
        "--pidfile=",
        "proxypypi",
        "--upstream",
        upstream,
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--storage",
        storage,
        "--workers",
        str(workers),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": REPO, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = procs.start(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "rb") as f:
            f.seek(since)
            text = f.read()
        found = LISTENING.search(text)
        if found and len(WORKER_ACCEPTING.findall(text)) >= (workers if workers > 1 else 0):
            return Proxy(proc, int(found.group(1)), storage, log_path, workers)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    procs.stop(proc)
    with open(log_path, "rb") as f:
        tail = f.read()[-2000:].decode("utf-8", "replace")
    raise BenchError(f"the proxy did not start (see {log_path}):\n{tail}")

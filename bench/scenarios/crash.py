"""
Crash safety under fire: SIGKILL ``twistd proxypypi`` at random moments
while many clients download cold files through it, restart it on the same
storage, and check that nothing corrupt or partial is ever served.

After every restart: ``tmp/`` must have been emptied, nothing partial,
unknown or corrupt may be in the served tree, and every stored file must
be served back byte-identical.  A table of the counts; the scenario fails
(and so the run) when any check did.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import random
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from bench import BenchError
from bench.context import Bench
from bench.processes import Processes
from bench.report import Table
from bench.services import Proxy, Upstream, start_proxy, start_upstream


def run(b: Bench) -> None:
    """
    ``--crash-kills`` rounds of: start on the same storage, check, forget
    half the files, start ten downloads, SIGKILL; then a last check.
    """
    a, rep = b.args, b.report
    rep.settings["crash"] = (
        f"{a.crash_kills} kills; {a.crash_files} cold files of {a.crash_file_size} B per round, "
        f"upstream {a.crash_throttle} B/s; seed {a.crash_seed}"
    )
    rng = random.Random(a.crash_seed)
    workdir = tempfile.mkdtemp(dir=b.work, prefix="crash-")
    stats: dict[str, Any] = {"kills": 0, "interrupted": 0, "checked": 0, "bad": 0}
    problems: list[str] = []
    started = time.monotonic()
    with Processes() as procs:
        upstream, project, wanted = crash_upstream(procs, workdir, a)
        for round_ in range(a.crash_kills + 1):
            proxy = start_proxy(procs, workdir, "crash", upstream.simple, fresh=round_ == 0)
            tmp = os.path.join(proxy.storage, "tmp")
            if os.listdir(tmp):
                problems.append(f"round {round_}: tmp/ not emptied at start-up")
            problems += served_tree_problems(proxy.storage, wanted)
            checked, bad = check_served(proxy, project, wanted)
            stats["checked"] += checked
            stats["bad"] += bad
            if round_ == a.crash_kills:
                procs.stop(proxy.proc)
                break
            forget_half(proxy.storage, project, rng)
            threads, results = start_downloads(proxy, project, wanted)
            time.sleep(rng.uniform(0.05, 1.2))
            os.kill(proxy.pid, signal.SIGKILL)
            proxy.proc.wait(timeout=30)
            stats["kills"] += 1
            for t in threads:
                t.join(timeout=30)
            stats["interrupted"] += sum(1 for r in results.values() if r is None)
    elapsed = time.monotonic() - started
    rows = [
        ("SIGKILLs during concurrent cold downloads", stats["kills"]),
        ("downloads cut by a kill", stats["interrupted"]),
        ("stored files fetched back after restarts", stats["checked"]),
        ("served with wrong bytes", stats["bad"]),
        ("partial/corrupt/unknown files in the served tree, or tmp/ not emptied", len(problems)),
        ("elapsed", f"{elapsed:.0f} s"),
    ]
    rep.table(
        Table(
            "crash: SIGKILL during concurrent cold downloads",
            ["crash-safety check", "value"],
            [[label, str(value)] for label, value in rows],
        )
    )
    for problem in problems[:20]:
        rep.note(f"crash problem: {problem}")
    if stats["bad"] or problems:
        raise BenchError(
            f"{stats['bad']} files served with wrong bytes, {len(problems)} problems in storage"
        )


def crash_upstream(
    procs: Processes, workdir: str, a: argparse.Namespace
) -> tuple[Upstream, str, dict[str, str]]:
    """
    The fake upstream of the kill scenarios: ``--crash-files`` cold files
    served at ``--crash-throttle``; with its project and each file's sha256.
    """
    upstream = start_upstream(
        procs,
        workdir,
        ["--big-size", "1000", "--cold-size", str(a.crash_file_size), "--cold-files",
         str(a.crash_files), "--page-files", "5", "--export-dir", workdir],
    )  # fmt: skip
    upstream.control(throttle=a.crash_throttle)
    wanted = {e["filename"]: e["sha256"] for e in upstream.manifest["cold"]["files"]}
    return upstream, upstream.manifest["cold"]["project"], wanted


def forget_half(storage: str, project: str, rng: random.Random) -> None:
    """
    Delete a random half of the project's stored files, so that the next
    round's downloads are cold again.
    """
    directory = os.path.join(storage, "files", project)
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if rng.random() < 0.5:
                os.unlink(os.path.join(directory, name))


def start_downloads(
    proxy: Proxy, project: str, names: Iterable[str]
) -> tuple[list[threading.Thread], dict[str, bytes | None]]:
    """
    One client thread per file, each downloading it through the proxy
    (`download`); join the threads, then read each file's body (``None``:
    cut off) from the dict.
    """
    results: dict[str, bytes | None] = {}

    def client(name: str) -> None:
        results[name] = download(f"{proxy.base}files/{project}/{name}")

    threads = [threading.Thread(target=client, args=(name,), daemon=True) for name in names]
    for t in threads:
        t.start()
    return threads, results


def download(url: str, timeout: float = 20.0) -> bytes | None:
    """
    GET ``url``; ``None`` when the request fails (the service was killed).
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except (OSError, urllib.error.URLError, http.client.HTTPException):
        return None


def served_tree_problems(storage: str, wanted: dict[str, str]) -> list[str]:
    """
    Files in the served tree that are partial, unknown or corrupt.
    """
    problems = []
    for dirpath, _dirs, names in os.walk(os.path.join(storage, "files")):
        for name in names:
            path = os.path.join(dirpath, name)
            if name.endswith(".metadata"):
                continue
            if name not in wanted:
                problems.append(f"unexpected file {path}")
                continue
            with open(path, "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != wanted[name]:
                    problems.append(f"corrupt file {path}")
    return problems


def check_served(proxy: Proxy, project: str, wanted: dict[str, str]) -> tuple[int, int]:
    """
    Fetch every stored file through the restarted service.

    :returns: (files checked, files whose served bytes were wrong)
    """
    checked = bad = 0
    directory = os.path.join(proxy.storage, "files", project)
    names = os.listdir(directory) if os.path.isdir(directory) else []
    for name in names:
        if name not in wanted:
            continue
        body = download(f"{proxy.base}files/{project}/{name}")
        checked += 1
        if body is None or hashlib.sha256(body).hexdigest() != wanted[name]:
            bad += 1
    return checked, bad

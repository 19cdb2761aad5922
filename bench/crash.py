"""
Crash safety under fire: SIGKILL ``twistd proxypypi`` at random moments
while many clients download cold files through it, restart it on the same
storage, and check that nothing corrupt or partial is ever served.

Run: ``python bench/crash.py`` (``--kills 100`` by default; a few minutes).
Prints a table and exits 1 if any corrupt or partial file was served or
left in the served tree.  Loopback only; every process is killed at exit.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Processes, Proxy, start_proxy, start_upstream


def fetch(url: str, timeout: float = 20.0) -> bytes | None:
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
        body = fetch(f"{proxy.base}files/{project}/{name}")
        checked += 1
        if body is None or hashlib.sha256(body).hexdigest() != wanted[name]:
            bad += 1
    return checked, bad


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--files", type=int, default=10, help="cold files per round")
    parser.add_argument("--size", type=int, default=1_000_000, help="bytes per file")
    parser.add_argument("--throttle", type=int, default=1_000_000, help="upstream bytes/s")
    parser.add_argument("--seed", type=int, default=20261124)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    procs = Processes()
    workdir = tempfile.mkdtemp(prefix="proxypypi-crash-")
    stats: dict[str, Any] = {"kills": 0, "interrupted": 0, "checked": 0, "bad": 0}
    problems: list[str] = []
    started = time.monotonic()
    try:
        upstream = start_upstream(
            procs,
            workdir,
            ["--big-size", "1000", "--cold-size", str(args.size), "--cold-files",
             str(args.files), "--page-files", "5", "--export-dir", workdir],
        )  # fmt: skip
        upstream.control(throttle=args.throttle)
        project = upstream.manifest["cold"]["project"]
        wanted = {e["filename"]: e["sha256"] for e in upstream.manifest["cold"]["files"]}
        for round_ in range(args.kills + 1):
            proxy = start_proxy(procs, workdir, "crash", upstream.simple, fresh=round_ == 0)
            tmp = os.path.join(proxy.storage, "tmp")
            if os.listdir(tmp):
                problems.append(f"round {round_}: tmp/ not emptied at start-up")
            problems += served_tree_problems(proxy.storage, wanted)
            checked, bad = check_served(proxy, project, wanted)
            stats["checked"] += checked
            stats["bad"] += bad
            if round_ == args.kills:
                procs.stop(proxy.proc)
                break
            # Keep the install loop cold: forget a random half of the files.
            directory = os.path.join(proxy.storage, "files", project)
            if os.path.isdir(directory):
                for name in os.listdir(directory):
                    if rng.random() < 0.5:
                        os.unlink(os.path.join(directory, name))
            results: list[bytes | None] = []

            def client(url: str, into: list[bytes | None] = results) -> None:
                into.append(fetch(url))

            threads = [
                threading.Thread(
                    target=client, args=(f"{proxy.base}files/{project}/{name}",), daemon=True
                )
                for name in wanted
            ]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.05, 1.2))
            os.kill(proxy.pid, signal.SIGKILL)
            proxy.proc.wait(timeout=30)
            stats["kills"] += 1
            for t in threads:
                t.join(timeout=30)
            stats["interrupted"] += sum(1 for r in results if r is None)
    finally:
        procs.stop_all()
    elapsed = time.monotonic() - started
    rows = [
        ("SIGKILLs during concurrent cold downloads", stats["kills"]),
        ("downloads cut by a kill", stats["interrupted"]),
        ("stored files fetched back after restarts", stats["checked"]),
        ("served with wrong bytes", stats["bad"]),
        ("partial/corrupt/unknown files in the served tree, or tmp/ not emptied", len(problems)),
        ("elapsed", f"{elapsed:.0f} s"),
    ]
    print("| crash-safety check | value |\n| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")
    for problem in problems[:20]:
        print("problem:", problem)
    return 1 if stats["bad"] or problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

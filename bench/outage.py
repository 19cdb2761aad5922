"""
Installs with every upstream gone: a warm cache serves pip and uv while the
upstream hangs, and while it refuses connections, at (nearly) the speed of
a warm install with the upstream up.

Run: ``python bench/outage.py``.  Prints a table; target: each install
with the upstream gone takes no longer than 1.2 times the same install
with it up.  Pages are made stale (``--page-ttl 1``) so that every install
also tries, in the background, to revalidate against the dead upstream.
Loopback only; every process is stopped at exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clients import clean_pip_env, pip_download
from harness import Processes, find_tool, start_proxy, start_upstream


def uv_install(uv: str, index: str, root: str, work: str) -> float:
    """
    ``uv pip install --target`` of the install set, cold uv cache; seconds.
    """
    target = tempfile.mkdtemp(dir=work, prefix="uv-target-")
    cache = tempfile.mkdtemp(dir=work, prefix="uv-cache-")
    env = {**clean_pip_env(work), "UV_NO_CONFIG": "1", "UV_CACHE_DIR": cache}
    started = time.monotonic()
    done = subprocess.run(
        [uv, "pip", "install", "--python", sys.executable, "--target", target,
         "--index-url", index, "-q", root],
        env=env, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    shutil.rmtree(target)
    shutil.rmtree(cache)
    if done.returncode != 0:
        raise RuntimeError(f"uv failed: {done.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    uv = find_tool("uv")
    if uv is None:
        raise SystemExit("uv is needed (it is in the project's test extra)")
    procs = Processes()
    work = tempfile.mkdtemp(prefix="proxypypi-outage-")
    rows: list[tuple[str, float, float]] = []
    try:
        upstream = start_upstream(
            procs, work,
            ["--big-size", "1000", "--cold-files", "1", "--page-files", "5",
             "--export-dir", work],
        )  # fmt: skip
        root = upstream.manifest["install"]["root"]
        files = len(upstream.manifest["install"]["files"])
        proxy = start_proxy(procs, work, "outage", upstream.simple, extra=["--page-ttl", "1"])
        env = clean_pip_env(work)

        def measure() -> tuple[float, float]:
            pips, uvs = [], []
            for i in range(args.reps):
                dest = tempfile.mkdtemp(dir=work, prefix=f"pip-{i}-")
                pips.append(pip_download(proxy.simple, [root], dest, env))
                shutil.rmtree(dest)
                uvs.append(uv_install(uv, proxy.simple, root, work))
            return statistics.median(pips), statistics.median(uvs)

        measure()  # warm the cache
        rows.append(("upstream up (warm cache)", *measure()))
        upstream.control(latency=3600.0)  # answers nothing, ever
        rows.append(("upstream hanging", *measure()))
        procs.stop(upstream.proc)
        rows.append(("upstream refusing connections", *measure()))
        procs.stop(proxy.proc)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    up_pip, up_uv = rows[0][1], rows[0][2]
    print(f"install set: {files} files; medians of {args.reps} runs\n")
    print("| scenario | pip download | vs up | uv pip install | vs up | target | met? |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for label, p, u in rows:
        rp, ru = p / up_pip, u / up_uv
        met = rp <= 1.2 and ru <= 1.2
        ok = ok and met
        print(f"| {label} | {p:.2f} s | {rp:.2f}x | {u:.2f} s | {ru:.2f}x | ≤ 1.2x | "
              f"{'yes' if met else '**NO**'} |")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

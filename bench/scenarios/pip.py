"""
Issue 3, scenario 5: a real ``pip download`` of a 37-file install set
(about 20 MB) behind an upstream with a little latency and a bandwidth
limit: straight from the upstream, through a fresh proxy (cold), then
through it again (warm, which must not reach the upstream); repeated, with
the proxy's peak RSS during the cold download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from bench import BenchError
from bench.clients import MB, clean_pip_env, median, pip_download
from bench.context import Bench
from bench.report import Row, mib, ms, verdict
from bench.rss import RssMonitor


def check_download(dest: str, files: Sequence[dict[str, Any]]) -> None:
    """
    :raises BenchError: unless ``dest`` holds exactly the install set.
    """
    want = {f["filename"]: f["sha256"] for f in files}
    got = {}
    for name in os.listdir(dest):
        with open(os.path.join(dest, name), "rb") as f:
            got[name] = hashlib.sha256(f.read()).hexdigest()
    if got != want:
        raise BenchError(f"pip downloaded {len(got)} files, not the {len(want)} expected")


def run(b: Bench) -> None:
    """
    ``pip download`` of the install set: straight from the upstream, then
    through a fresh proxy (cold), then again (warm); repeated.
    """
    a, rep, upstream = b.args, b.report, b.upstream()
    rep.settings["pip"] = (
        f"latency {a.pip_latency:g} s, throttle {a.pip_throttle_mb:g} MB/s, "
        f"{a.pip_reps} repetitions"
    )
    install = upstream.manifest["install"]
    files = install["files"]
    upstream.control(
        latency=a.pip_latency, throttle=int(a.pip_throttle_mb * MB), chunk=16384, reset=True
    )
    rep.note(
        f"pip: {len(files)} files, {install['bytes'] / MB:.1f} MB, upstream "
        f"{ms(a.pip_latency)} per request + {a.pip_throttle_mb:g} MB/s per response; "
        f"{a.pip_reps} repetition(s), medians"
    )
    direct, cold, warm, peaks = [], [], [], []
    warm_upstream_requests = []
    for i in range(a.pip_reps):
        home = tempfile.mkdtemp(dir=b.work, prefix="home-")
        env = clean_pip_env(home)

        def download(index: str, tag: str, _i: int = i, _env: dict[str, str] = env) -> float:
            dest = os.path.join(b.work, f"pip-{tag}-{_i}")
            elapsed = pip_download(index, [install["root"]], dest, _env)
            check_download(dest, files)
            shutil.rmtree(dest)
            return elapsed

        direct.append(download(upstream.simple, "direct"))
        proxy = b.proxy(f"store-pip-{i}")
        try:
            with RssMonitor(proxy.pid) as mon:
                cold.append(download(proxy.simple, "cold"))
            peaks.append(mon.peak_mib)
            upstream.control(reset=True)
            warm.append(download(proxy.simple, "warm"))
            warm_upstream_requests.append(len(upstream.requests()))
        finally:
            b.stop(proxy)
    d, c, w = median(direct), median(cold), median(warm)
    rep.add(
        Row(
            f"5. pip download, {len(files)} files, cold",
            f"{c:.2f} s",
            f"{d:.2f} s upstream",
            f"{c / d:.3f}x",
            "≤ 1.05x",
            verdict(c / d <= 1.05),
        )
    )
    rep.add(
        Row(
            f"5. pip download, {len(files)} files, warm",
            f"{w:.2f} s",
            f"{d:.2f} s upstream",
            f"{w / d:.3f}x",
            "≤ 1.00x",
            verdict(w / d <= 1.0),
        )
    )
    rep.note(
        "pip seconds per repetition (direct/cold/warm): "
        + ", ".join(f"{x:.2f}/{y:.2f}/{z:.2f}" for x, y, z in zip(direct, cold, warm, strict=True))
    )
    rep.note(f"requests reaching the upstream during warm runs: {warm_upstream_requests}")
    rep.add(Row("6. peak RSS, cold pip download", mib(max(peaks))))

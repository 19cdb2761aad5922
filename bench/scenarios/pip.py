"""
Issue 3, scenario 5: a real ``pip download`` of a 37-file install set
(about 20 MB) behind an upstream with a little latency and a bandwidth
limit: straight from the upstream, through a fresh proxy (cold), then
through it again (warm, which must not reach the upstream); repeated, with
the proxy's peak RSS during the cold download.  Then, as issue 16 asks,
a ``uv pip install`` of the same set (a cold uv cache each time) straight
from the upstream and through the warm proxy.  The upstream offers no
core metadata for the set; warm installs through the proxy must take at
most 0.9 times the direct ones, for pip and for uv.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from bench import BenchError
from bench.clients import MB, clean_pip_env, median, pip_download, uv_install
from bench.context import Bench
from bench.report import Row, mib, ms, verdict
from bench.rss import RssMonitor
from bench.tools import require

#: Warm installs through the proxy, against straight from the upstream.
WARM_TARGET = 0.9


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


def slow_upstream(b: Bench) -> dict[str, Any]:
    """
    Give the fake upstream the pip scenario's latency and throttle, with a
    fresh request log.

    :returns: the install set's manifest.
    """
    a, upstream = b.args, b.upstream()
    upstream.control(
        latency=a.pip_latency, throttle=int(a.pip_throttle_mb * MB), chunk=16384, reset=True
    )
    return dict(upstream.manifest["install"])


def timed_download(b: Bench, index: str, tag: str, env: Mapping[str, str]) -> float:
    """
    ``pip download`` of the install set from ``index`` into a directory of
    its own (``pip-TAG``), checked, then removed.

    :returns: pip's wall time, seconds.
    :raises BenchError: unless pip downloaded exactly the install set.
    """
    install = b.upstream().manifest["install"]
    dest = os.path.join(b.work, f"pip-{tag}")
    elapsed = pip_download(index, [install["root"]], dest, env)
    check_download(dest, install["files"])
    shutil.rmtree(dest)
    return elapsed


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
    install = slow_upstream(b)
    files = install["files"]
    rep.note(
        f"pip: {len(files)} files, {install['bytes'] / MB:.1f} MB, upstream "
        f"{ms(a.pip_latency)} per request + {a.pip_throttle_mb:g} MB/s per response; "
        f"{a.pip_reps} repetition(s), medians"
    )
    uv = require("uv")
    direct, cold, warm, peaks = [], [], [], []
    uv_direct, uv_warm = [], []
    warm_upstream_requests = []
    for i in range(a.pip_reps):
        env = clean_pip_env(tempfile.mkdtemp(dir=b.work, prefix="home-"))

        def download(index: str, tag: str, _i: int = i, _env: dict[str, str] = env) -> float:
            return timed_download(b, index, f"{tag}-{_i}", _env)

        direct.append(download(upstream.simple, "direct"))
        proxy = b.proxy(f"store-pip-{i}")
        try:
            with RssMonitor(proxy.pid) as mon:
                cold.append(download(proxy.simple, "cold"))
            peaks.append(mon.peak_mib)
            upstream.control(reset=True)
            warm.append(download(proxy.simple, "warm"))
            uv_warm.append(uv_install(uv, proxy.simple, install["root"], b.work))
            warm_upstream_requests.append(len(upstream.requests()))
            uv_direct.append(uv_install(uv, upstream.simple, install["root"], b.work))
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
            f"≤ {WARM_TARGET:.2f}x",
            verdict(w / d <= WARM_TARGET),
        )
    )
    ud, uw = median(uv_direct), median(uv_warm)
    rep.add(
        Row(
            f"5. uv pip install, {len(files)} files, warm",
            f"{uw:.2f} s",
            f"{ud:.2f} s upstream",
            f"{uw / ud:.3f}x",
            f"≤ {WARM_TARGET:.2f}x",
            verdict(uw / ud <= WARM_TARGET),
        )
    )
    rep.note(
        "pip seconds per repetition (direct/cold/warm): "
        + ", ".join(f"{x:.2f}/{y:.2f}/{z:.2f}" for x, y, z in zip(direct, cold, warm, strict=True))
    )
    rep.note(
        "uv seconds per repetition (direct/warm): "
        + ", ".join(f"{x:.2f}/{y:.2f}" for x, y in zip(uv_direct, uv_warm, strict=True))
    )
    rep.note(f"requests reaching the upstream during warm runs: {warm_upstream_requests}")
    rep.add(Row("6. peak RSS, cold pip download", mib(max(peaks))))

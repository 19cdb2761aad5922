"""
Installs with every upstream gone: a warm cache serves pip and uv while the
upstream hangs, and while it refuses connections, at (nearly) the speed of
a warm install with the upstream up.

Target: each install with the upstream gone takes no longer than 1.2 times
the same install with it up.  Pages are made stale (``--page-ttl 1``) so
that every install also tries, in the background, to revalidate against
the dead upstream.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile

from bench.clients import clean_pip_env, pip_download, uv_install
from bench.context import Bench
from bench.processes import Processes
from bench.report import Table, verdict
from bench.services import start_proxy, start_upstream
from bench.tools import require


def run(b: Bench) -> None:
    """
    Warm the cache, then time pip and uv with the upstream up, hanging,
    and refusing connections.
    """
    a, rep = b.args, b.report
    rep.settings["outage"] = f"{a.outage_reps} runs per upstream state, medians; --page-ttl 1"
    uv = require("uv")
    work = tempfile.mkdtemp(dir=b.work, prefix="outage-")
    rows: list[tuple[str, float, float]] = []
    with Processes() as procs:
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
            for i in range(a.outage_reps):
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
    up_pip, up_uv = rows[0][1], rows[0][2]
    cells = []
    for label, p, u in rows:
        rp, ru = p / up_pip, u / up_uv
        cells.append(
            [label, f"{p:.2f} s", f"{rp:.2f}x", f"{u:.2f} s", f"{ru:.2f}x", "≤ 1.2x",
             verdict(rp <= 1.2 and ru <= 1.2)]
        )  # fmt: skip
    rep.table(
        Table(
            "outage: warm installs with the upstream gone",
            ["scenario", "pip download", "vs up", "uv pip install", "vs up", "target", "met?"],
            cells,
            intro=f"install set: {files} files; medians of {a.outage_reps} runs",
        )
    )



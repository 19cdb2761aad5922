"""
Hostile upstreams (issue 14, item 13): the proxy in front of an upstream
whose pages are built to cost memory, eight at once, and the proxy's peak
RSS meanwhile.

1. eight gzip bombs (about 1 MB each, expanding to 1 GiB);
2. eight pages of 30 MiB of anchors (gzip, under the page limit);
3. eight JSON pages of 30 MiB of tiny values.

Each round asks for eight projects at once, as pip would (gzip accepted),
twice over with fresh names.  Target: peak RSS under 300 MB, every answer
a 502 (no 500), no traceback in the log (`Bench.stop` notes any).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench import REPO, BenchError
from bench.clients import HTML_TYPE, PIP_ENCODING, fetch_each
from bench.context import Bench
from bench.processes import read_line
from bench.report import Row, mib, verdict
from bench.rss import RssMonitor, rss_mib
from bench.services import start_proxy

#: Concurrent hostile pages per round.
AT_ONCE = 8

#: The issue's target for the peak, in MiB.
TARGET_MIB = 300

KINDS = {
    "bomb": "gzip bombs (1 MB expanding to 1 GiB)",
    "anchors": "pages of 30 MiB of anchors",
    "values": "JSON pages of 30 MiB of tiny values",
}


def _start_hostile(b: Bench) -> str:
    """
    Start ``bench/hostile.py``; its simple index URL.
    """
    log = open(os.path.join(b.work, "hostile.log"), "wb")
    proc = b.procs.start(
        [sys.executable, os.path.join(REPO, "bench", "hostile.py")],
        env=dict(os.environ),
        cwd=b.work,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    line = read_line(proc, proc.stdout, 120.0)
    log.close()
    if not line:
        raise BenchError(f"the hostile upstream did not start; see {log.name}")
    return f"http://127.0.0.1:{json.loads(line)['port']}/simple/"


def run(b: Bench) -> None:
    rep = b.report
    print("building the hostile pages ...", flush=True)
    proxy = start_proxy(b.procs, b.work, "hostile", _start_hostile(b))
    try:
        idle = rss_mib(proxy.pid) or 0.0
        rep.add(Row("14. idle RSS before the hostile pages", mib(idle)))
        for kind, label in KINDS.items():
            peak = 0.0
            statuses: set[int] = set()
            for attempt in range(2):
                urls = [f"{proxy.simple}{kind}-{attempt}-{i}/" for i in range(AT_ONCE)]
                with RssMonitor(proxy.pid) as mon:
                    done, _ = fetch_each(
                        urls, AT_ONCE, accept=HTML_TYPE, encoding=PIP_ENCODING, timeout=180
                    )
                peak = max(peak, mon.peak_mib)
                statuses |= {f.status for f in done.values()}
            ok = peak < TARGET_MIB and statuses <= {502, 503}
            rep.add(
                Row(
                    f"14. peak RSS, {AT_ONCE} concurrent {label} (answers: "
                    f"{', '.join(map(str, sorted(statuses)))})",
                    mib(peak),
                    target=f"< {TARGET_MIB} MB, no 500",
                    met=verdict(ok),
                )
            )
    finally:
        b.stop(proxy)

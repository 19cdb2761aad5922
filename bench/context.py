"""
What every scenario is handed: the options, the run's work directory, its
process registry and report, and the fake upstream that issue 3's
scenarios share, with the helpers they use on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from urllib.parse import urljoin

import attrs

from bench import BenchError
from bench.clients import JSON_TYPE, MB, Fetch, fetch
from bench.processes import Processes
from bench.report import Report
from bench.services import Proxy, Upstream, start_proxy, start_upstream
from bench.spy import sampling, top_frames

#: The concurrent clients of issue 3's scenario 2, each group on a cold file
#: of its own (the upstream builds one for each, after the single-client
#: trials).
CONCURRENCY = (8, 64)


@attrs.define
class Bench:
    """
    State shared by the scenarios of one run.

    :ivar py_spy: the py-spy executable with ``--profile``, else ``None``.
    """

    args: argparse.Namespace
    work: str
    procs: Processes
    report: Report
    py_spy: str | None = None
    _upstream: Upstream | None = None

    def upstream(self) -> Upstream:
        """
        The fake upstream of issue 3's scenarios, started by the first of
        them that runs: building its files takes a while (the 200 MB file
        above all), and scenarios that start their own upstream, or none,
        should not wait for it.  Its large file is also written to the
        ``nginx-root`` directory, for nginx to serve.
        """
        if self._upstream is None:
            a = self.args
            root = os.path.join(self.work, "nginx-root")
            os.makedirs(root)
            print(f"building the upstream's files in {self.work} ...", flush=True)
            self._upstream = start_upstream(
                self.procs,
                self.work,
                [
                    "--big-size",
                    str(int(a.big_mb * MB)),
                    "--cold-size",
                    str(int(a.cold_mb * MB)),
                    "--cold-files",
                    str(a.trials + len(CONCURRENCY)),
                    "--page-files",
                    str(a.page_files),
                    "--export-dir",
                    root,
                    "--max-seconds",
                    str(a.max_minutes * 60 + 600),
                ],
            )
        return self._upstream

    def proxy(self, name: str, workers: int = 1) -> Proxy:
        """
        A fresh proxy (empty storage) in front of the fake upstream: one
        process, or a supervisor of ``workers`` worker processes.
        """
        return start_proxy(self.procs, self.work, name, self.upstream().simple, workers=workers)

    def stop(self, proxy: Proxy) -> None:
        """
        Stop a proxy and note anything alarming in its log.
        """
        self.procs.stop(proxy.proc)
        self.check_log(proxy)

    def check_log(self, proxy: Proxy) -> None:
        """
        Note the traceback lines in a stopped proxy's log (one that this
        run's process registry did not start, too).
        """
        with open(proxy.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        problems = [
            line for line in text.splitlines() if "Traceback" in line or "Unhandled" in line
        ]
        if problems:
            self.report.note(
                f"proxy log {os.path.basename(proxy.log_path)}: {len(problems)} "
                f"traceback/unhandled lines, e.g. {problems[0][:160]!r}"
            )

    def file_urls(self, index_url: str, project: str) -> dict[str, str]:
        """
        File name → absolute URL, read from a project page (JSON) the way an
        installer reads it.
        """
        page_url = f"{index_url}{project}/"
        got = fetch(page_url, accept=JSON_TYPE, keep=True, timeout=60)
        if got.status != 200 or got.body is None:
            raise BenchError(f"{page_url} answered {got.status}")
        files = json.loads(got.body)["files"]
        return {f["filename"]: urljoin(page_url, f["url"]) for f in files}

    def profile(self, proxy: Proxy, name: str) -> contextlib.AbstractContextManager[None]:
        """
        With ``--profile``: sample the proxy with py-spy during the block,
        into ``bench/results/profile-<name>.txt``, and note its hottest
        functions.  Otherwise nothing.
        """
        if self.py_spy is None:
            return contextlib.nullcontext()
        py_spy = self.py_spy
        output = os.path.join(os.path.dirname(self.args.output), f"profile-{name}.txt")

        @contextlib.contextmanager
        def run() -> Iterator[None]:
            with sampling(py_spy, proxy.pid, output):
                yield
            top = top_frames(output)
            if top:
                self.report.note(
                    f"profile {name} ({os.path.basename(output)}), self time: "
                    + "; ".join(f"{frame} {share:.0%}" for frame, share in top)
                )

        return run()


def check_digest(results: Sequence[Fetch], want: str, what: str) -> None:
    """
    :raises BenchError: if any body's sha256 differs from ``want``.
    """
    bad = [r for r in results if r.status != 200 or r.sha256 != want]
    if bad:
        raise BenchError(f"{what}: {len(bad)} of {len(results)} responses wrong or corrupt")

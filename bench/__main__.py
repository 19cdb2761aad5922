"""
The benchmark's command line, run from the repository root::

    python -m bench --setup             # once: install nginx, wrk, py-spy, uv
    python -m bench                     # issue 3's table (cold, cached, pip)
    python -m bench --quick             # the same at small sizes, a smoke test
    python -m bench perrequest metrics  # named scenarios only
    python -m bench --list              # every scenario

Every scenario runs against processes of its own on 127.0.0.1, all
stopped at the end whatever happens; the report is printed and written to
``bench/results/latest.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from typing import Any

from bench import REPO, BenchError, tools
from bench.context import Bench
from bench.processes import Processes
from bench.report import Report, Row
from bench.scenarios import SCENARIOS

#: What ``--quick`` sets, whatever else the command line says: sizes and
#: durations for a smoke test (issue 3's table in a minute and a half).
QUICK: dict[str, Any] = {
    "big_mb": 20.0,
    "cold_mb": 1.0,
    "trials": 2,
    "reps": 1,
    "volume_mb": 200.0,
    "wrk_duration": 3,
    "pip_reps": 1,
    "perrequest_rounds": 5,
    "metrics_files": 10_000,
    "metrics_load_seconds": 3.0,
    "crash_kills": 5,
    "outage_reps": 1,
    "slowloris_requests": 30,
    "big_pages": 10,
    "big_page_files": 6_000,
    "largest_page": 2_000,
    "list_names": 50_000,
    "working_set": 100,
    "policy_reps": 1,
    "workers_reps": 1,
    "workers_kills": 5,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line; every default is the full benchmark.
    """
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="proxypypi benchmark: the proxy against its references, on 127.0.0.1",
    )
    p.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help="scenarios to run, in the order of --list "
        f"[{' '.join(n for n, s in SCENARIOS.items() if s.default)}]",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "--setup",
        action="store_true",
        help="install the tools the scenarios need (apt-get: nginx, wrk; pip: py-spy, uv) and exit",
    )
    p.add_argument("--quick", action="store_true", help="small sizes and short runs (smoke test)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the proxy with py-spy during the throughput and page runs "
        "(bench/results/profile-*.txt; slows it a little)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=15.0,
        help="skip scenarios that would start after this [15]",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, stores)")
    p.add_argument("--output", default=os.path.join(REPO, "bench", "results", "latest.md"))

    g = p.add_argument_group("cold", SCENARIOS["cold"].summary)
    g.add_argument("--cold-mb", type=float, default=4.0, help="size of each cold file [4]")
    g.add_argument(
        "--latency",
        type=float,
        default=0.2,
        help="upstream seconds before headers [0.2]",
    )
    g.add_argument("--throttle-mb", type=float, default=2.0, help="upstream body MB/s [2]")
    g.add_argument("--trials", type=int, default=5, help="single-client trials [5]")

    g = p.add_argument_group("cached", SCENARIOS["cached"].summary)
    g.add_argument("--big-mb", type=float, default=200.0, help="size of the cached file [200]")
    g.add_argument("--reps", type=int, default=5, help="repetitions of throughput runs [5]")
    g.add_argument(
        "--volume-mb", type=float, default=1600.0, help="least MB per throughput run [1600]"
    )
    g.add_argument(
        "--page-files", type=int, default=300, help="files on the page (also perrequest) [300]"
    )
    g.add_argument("--wrk-duration", type=int, default=10, help="seconds per wrk run [10]")
    g.add_argument("--wrk-threads", type=int, default=2)
    g.add_argument("--wrk-connections", type=int, default=16)
    g.add_argument("--nginx-workers", default="auto", help="nginx worker_processes [auto]")

    g = p.add_argument_group("pip", SCENARIOS["pip"].summary)
    g.add_argument("--pip-reps", type=int, default=3, help="pip repetitions [3]")
    g.add_argument(
        "--pip-latency",
        type=float,
        default=0.05,
        help="upstream seconds before headers [0.05]",
    )
    g.add_argument(
        "--pip-throttle-mb",
        type=float,
        default=10.0,
        help="upstream body MB/s per response [10]",
    )

    g = p.add_argument_group("pages", SCENARIOS["pages"].summary)
    g.add_argument("--big-pages", type=int, default=40, help="project pages [40]")
    g.add_argument("--big-page-files", type=int, default=37_000, help="files on them [37000]")
    g.add_argument("--largest-page", type=int, default=8_000, help="files on the largest [8000]")
    g.add_argument("--list-names", type=int, default=900_000, help="project list names [900000]")
    g.add_argument("--working-set", type=int, default=1000, help="small projects [1000]")

    g = p.add_argument_group("perrequest", SCENARIOS["perrequest"].summary)
    g.add_argument(
        "--perrequest-accept",
        default="application/vnd.pypi.simple.v1+json",
        help="the Accept header of the request [the JSON page]",
    )
    g.add_argument("--perrequest-gzip", action="store_true", help="ask for gzip, as pip and uv do")
    g.add_argument("--perrequest-rounds", type=int, default=15, help="rounds, best taken [15]")
    g.add_argument("--perrequest-count", type=int, default=1000, help="requests per round [1000]")

    g = p.add_argument_group("policy", SCENARIOS["policy"].summary)
    g.add_argument(
        "--policy-reps", type=int, default=3, help="wrk runs of each proxy per form, median [3]"
    )

    g = p.add_argument_group("metrics", SCENARIOS["metrics"].summary)
    g.add_argument("--metrics-files", type=int, default=100_000, help="stored files [100000]")
    g.add_argument("--metrics-file-size", type=int, default=512, help="bytes per file [512]")
    g.add_argument("--metrics-requests", type=int, default=50, help="timed requests [50]")
    g.add_argument("--metrics-clients", type=int, default=4, help="load client processes [4]")
    g.add_argument("--metrics-load-seconds", type=float, default=10.0, help="load duration [10]")

    g = p.add_argument_group("crash", SCENARIOS["crash"].summary)
    g.add_argument("--crash-kills", type=int, default=100, help="SIGKILLs [100]")
    g.add_argument("--crash-files", type=int, default=10, help="cold files per round [10]")
    g.add_argument(
        "--crash-file-size", type=int, default=1_000_000, help="bytes per file [1000000]"
    )
    g.add_argument(
        "--crash-throttle", type=int, default=1_000_000, help="upstream bytes/s [1000000]"
    )
    g.add_argument("--crash-seed", type=int, default=20261124, help="random seed")

    g = p.add_argument_group("outage", SCENARIOS["outage"].summary)
    g.add_argument("--outage-reps", type=int, default=3, help="runs per state, median [3]")

    g = p.add_argument_group("slowloris", SCENARIOS["slowloris"].summary)
    g.add_argument(
        "--slowloris-connections", type=int, default=1000, help="slow connections [1000]"
    )
    g.add_argument("--slowloris-requests", type=int, default=100, help="timed requests [100]")
    g.add_argument(
        "--slowloris-cap-probe",
        type=int,
        default=200,
        help="connections opened from one address to show its cap [200]",
    )

    g = p.add_argument_group("workers", SCENARIOS["workers"].summary)
    g.add_argument(
        "--worker-count", type=int, default=2, help="worker processes, against one process [2]"
    )
    g.add_argument(
        "--workers-wrk-threads",
        type=int,
        default=1,
        help="wrk threads for the page runs [1: wrk shares the cores with the service]",
    )
    g.add_argument(
        "--workers-reps", type=int, default=3, help="wrk runs of each service per form, median [3]"
    )
    g.add_argument(
        "--workers-throttle-mb",
        type=float,
        default=1.0,
        help="upstream body MB/s for the cold clients (files of --cold-mb) [1]",
    )
    g.add_argument(
        "--workers-kills",
        type=int,
        default=20,
        help="SIGKILLs of a downloading worker (sizes: the crash options) [20]",
    )

    args = p.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario {', '.join(unknown)}; --list lists them")
    if args.quick:
        vars(args).update(QUICK)
    return args


def list_scenarios() -> None:
    """
    Print the table of scenarios: name, what it measures, what it needs.
    """
    width = max(len(name) for name in SCENARIOS)
    for name, scenario in SCENARIOS.items():
        extra = ["default"] if scenario.default else []
        if scenario.needs:
            extra.append("needs " + ", ".join(scenario.needs))
        suffix = f" [{'; '.join(extra)}]" if extra else ""
        print(f"{name:<{width}}  {scenario.summary}{suffix}")


def load_average() -> str:
    """
    The 1, 5 and 15 minute load averages: other work on this 2-core machine
    skews every figure, so the report records it.
    """
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def settings() -> dict[str, Any]:
    """
    What every run is measured on, for the report; each scenario adds its
    own sizes and rates.
    """

    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        lines = (done.stdout + done.stderr).strip().splitlines()
        return " ".join(lines[0].split()[:3]) if lines else "?"

    commit = version(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", REPO, "status", "--porcelain", "--", "proxypypi"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "load average at start": load_average(),
        "proxypypi": f"{commit}{' + uncommitted changes in proxypypi/' if dirty else ''}",
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}",
        "tools": "; ".join(
            version([tools.find(command) or command, "-v"]) for command in ("nginx", "wrk")
        ),
    }


def run(args: argparse.Namespace, names: Sequence[str]) -> int:
    """
    Run the scenarios ``names``; 0 when they completed (targets met or
    not), 1 when one could not run or failed its check.
    """

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    start = time.monotonic()
    deadline = start + args.max_minutes * 60
    work = tempfile.mkdtemp(prefix="proxypypi-bench-")
    report = Report(settings())
    failed = False
    try:
        with Processes() as procs:
            py_spy = tools.require("py-spy") if args.profile else None
            bench = Bench(args, work, procs, report, py_spy)
            for name in names:
                if time.monotonic() >= deadline:
                    report.add(Row(f"{name}: skipped (past --max-minutes)", "—"))
                    continue
                print(f"scenario '{name}' ...", flush=True)
                try:
                    SCENARIOS[name].run(bench)
                except Exception as e:
                    failed = True
                    traceback.print_exc()
                    report.add(
                        Row(
                            f"{name}: FAILED",
                            f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                            met="**NO**",
                        )
                    )
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.settings["load average at end"] = load_average()
    report.note(f"whole run: {time.monotonic() - start:.0f} s")
    text = report.markdown()
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    print()
    print(text)
    print(f"written to {args.output}")
    return 1 if failed else 0


def main(argv: Sequence[str]) -> int:
    """
    Set up, list, or check the selected scenarios' tools and run them.
    """
    args = parse_args(argv)
    if args.setup:
        try:
            tools.setup()
        except (BenchError, subprocess.SubprocessError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    if args.list:
        list_scenarios()
        return 0
    chosen = set(args.scenarios) or {n for n, s in SCENARIOS.items() if s.default}
    names = [name for name in SCENARIOS if name in chosen]
    needs = {tool for name in names for tool in SCENARIOS[name].needs}
    absent = tools.missing(needs | ({"py-spy"} if args.profile else set()))
    if absent:
        print(
            f"error: {', '.join(absent)} not installed; run: {tools.SETUP_COMMAND}",
            file=sys.stderr,
        )
        return 2
    return run(args, names)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

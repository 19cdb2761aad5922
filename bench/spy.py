"""
Optional sampling profiles of the proxy during a measurement
(``python -m bench --profile``), with py-spy (which ``python -m bench
--setup`` installs).

Each profile is written in py-spy's "raw" (collapsed stack) format to
``bench/results/profile-<name>.txt``; `top_frames` summarises one as the
functions holding the most samples (self time), which the report lists.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator


@contextlib.contextmanager
def sampling(py_spy: str, pid: int, output: str) -> Iterator[None]:
    """
    Sample ``pid`` with py-spy (without pausing it) for the duration of the
    block, writing the collapsed stacks to ``output``.
    """
    argv = [py_spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
    argv += ["--format", "raw", "--output", output]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield
    finally:
        # SIGINT makes py-spy write its output and exit.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def top_frames(path: str, count: int = 8) -> list[tuple[str, float]]:
    """
    The ``count`` functions with the most self samples in a raw py-spy
    profile, with their share of all (non-idle) samples.
    """
    self_time: Counter[str] = Counter()
    total = 0
    try:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip("\n").rpartition(" ")
                if not stack or not n.isdigit():
                    continue
                leaf = stack.split(";")[-1]
                # "function (module/file.py:123)" -> "function (module/file.py)"
                name, _, where = leaf.partition(" (")
                key = f"{name} ({where.rsplit(':', 1)[0]})" if where else name
                self_time[key] += int(n)
                total += int(n)
    except OSError:
        return []
    if not total:
        return []
    return [(key, n / total) for key, n in self_time.most_common(count)]

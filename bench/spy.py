"""
Optional sampling profiles of the proxy during a measurement
(``python bench/run.py --profile``), with py-spy, which this module
installs into the current environment with pip when it is missing.

Each profile is written in py-spy's "raw" (collapsed stack) format to
``bench/results/profile-<name>.txt``; `top_frames` summarises one as the
functions holding the most samples (self time), which the report lists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator


def find_py_spy(install: bool) -> str | None:
    """
    The py-spy executable next to this interpreter or on ``PATH``; with
    ``install``, ``pip install py-spy`` first when there is none.
    """
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    for candidate in (here, shutil.which("py-spy")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if not install:
        return None
    print("installing py-spy into this environment ...", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "py-spy"], timeout=600, check=False
    )
    if done.returncode != 0:
        return None
    return find_py_spy(install=False)


@contextlib.contextmanager
def sampling(py_spy: str | None, pid: int, output: str | None) -> Iterator[None]:
    """
    Sample ``pid`` with py-spy (without pausing it) for the duration of the
    block, writing the collapsed stacks to ``output``; does nothing when
    either is ``None``.
    """
    if py_spy is None or output is None:
        yield
        return
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

"""
The resident memory of a process the benchmark started: now, and at its
peak over a stretch of time; and the worker processes of a supervisor,
each measured on its own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence

import attrs


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib(pid: int) -> float | None:
    """
    The current resident set size of ``pid``, in MiB; ``None`` once it is
    gone.
    """
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib / 1024


@attrs.define
class RssMonitor:
    """
    Peak RSS of one process over a stretch of time: resets the kernel's
    high-water mark (``/proc/PID/clear_refs``, value 5) at the start and
    reads ``VmHWM`` at the end, and also samples ``VmRSS`` every
    ``interval`` seconds in a thread (the fallback when the reset is not
    permitted).  Use as a context manager; read `peak_mib` afterwards.
    """

    pid: int
    interval: float = 0.02
    peak_mib: float = 0.0
    _sampled_kib: int = 0
    _hwm_reset: bool = False
    _stop: threading.Event = attrs.field(factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssMonitor:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            kib = _status_kib(self.pid, "VmRSS")
            if kib is None:
                return
            self._sampled_kib = max(self._sampled_kib, kib)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        peak = self._sampled_kib
        if self._hwm_reset:
            peak = max(peak, _status_kib(self.pid, "VmHWM") or 0)
        self.peak_mib = peak / 1024


def children(pid: int) -> list[int]:
    """
    The child processes of ``pid`` (a supervisor's workers), from every
    one of its threads' ``children`` lists; empty once it is gone.
    """
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(child) for child in f.read().split())
        except OSError:
            continue
    return sorted(found)


@contextlib.contextmanager
def monitor_each(pids: Sequence[int]) -> Iterator[dict[int, RssMonitor]]:
    """
    An `RssMonitor` per process over the block: a supervisor's workers
    each hold their own memory, and the figure that matters is each one's
    peak, not their sum.
    """
    with contextlib.ExitStack() as stack:
        yield {pid: stack.enter_context(RssMonitor(pid)) for pid in pids}

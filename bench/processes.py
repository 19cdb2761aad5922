"""
Starting and stopping the benchmark's processes.

Every process is started in its own session (so its whole process group
can be signalled), asked to die with the benchmark, and registered with a
`Processes` that terminates them all when its block ends, however it ends.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO

import attrs


@attrs.define
class Processes:
    """
    Every process started through it; `stop_all` ends them (whole process
    groups: TERM, then KILL).  As a context manager it calls `stop_all` on
    the way out, so a scenario leaves nothing running behind it.
    """

    running: list[subprocess.Popen[bytes]] = attrs.field(factory=list)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = None,
    ) -> subprocess.Popen[bytes]:
        """
        Start ``argv`` in a new session and remember it.
        """
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """
        Terminate ``proc``'s process group and reap it.
        """
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        # Children that outlived their leader (nginx workers, say).
        _signal_group(proc.pid, signal.SIGKILL)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        """
        Terminate every process still registered, newest first.
        """
        for proc in list(reversed(self.running)):
            try:
                self.stop(proc)
            except Exception as e:  # keep cleaning up the others
                print(f"warning: could not stop pid {proc.pid}: {e}", file=sys.stderr)


def read_line(proc: subprocess.Popen[bytes], stream: IO[bytes], timeout: float) -> bytes:
    """
    The first line ``proc`` writes to ``stream`` (how the fake upstream and
    the floor announce themselves), without its newline; empty when it
    exits or ``timeout`` passes first.
    """
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stream.fileno()
    while b"\n" not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
        elif proc.poll() is not None:
            break
    return buf.split(b"\n", 1)[0] if b"\n" in buf else b""


def _die_with_parent() -> None:
    """
    In the child, before exec: ask Linux to send SIGTERM when the benchmark
    dies, even by SIGKILL, so nothing it started outlives it.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


_PR_SET_PDEATHSIG = 1


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass

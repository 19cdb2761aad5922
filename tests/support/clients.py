"""
The programs operators and installers run, as subprocesses of the test:
pip, uv and twistd.  Each is started without blocking the reactor (or,
for the synchronous tests, with a timeout), with the working tree
importable.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

#: The working tree: on the subprocesses' ``PYTHONPATH``, as an installed
#: copy would be importable.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: twistd's command line, run with this Python (``-c``), so the ``twistd``
#: found on PATH (perhaps another Python's) does not matter.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"

#: The ``proxypypi`` command, run with this Python as its console script
#: would be.
CLI = "import sys; from proxypypi.service.cli import main; sys.argv[0] = 'proxypypi'; main()"

#: How the service logs its address once it listens.
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


async def run(argv: list[str], env: dict[str, str]) -> tuple[str, int]:
    """
    Run a subprocess without blocking the reactor; return its output and
    exit code.
    """
    out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=env, reactor=reactor)
    return (out + err).decode("utf-8", "replace"), code


async def pip_download(index_url: str, dest: str, env: dict[str, str], *requirements: str) -> None:
    """
    ``pip download`` of ``requirements`` (with their dependencies) from
    ``index_url`` into ``dest``, without pip's cache; fails the test with
    pip's output when pip fails.
    """
    out, code = await run(
        [sys.executable, "-m", "pip", "download", "--no-cache-dir", "-i", index_url,
         "-d", dest, *requirements],
        env,
    )  # fmt: skip
    assert code == 0, out


def find_uv() -> str | None:
    """
    uv from the test extra: next to this Python, or on PATH.
    """
    here = os.path.join(sysconfig.get_path("scripts"), "uv")
    return here if os.path.exists(here) else shutil.which("uv")


def twistd(*args: str, program: str = TWISTD, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """
    Run twistd (or the ``program`` given, Python source) to the end, at
    most a minute, for tests that only look at what it prints; ``env``
    replaces the environment (the project is importable either way).
    """
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**(os.environ if env is None else env), "PYTHONPATH": ROOT},
    )


async def until(condition: Callable[[], object], what: str, seconds: float = 20.0) -> None:
    """
    Wait for ``condition()`` on the real reactor, a tenth of a second a
    look, for ``seconds`` at most.
    """
    for _ in range(int(seconds * 10)):
        if condition():
            return
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"gave up waiting for {what}")


async def serves_then_stops(proc: Twistd) -> int:
    """
    Once ``proc`` listens, a page of the fake upstream comes through it;
    then SIGTERM, as systemd stops it, ends it with that signal.  Returns
    the port it listened on.
    """
    try:
        port = await proc.port
        response = await treq.get(f"http://127.0.0.1:{port}/simple/proto-beta/", persistent=False)
        assert response.code == 200
        assert b"proto_beta-1.1+local" in await response.content()
    finally:
        proc.transport.signalProcess("TERM")  # type: ignore[union-attr]
        code = await proc.ended
        assert code == -signal.SIGTERM, proc.output.decode()
    return port


class Twistd(ProcessProtocol):
    """
    A twistd child: fires ``port`` once it logs its address, ``ended`` with
    its exit code (minus the signal number when a signal ended it).
    """

    def __init__(self) -> None:
        self.output = bytearray()
        self.port: Deferred[int] = Deferred()
        self.ended: Deferred[int] = Deferred()
        self._awaited: list[tuple[bytes, int, Deferred[None]]] = []

    def logged(self, text: bytes, timeout: float = 30) -> Deferred[None]:
        """
        Fires once ``text`` appears in the output after what is there now
        (fails after ``timeout`` seconds).
        """
        d: Deferred[None] = Deferred()
        self._awaited.append((text, len(self.output), d))
        return d.addTimeout(timeout, reactor)

    def outReceived(self, data: bytes) -> None:
        self.output.extend(data)
        match = LISTENING.search(self.output)
        if match and not self.port.called:
            self.port.callback(int(match.group(1)))
        for entry in list(self._awaited):
            text, start, d = entry
            if self.output.find(text, start) >= 0:
                self._awaited.remove(entry)
                if not d.called:
                    d.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        # twistd stopped by a signal re-raises it on exit, as daemons should.
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        if not self.port.called:
            self.port.errback(RuntimeError(self.output.decode("utf-8", "replace")))
        self.ended.callback(code if code is not None else -(sig or 0))


def spawn(args: list[str], cwd: str, *, command: bool = False, **env: str) -> Twistd:
    """
    Start ``twistd -n`` (no daemon, no pid file) with ``args`` in ``cwd``,
    or with ``command`` the ``proxypypi`` command; its ``port`` fails if
    it does not listen within 30 seconds.
    """
    proto = Twistd()
    environ = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ROOT, **env}
    program = ["-c", CLI] if command else ["-c", TWISTD, "-n", "--pidfile="]
    reactor.spawnProcess(
        proto, sys.executable, [sys.executable, *program, *args], env=environ, path=cwd
    )
    proto.port.addTimeout(30, reactor)
    return proto

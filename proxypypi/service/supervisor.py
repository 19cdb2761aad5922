# -*- test-case-name: tests.test_workers -*-
"""
``--workers N``: the twistd process as a supervisor of N worker processes
that serve the same sockets and the same storage.

The supervisor binds the listening sockets (`proxypypi.service.sockets`),
prepares the storage once (only it empties ``tmp/`` of what a crash left),
and starts each worker with ``python -m proxypypi.service.worker``: the
configuration on its standard input, the sockets as inherited descriptors,
a pipe for its log lines (relayed into the supervisor's log, each tagged
with the worker's number) and one for its heartbeat.

A worker that exits is started again, after a pause that doubles with each
quick failure (a worker that cannot start must not spin); one that stops
beating (alive but stuck) is killed and replaced.  On SIGTERM every worker
is told to drain, as a single process drains, and is killed if it has not
finished in time.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxypypi.config.model import Config
from proxypypi.config.policy import PolicyConfig
from proxypypi.config.serial import config_from_json, config_to_json
from proxypypi.config.urls import ConfigError
from proxypypi.ops.logs import relay_lines
from proxypypi.service.describe import announce_listening, cannot_listen
from proxypypi.service.sockets import FIRST_LISTEN_FD, Inherited, bind, family_of

log = Logger()

#: Seconds between a worker's heartbeats (`proxypypi.service.worker`).
HEARTBEAT = 1.0
#: Seconds without a heartbeat after which a worker counts as stuck.
HANG_TIMEOUT = 30.0
#: A worker that exits sooner than this after its start failed quickly.
QUICK_EXIT = 10.0
#: The longest pause before starting a worker again.
MAX_BACKOFF = 30.0
#: Seconds a worker has to drain after SIGTERM before it is killed.
DRAIN_TIMEOUT = 60.0

#: The descriptors of a worker's pipes to the supervisor.
LOG_FD, ERR_FD, BEAT_FD = 1, 2, 3

#: Where the supervisor and its workers share files, under the storage
#: directory (emptied when the service starts).
RUN_DIR = "run"

#: The configuration as the supervisor last read it (on SIGHUP).
CONFIG_FILE = "config.json"


def read_shared_policy(root: str) -> PolicyConfig:
    """
    The policy settings as the supervisor read them again on SIGHUP (a
    worker's part; it cannot read the command line or the TOML file).

    :raises ConfigError: when there is no such file.
    """
    try:
        with open(os.path.join(root, RUN_DIR, CONFIG_FILE)) as f:
            return config_from_json(f.read()).policy
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the settings the supervisor wrote: {e}") from e


class WorkerProtocol(ProcessProtocol):
    """
    One running worker, as the supervisor sees it.
    """

    def __init__(self, supervisor: Supervisor, index: int, config_json: bytes) -> None:
        self.supervisor = supervisor
        self.index = index
        self.config_json = config_json
        self.ended: Deferred[None] = Deferred()
        self._partial: dict[int, bytes] = {}

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.config_json)
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == BEAT_FD:
            self.supervisor.beat(self.index)
            return
        # Log lines (and, on a crash, Python's own words on stderr): whole
        # lines into the supervisor's log.
        text = self._partial.pop(childFD, b"") + data
        head, newline, rest = text.rpartition(b"\n")
        if rest:
            self._partial[childFD] = rest
        if newline:
            relay_lines((head + newline).decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            relay_lines(rest.decode("utf-8", "replace") + "\n")
        self.supervisor.ended(self.index, reason)
        self.ended.callback(None)


@attrs.define
class _Slot:
    """
    A worker's place: the process in it now, and its recent history.
    """

    index: int
    protocol: WorkerProtocol | None = None
    process: IProcessTransport | None = None
    started_at: float = 0.0
    last_beat: float = 0.0
    quick_failures: int = 0
    restart: IDelayedCall | None = None


@attrs.define(eq=False)
class Supervisor(Service):
    """
    Starts, watches and stops the workers.
    """

    config: Config
    reactor: Any
    count: int
    #: The policy settings read again, on SIGHUP.
    reread: Callable[[], PolicyConfig] | None = None
    #: The command that runs one worker (its arguments follow).
    command: Sequence[str] = (sys.executable, "-m", "proxypypi.service.worker")
    _ports: list[tuple[str, IListeningPort]] = attrs.field(factory=list)
    _slots: list[_Slot] = attrs.field(factory=list)
    _watch: LoopingCall | None = None
    _stopping: bool = False
    _config_json: bytes = b""

    def privilegedStartService(self) -> None:
        """
        Bind every endpoint before anything starts (and before twistd sheds
        root): a failure ends the process with one line and a non-zero
        status, as a single process's start does.

        :raises SystemExit: when an endpoint cannot be bound.
        """
        super().privilegedStartService()
        for description in self.config.listen:
            try:
                port = bind(self.reactor, description)
            except Exception as e:
                for _, bound in self._ports:
                    bound.stopListening()
                raise SystemExit(f"proxypypi: {cannot_listen(description, e)}") from None
            self._ports.append((description, port))
            announce_listening(port.getHost(), description)

    def startService(self) -> None:
        if not self._ports:
            self.privilegedStartService()
        super().startService()
        self._config_json = config_to_json(self.config).encode()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._hangup)
        self._slots = [_Slot(i) for i in range(self.count)]
        log.info("starting {count} worker processes", count=self.count)
        for slot in self._slots:
            self._spawn(slot)
        self._watch = LoopingCall(self._check_beats)
        self._watch.clock = self.reactor
        self._watch.start(HEARTBEAT * 2, now=False)

    def _spawn(self, slot: _Slot) -> None:
        inherited = [
            Inherited(description, FIRST_LISTEN_FD + k, family_of(port))
            for k, (description, port) in enumerate(self._ports)
        ]
        args = [*self.command, "--index", str(slot.index), "--count", str(self.count)]
        for item in inherited:
            args += ["--listen-fd", item.to_arg()]
        child_fds: dict[int, int | str] = {0: "w", LOG_FD: "r", ERR_FD: "r", BEAT_FD: "r"}
        for item, (_, port) in zip(inherited, self._ports, strict=True):
            child_fds[item.fd] = port.fileno()  # type: ignore[attr-defined]
        slot.protocol = WorkerProtocol(self, slot.index, self._config_json)
        slot.started_at = slot.last_beat = self.reactor.seconds()
        slot.process = self.reactor.spawnProcess(
            slot.protocol, args[0], args, env=os.environ.copy(), childFDs=child_fds
        )
        log.info("worker {index} started (pid {pid})", index=slot.index, pid=slot.process.pid)

    def _hangup(self, signum: int, frame: object) -> None:
        # A signal handler may run in the middle of anything: hand over.
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """
        Read the policy settings again and tell every worker (SIGHUP), which
        reads them from the file written here.
        """
        if self.reread is not None:
            try:
                config = attrs.evolve(self.config, policy=self.reread())
            except ConfigError as e:
                log.error("the policy settings were not changed: {error}", error=e)
                return
            path = os.path.join(self.config.storage, RUN_DIR, CONFIG_FILE)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".new", "w") as f:
                f.write(config_to_json(config))
            os.replace(path + ".new", path)
        for slot in self._slots:
            if slot.process is not None:
                _signal(slot.process, "HUP")

    def beat(self, index: int) -> None:
        self._slots[index].last_beat = self.reactor.seconds()

    def _check_beats(self) -> None:
        now = self.reactor.seconds()
        for slot in self._slots:
            if slot.process is not None and now - slot.last_beat > HANG_TIMEOUT:
                log.error(
                    "worker {index} has not answered for {seconds:.0f} s; replacing it",
                    index=slot.index,
                    seconds=now - slot.last_beat,
                )
                slot.last_beat = now
                _signal(slot.process, "KILL")

    def ended(self, index: int, reason: Failure) -> None:
        slot = self._slots[index]
        slot.process = slot.protocol = None
        if self._stopping:
            return
        lived = self.reactor.seconds() - slot.started_at
        slot.quick_failures = slot.quick_failures + 1 if lived < QUICK_EXIT else 0
        delay = min(MAX_BACKOFF, 0.5 * 2 ** (slot.quick_failures - 1)) if slot.quick_failures else 0
        log.error(
            "worker {index} ended ({reason}); starting it again in {delay:g} s",
            index=index,
            reason=reason.getErrorMessage(),
            delay=delay,
        )
        slot.restart = self.reactor.callLater(delay, self._respawn, slot)

    def _respawn(self, slot: _Slot) -> None:
        slot.restart = None
        if not self._stopping:
            self._spawn(slot)

    def pids(self) -> list[int]:
        """
        The process ids of the workers running now.
        """
        return [s.process.pid for s in self._slots if s.process is not None and s.process.pid]

    def stopService(self) -> Deferred[None]:
        """
        Tell every worker to drain (SIGTERM), kill those still running after
        `DRAIN_TIMEOUT`, then close the sockets.
        """
        super().stopService()
        self._stopping = True
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        waiting = []
        for slot in self._slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            if slot.process is not None and slot.protocol is not None:
                waiting.append(slot.protocol.ended)
                _signal(slot.process, "TERM")
        kill = self.reactor.callLater(DRAIN_TIMEOUT, self._kill_all)
        d: Deferred[Any] = DeferredList(waiting)

        def done(_: object) -> None:
            if kill.active():
                kill.cancel()
            for _description, port in self._ports:
                port.stopListening()

        return d.addCallback(done)

    def _kill_all(self) -> None:
        for slot in self._slots:
            if slot.process is not None:
                log.error("worker {index} did not drain in time; killing it", index=slot.index)
                _signal(slot.process, "KILL")


def _signal(process: IProcessTransport, name: str) -> None:
    try:
        process.signalProcess(name)
    except (OSError, ProcessExitedAlready):
        pass

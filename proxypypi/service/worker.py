# -*- test-case-name: tests.test_workers -*-
"""
One worker process of a `proxypypi.service.supervisor.Supervisor`:
``python -m proxypypi.service.worker --index I --count N --listen-fd ...``.

It reads the configuration from its standard input, logs to its standard
output (the supervisor relays the lines), beats once a second on
descriptor 3 (and stops when nobody listens any more: the supervisor is
gone), and serves the inherited sockets with the same service a single
process runs, until SIGTERM, on which it drains as a single process does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger, globalLogBeginner

from proxypypi.config.serial import config_from_json
from proxypypi.ops.logs import json_observer, set_worker, text_observer
from proxypypi.service.compose import Role, make_worker_service
from proxypypi.service.sockets import Inherited
from proxypypi.service.supervisor import BEAT_FD, HEARTBEAT

log = Logger()


def _arguments(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m proxypypi.service.worker")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--listen-fd", action="append", default=[], type=Inherited.from_arg)
    return p.parse_args(argv)


def _beat(reactor: Any) -> None:
    try:
        os.write(BEAT_FD, b".")
    except OSError:
        # The supervisor is gone: a worker never outlives it.
        log.error("the supervisor is gone; stopping")
        reactor.stop()


def _stop_once(reactor: Any) -> Callable[[int, object], None]:
    """
    A SIGTERM and SIGINT handler that stops the reactor once.  A worker
    often gets SIGTERM twice (from a stop that signals the whole process
    group, as systemd's does, and again from its supervisor), and
    Twisted's own handler would log a ReactorNotRunning traceback for the
    second.
    """
    stopping: list[bool] = []

    def handler(signum: int, frame: object) -> None:
        if not stopping:
            stopping.append(True)
            reactor.callFromThread(reactor.stop)

    return handler


def main(argv: list[str] | None = None) -> None:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    config = config_from_json(sys.stdin.read())
    set_worker(args.index)
    observer = json_observer() if config.log_format == "json" else text_observer()
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    from twisted.internet import reactor

    service = make_worker_service(config, reactor, args.listen_fd, Role(args.index, args.count))
    heartbeat = LoopingCall(_beat, reactor)
    heartbeat.clock = reactor
    reactor.callWhenRunning(service.startService)
    reactor.callWhenRunning(heartbeat.start, HEARTBEAT)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    stop = _stop_once(reactor)
    # After Twisted's own handlers are installed, to replace them.
    reactor.addSystemEventTrigger("after", "startup", signal.signal, signal.SIGTERM, stop)
    reactor.addSystemEventTrigger("after", "startup", signal.signal, signal.SIGINT, stop)
    reactor.run()


if __name__ == "__main__":
    main()

# -*- test-case-name: tests.test_policy_service -*-
"""
The policy kept current while the service runs: its rules read again on
``SIGHUP`` and when a rules file changes, and the pages judged again when
the rules change or a file comes of age, in the background, one page
after the other, so that their next requests find their forms ready.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from proxypypi.cache.pages import PageCache
from proxypypi.policy.state import Policy
from proxypypi.private.store import PrivateStore

#: Seconds between looks at the rules files and at the judgements due.
WATCH_INTERVAL = 5.0


@attrs.define(eq=False)
class PolicyWatch(Service):
    """
    Reloads on ``SIGHUP`` (the handler installed while the service runs,
    in the main thread only), and every `WATCH_INTERVAL` seconds when a
    rules file changed; judges again what is due.
    """

    policy: Policy
    pages: PageCache
    private: PrivateStore
    reactor: Any
    log = Logger()
    _loop: LoopingCall | None = None
    _previous: Any = None
    _rejudging: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGHUP, self._hangup)
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(WATCH_INTERVAL, now=False).addErrback(
            lambda f: self.log.failure("the policy watch stopped", f)
        )

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum: int, frame: object) -> None:
        # A signal handler may run in the middle of anything: hand over.
        self.reactor.callFromThread(self.reload, "SIGHUP")

    def reload(self, why: str) -> None:
        """
        Read the policy again; when its rules changed, judge every page
        in memory again.
        """
        if self.policy.reload(why):
            self.private.rejudge()
            self.rejudge()

    def tick(self) -> None:
        """
        Reload if a rules file changed, and judge again what is due.
        """
        if self.policy.files_changed():
            self.reload("a rules file changed")
        self.rejudge()

    def rejudge(self) -> None:
        """
        Judge again the pages that are due, unless that is under way.
        """
        if self._rejudging is not None:
            return
        d = Deferred.fromCoroutine(self.pages.rejudge_due())
        self._rejudging = d

        def done(_: object) -> None:
            self._rejudging = None

        d.addErrback(lambda f: self.log.failure("judging pages again failed", f))
        d.addBoth(done)

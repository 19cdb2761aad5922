"""
A real headless browser for tests: Debian's chromium, driven through the
DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON messages
ended by a NUL byte, written to the child's fd 3, read from its fd 4), on
the real reactor.

Why not ``--dump-dom`` or ``--screenshot`` alone: headless chromium's
window is at least 500 pixels wide whatever ``--window-size`` says, so a
phone's width can only be had by emulating the device
(``Emulation.setDeviceMetricsOverride``), which needs the protocol; and a
search typed into a form and submitted needs a script in the page, which
the pages under test rightly do not have.

Every wait is bounded (`TIMEOUT`); the browser talks only to the
addresses the test navigates to (127.0.0.1), with its background
networking, updates and sync off.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

#: Seconds any one step (a command, a page load, the browser's exit) may take.
TIMEOUT = 30.0

#: Where Debian installs it (``apt-get install chromium``).
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def find_chromium() -> str | None:
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


class DevToolsError(Exception):
    """
    The browser answered a command with an error, or went away.
    """


class Chromium(ProcessProtocol):
    """
    One headless chromium process and one page (tab) in it.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._next_id = 0
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}
        self._waiting: dict[str, list[Deferred[dict[str, Any]]]] = {}
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()
        self.session: str | None = None

    @classmethod
    async def start(cls, executable: str, profile: str) -> Chromium:
        """
        Start chromium with an empty profile in ``profile`` and open a page.
        """
        browser = cls()
        args = [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--no-first-run",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": profile}
        reactor.spawnProcess(  # type: ignore[attr-defined]
            browser, executable, args, env, childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"}
        )
        target = await browser.command("Target.createTarget", url="about:blank")
        attached = await browser.command(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        browser.session = attached["sessionId"]
        await browser.command("Page.enable")
        return browser

    # The protocol

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            self.stderr = (self.stderr + data)[-8192:]
            return
        if childFD != 4:
            return
        self._buffer += data
        while b"\0" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\0", 1)
            self._received(json.loads(raw))

    def _received(self, message: dict[str, Any]) -> None:
        if "id" in message:
            d = self._pending.pop(message["id"], None)
            if d is None:
                return
            if "error" in message:
                d.errback(DevToolsError(json.dumps(message["error"])))
            else:
                d.callback(message.get("result", {}))
            return
        for d in self._waiting.pop(message.get("method", ""), []):
            d.callback(message.get("params", {}))

    def processEnded(self, reason: Failure) -> None:
        gone = DevToolsError(f"chromium ended: {reason.value}; {self.stderr[-2000:]!r}")
        for d in list(self._pending.values()):
            d.errback(gone)
        self._pending.clear()
        if not self.ended.called:
            self.ended.callback(None)

    def command(self, method: str, **params: Any) -> Deferred[dict[str, Any]]:
        """
        Send one command (to the page once there is one) and wait for its
        answer, at most `TIMEOUT` seconds.
        """
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        d: Deferred[dict[str, Any]] = Deferred()
        self._pending[self._next_id] = d
        assert self.transport is not None
        self.transport.writeToChild(3, json.dumps(message).encode() + b"\0")  # type: ignore[attr-defined]
        return d.addTimeout(TIMEOUT, reactor)

    def event(self, method: str) -> Deferred[dict[str, Any]]:
        """
        The next event ``method``, at most `TIMEOUT` seconds from now: ask
        before doing what causes it.
        """
        d: Deferred[dict[str, Any]] = Deferred()
        self._waiting.setdefault(method, []).append(d)
        return d.addTimeout(TIMEOUT, reactor)

    # What tests do with a page

    async def viewport(self, width: int, height: int, phone: bool) -> None:
        """
        Lay pages out at ``width``; a ``phone`` honours their viewport tag
        (without one, a page would be laid out 980 pixels wide and shrunk).
        """
        await self.command(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=phone,
        )

    async def load(self, url: str) -> None:
        """
        Go to ``url`` and wait until it has loaded.
        """
        loaded = self.event("Page.loadEventFired")
        await self.command("Page.navigate", url=url)
        await loaded

    async def evaluate(self, expression: str) -> Any:
        """
        The value of a script run in the page (JSON-like values only).
        """
        result = await self.command(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise DevToolsError(json.dumps(result["exceptionDetails"]))
        return result["result"].get("value")

    async def submit(self, expression: str) -> None:
        """
        Run a script that submits a form (or follows a link), and wait
        until the next page has loaded.
        """
        loaded = self.event("Page.loadEventFired")
        await self.evaluate(expression)
        await loaded

    async def screenshot(self, path: str) -> bytes:
        """
        The viewport as PNG, also written to ``path``.
        """
        shot = await self.command("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        with open(path, "wb") as f:
            f.write(png)
        return png

    async def close(self) -> None:
        """
        Close the browser and wait for it to exit; kill it if it will not.
        """
        if not self.ended.called:
            try:
                await self.command("Browser.close")
            except Exception:
                pass
        try:
            await self.ended.addTimeout(TIMEOUT, reactor)
        except Exception:
            if self.transport is not None:
                self.transport.signalProcess("KILL")

"""
The ``proxypypi`` command as a newcomer runs it: no upstream given (the
index pip is configured with is used), the first screen of the log, and
start failures that end the process with one line and a non-zero status.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest_twisted
from twisted.trial.unittest import SynchronousTestCase

from tests.support.clients import CLI, TWISTD, serves_then_stops, spawn, twistd
from tests.support.proxies import Upstream


def _isolated(home: str) -> dict[str, str]:
    """
    An environment whose pip configuration is only what the test sets.
    """
    return {"HOME": home, "XDG_CONFIG_DIRS": home, "PIP_CONFIG_FILE": os.devnull}


@pytest_twisted.ensureDeferred
async def test_bare_command_uses_pips_index(upstream: Upstream, tmp_path: object) -> None:
    """
    ``proxypypi`` with no --upstream proxies the index PIP_INDEX_URL names,
    says so, and its first screen gives the URLs to use, without
    Twisted's factory and port lines.
    """
    args = ["--listen", "tcp:0:interface=127.0.0.1", "--storage", "data"]
    env = {"PIP_INDEX_URL": upstream.simple, **_isolated(str(tmp_path))}
    proc = spawn(args, str(tmp_path), command=True, **env)
    port = await serves_then_stops(proc)
    log = proc.output.decode()
    assert "no --upstream given, so from PIP_INDEX_URL in the environment" in log
    assert (f"export PIP_INDEX_URL=http://127.0.0.1:{port}/simple/ "
            f"UV_DEFAULT_INDEX=http://127.0.0.1:{port}/simple/") in log  # fmt: skip
    assert f"status page: http://127.0.0.1:{port}/\n" in log
    for noise in ("Starting factory", "Stopping factory", "starting on", "Port", "0x"):
        assert noise not in log, log


def _run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    return twistd(*args, program=program, env={"PATH": os.environ.get("PATH", "")})


class StartFailureTests(SynchronousTestCase):
    def test_port_taken(self) -> None:
        """
        A port in use ends the command and twistd with a non-zero status and
        one line naming the endpoint and the fix, no traceback.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            listen = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
            for program, args in ((CLI, []), (TWISTD, ["-n", "--pidfile=", "proxypypi"])):
                result = _run(program, *args, "--upstream", "http://127.0.0.1:9/simple/",
                              "--listen", listen, "--storage", self.mktemp())  # fmt: skip
                output = result.stdout + result.stderr
                self.assertEqual(result.returncode, 1, output)
                self.assertNotIn("Traceback", output)
                errors = [line for line in output.splitlines() if "#error" in line
                          or "#critical" in line]  # fmt: skip
                self.assertEqual(len(errors), 1, output)
                self.assertIn(f"proxypypi: cannot listen on {listen} (", errors[0])
                self.assertIn("--listen", errors[0])

    def test_storage_unusable(self) -> None:
        """A storage path that cannot be a directory: one line, non-zero."""
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file")
        result = _run(CLI, "--upstream", "http://127.0.0.1:9/simple/",
                      "--storage", os.path.join(blocker, "data"))  # fmt: skip
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("proxypypi: "))

    def test_configuration_error_reason_first(self) -> None:
        """An unknown option: the reason, then only a pointer to --help."""
        result = _run(CLI, "--upstrem", "http://127.0.0.1:9/simple/")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr, "proxypypi: option --upstrem not recognized (see proxypypi --help)\n"
        )

    def test_help_and_version(self) -> None:
        """The command has the plugin's options, and its version."""
        result = _run(CLI, "--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("--upstream", result.stdout)
        self.assertIn("--max-cache-size", result.stdout)
        self.assertTrue(result.stdout.startswith("Usage: proxypypi [options]"), result.stdout)
        self.assertIn("proxypypi", _run(CLI, "--version").stdout)

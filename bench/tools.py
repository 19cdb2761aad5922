"""
The programs the benchmark runs besides Python: where they are, and their
installation by ``python -m bench --setup``.

Installing is that explicit step's job alone: a run that lacks a tool stops
before it starts anything, with one line naming the setup command, rather
than calling apt-get or pip on the machine behind its user's back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable

from bench import BenchError

#: The command that installs everything below.
SETUP_COMMAND = "python -m bench --setup"

#: Commands from Debian's packages (by package name): the disk reference
#: and the request-rate client.
APT = {"nginx": "nginx", "wrk": "wrk"}

#: Commands installed with pip into this interpreter's environment (by
#: package name): the profiler of ``--profile``, and the second installer of
#: the outage scenario.
PIP = {"py-spy": "py-spy", "uv": "uv"}


def find(command: str) -> str | None:
    """
    The path of ``command``: next to this interpreter first (a virtualenv
    that is not activated has its tools there), then on ``PATH``, then in
    the sbin directories a non-login shell may leave off ``PATH`` (Debian
    puts nginx there).
    """
    beside = os.path.join(os.path.dirname(sys.executable), command)
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(command)
    if found is not None:
        return found
    for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = os.path.join(directory, command)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing(commands: Iterable[str]) -> list[str]:
    """
    Those of ``commands`` that are not installed, sorted.
    """
    return sorted({command for command in commands if find(command) is None})


def require(command: str) -> str:
    """
    The path of ``command``.

    :raises BenchError: naming the setup command, when it is not installed.
    """
    path = find(command)
    if path is None:
        raise BenchError(f"{command} is not installed; run: {SETUP_COMMAND}")
    return path


def setup() -> None:
    """
    Install the missing tools: Debian's packages with apt-get (which needs
    root; ``apt-get update`` first, since a fresh machine's package lists
    may be empty), the Python ones with this interpreter's pip.

    :raises BenchError: when a tool cannot be installed.
    """
    apt = [APT[command] for command in missing(APT)]
    if apt:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise BenchError(f"installing {', '.join(apt)} needs root and apt-get")
        print(f"installing {', '.join(apt)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *apt]):
            subprocess.run(argv, check=True, env=env, timeout=600, stdout=subprocess.DEVNULL)
    pip = [PIP[command] for command in missing(PIP)]
    if pip:
        print(f"installing {', '.join(pip)} with pip ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", *pip], check=True, timeout=600
        )
    still = missing([*APT, *PIP])
    if still:
        raise BenchError(f"still missing after the setup: {', '.join(still)}")
    for command in [*APT, *PIP]:
        print(f"{command}: {find(command)}")

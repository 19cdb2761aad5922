# -*- test-case-name: tests.test_cli -*-
"""
The ``proxypypi`` command: ``twistd -n proxypypi`` with the same options,
run through twistd's own runner (logging, signals, shutdown), without
relying on twistd finding its plugin.

twistd discovers plugins in the ``twisted/plugins`` directories on its
path, which a plain ``pip install -e .`` does not put there (only the
``compat`` editable mode does); this command hands twistd the service
maker directly, so it works however the package was installed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

from twisted.application.service import ServiceMaker
from twisted.scripts.twistd import ServerOptions, runApp

#: The same service maker as the twistd plugin's.
SERVICE = ServiceMaker(
    "proxypypi",
    "proxypypi.service.tap",
    "A caching proxy for the Python package index",
    "proxypypi",
)


class _Options(ServerOptions):
    """
    twistd's options, knowing only this service: ``_getPlugins`` is the
    seam twistd's own tests use to hand it plugins.
    """

    def getSynopsis(self) -> str:
        # The service's options follow "proxypypi" in their usage line.
        return "Usage:"

    @staticmethod
    def _getPlugins(interface: Any, package: ModuleType | None = None) -> Iterable[Any]:
        return [SERVICE]


def twistd_arguments(argv: Sequence[str]) -> list[str]:
    """
    The twistd command line that ``proxypypi ARGS`` stands for: in the
    foreground, no pid file, logging to standard output.
    """
    return ["--nodaemon", "--pidfile=", "proxypypi", *argv]


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the service until it is stopped (SIGTERM, SIGINT).
    """
    options = _Options()
    # Options errors end the process here (see proxypypi.service.tap.Options).
    options.parseOptions(twistd_arguments(sys.argv[1:] if argv is None else argv))
    runApp(options)


if __name__ == "__main__":
    main()

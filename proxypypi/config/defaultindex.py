# -*- test-case-name: tests.test_defaultindex -*-
"""
The upstream used when none is given: the index this machine's installers
already use.

A newcomer runs the bare command; whatever pip or uv would install from
here is what the proxy should fetch from, so the installers' own settings
are read in their order of precedence: ``PIP_INDEX_URL``, then uv's
``UV_DEFAULT_INDEX`` and ``UV_INDEX_URL``, then the ``index-url`` of pip's
configuration files, and last pip's own default index, read from the
installed pip at run time (its address is written nowhere in this code).

pip's configuration files are read here, the way pip documents them,
rather than through ``pip._internal.configuration``: that API is private
and has changed shape between pip releases, where the files and their
order have not.  pip's default index has no public home at all; its
``PyPI`` model has kept its place since pip 10, and a pip without it
makes this an error that asks for ``--upstream``.
"""

from __future__ import annotations

import configparser
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import attrs

from proxypypi.config.urls import ConfigError, display_url, parse_upstream_url

#: Environment variables naming an index, in the order they win.
INDEX_VARIABLES = ("PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL")

#: Host names that reach this machine, for spotting an index that is the
#: proxy itself.
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::")


@attrs.frozen
class DefaultIndex:
    """
    The index chosen, and why, for the start-up log.

    :ivar url: the simple index's URL, in its canonical form.
    :ivar reason: where it was found, e.g. ``PIP_INDEX_URL in the
        environment``, including the candidates passed over and why.
    """

    url: str
    reason: str


def pip_config_files(environ: Mapping[str, str], prefix: str) -> list[str]:
    """
    pip's configuration files on this system, least important first (a
    later file's value wins), as pip's documentation lists them: the
    global files, the user's (unless ``PIP_CONFIG_FILE`` names an existing
    file), the environment's (``<sys.prefix>/pip.conf``), then
    ``PIP_CONFIG_FILE``; none at all when that is ``os.devnull``.
    """
    named = environ.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [os.path.join(d, "pip", "pip.conf") for d in xdg_dirs.split(os.pathsep) if d]
    files.append("/etc/pip.conf")
    if not (named and os.path.exists(named)):
        home = environ.get("HOME") or os.path.expanduser("~")
        config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        files += [os.path.join(home, ".pip", "pip.conf"),
                  os.path.join(config_home, "pip", "pip.conf")]  # fmt: skip
    files.append(os.path.join(prefix, "pip.conf"))
    if named:
        files.append(named)
    return files


def _index_url_in(path: str) -> str | None:
    """
    The ``index-url`` a pip configuration file sets for installs (its
    ``[install]`` section over ``[global]``), or ``None``.  A file that
    cannot be read or parsed sets nothing, as for pip it would stop every
    command, which the user will hear about from pip itself.
    """
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    for section in ("install", "global"):
        for key in ("index-url", "index_url"):
            if parser.has_option(section, key):
                return parser.get(section, key).strip() or None
    return None


def pip_default_index() -> str | None:
    """
    The index the installed pip uses when told nothing, or ``None``
    without a pip that says.
    """
    try:
        module = importlib.import_module("pip._internal.models.index")
    except ImportError:
        return None
    url = getattr(getattr(module, "PyPI", None), "simple_url", None)
    return url if isinstance(url, str) else None


def _listen_ports(listen: Iterable[str]) -> set[int]:
    """
    The TCP ports of ``tcp:`` and ``ssl:`` listen endpoints.
    """
    ports = set()
    for description in listen:
        kind, _, rest = description.partition(":")
        port = rest.split(":", 1)[0]
        if kind in ("tcp", "ssl") and port.isdigit():
            ports.add(int(port))
    return ports


def _is_self(url: str, ports: set[int]) -> bool:
    """
    Whether ``url`` would reach this proxy: a loopback host on one of the
    ports it listens on (an installer already pointed at the proxy).
    """
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    return (parts.hostname or "") in _LOOPBACK and port in ports


def find_default_index(
    environ: Mapping[str, str],
    listen: Iterable[str],
    *,
    prefix: str = sys.prefix,
    pip_default: Callable[[], str | None] = pip_default_index,
) -> DefaultIndex:
    """
    The index this machine's installers use, skipping any that is this
    proxy itself (an installer already pointed here) or not http(s) (a
    ``file:`` index cannot be proxied).

    :param listen: the proxy's listen endpoints.
    :param prefix: the environment whose ``pip.conf`` counts.
    :raises ConfigError: when there is none to use.
    """
    ports = _listen_ports(listen)
    candidates = [(environ.get(v), f"{v} in the environment") for v in INDEX_VARIABLES]
    for path in reversed(pip_config_files(environ, prefix)):
        candidates.append((_index_url_in(path), f"index-url in {path}"))
    skipped = []
    for value, where in candidates:
        if not value:
            continue
        try:
            url = parse_upstream_url(value)
        except ConfigError:
            skipped.append(f"{where} ({display_url(value)}) is not an http(s) URL")
            continue
        if _is_self(url, ports):
            skipped.append(f"{where} ({display_url(url)}) is this proxy itself")
            continue
        return DefaultIndex(url, "; ".join([f"from {where}", *skipped]))
    default = pip_default()
    if default is None:
        raise ConfigError(
            "no upstream given, and no pip here to read the default index from; "
            "add --upstream URL (e.g. --upstream https://mirror.example/simple/)"
        )
    return DefaultIndex(
        parse_upstream_url(default),
        "; ".join(["pip's default index (no --upstream, and no index set for pip or uv)",
                   *skipped]),
    )  # fmt: skip

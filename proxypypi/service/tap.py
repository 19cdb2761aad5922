# -*- test-case-name: tests.test_config,tests.test_logs -*-
"""
``twistd proxypypi``: command-line options and the service maker.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from proxypypi import __version__
from proxypypi.cache.storage import Storage, StorageError
from proxypypi.config.defaultindex import find_default_index
from proxypypi.config.model import DEFAULT_STORAGE, Config
from proxypypi.config.settings import build_config, load_toml
from proxypypi.config.urls import ConfigError
from proxypypi.ops.logs import use_logfile
from proxypypi.policy.rules import RulesError
from proxypypi.policy.state import build_rules
from proxypypi.private.auth import AuthFileError, check_auth_file


class Options(usage.Options):
    """
    Options of ``twistd proxypypi``; a ``--config`` TOML file gives the same
    keys, and the command line overrides it.
    """

    synopsis = "[options] [--upstream URL ...]"
    longdesc = (
        "A caching proxy for the Python package index.  Give each upstream "
        "simple index with --upstream, in rank order; several URLs joined "
        "by commas form one group of mirrors.  Without any, the index pip "
        "and uv use on this machine is the upstream."
    )
    optParameters = [
        ["config", None, None, "TOML file with settings (same keys as these options)."],
        ["storage", None, None, f"Directory for cached files and pages [{DEFAULT_STORAGE}]."],
        ["page-ttl", None, None, "Seconds a cached project page stays fresh [600]."],
        [
            "download-idle-timeout",
            None,
            None,
            "Seconds without upstream data before a download is abandoned [10].",
        ],
        ["negative-ttl", None, None, "Seconds an upstream 404 is remembered [60]."],
        [
            "max-cache-size",
            None,
            None,
            "Keep at most this much of upstream files, e.g. 50G; least recently used "
            "files are evicted [unbounded].",
        ],
        [
            "page-memory",
            None,
            None,
            "Obsolete, accepted and ignored: pages are served from their files on disk.",
        ],
        ["auth-file", None, None, "htpasswd file (bcrypt) of users who may upload."],
        ["max-upload-size", None, None, "Largest upload accepted [1G]."],
        ["max-file-size", None, None, "Largest upstream file fetched [20G]."],
        ["log-format", None, None, "Log format: text or json (one object per line) [text]."],
        ["upstream-proxy", None, None, "HTTP proxy URL to reach upstreams through."],
        [
            "workers",
            None,
            None,
            "Worker processes sharing the sockets and the storage; 1 is a single "
            "process [one per CPU].",
        ],
        ["header-timeout", None, None, "Seconds for a request's headers to arrive [20]."],
        [
            "max-connections",
            None,
            None,
            "Client connections open at most [the file descriptor limit less a quarter].",
        ],
        [
            "max-client-connections",
            None,
            None,
            "Connections open at most per client address [128].",
        ],
        ["cooldown", None, None, "Hold back files uploaded upstream more recently, e.g. 7d."],
        [
            "cooldown-unknown",
            None,
            None,
            "Files without an upload time under a cooldown: allow or deny [deny].",
        ],
        ["deny", None, None, "Rules file of what is never served (re-read on SIGHUP)."],
        ["allow", None, None, "Rules file of all that is served (a curated mirror)."],
    ]
    optFlags = [
        ["offline", None, "Serve only what is stored; never contact an upstream."],
        [
            "forget-removed",
            None,
            "Drop stored files from pages once the upstream stops listing them.",
        ],
        ["auth-read", None, "Require a valid user for reads too."],
        ["allow-overwrite", None, "Let uploads replace a private file of the same name."],
        ["policy-report-only", None, "Serve everything; log and count what the policy holds."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["upstreams"] = []
        self["listens"] = []
        self["merge-upstream"] = []
        self["trusted-proxy"] = []
        self["file-host"] = []
        self["admin"] = []
        self["cooldown-exempt"] = []

    def opt_version(self) -> None:
        """
        Print the version of proxypypi (and of Twisted) and exit.
        """
        from twisted import copyright

        print(f"proxypypi {__version__} (Twisted {copyright.version})")
        raise SystemExit(0)

    def opt_upstream(self, url: str) -> None:
        """
        An upstream simple index, e.g. https://mirror.example/simple/
        (repeatable; order is rank; URL1,URL2 makes one group of mirrors).
        """
        self["upstreams"].append(url)

    def opt_listen(self, endpoint: str) -> None:
        """
        A Twisted server endpoint to listen on (repeatable)
        [tcp:3141:interface=127.0.0.1].
        """
        self["listens"].append(endpoint)

    def opt_merge_upstream(self, name: str) -> None:
        """
        A private project whose upstream files stay listed (repeatable).
        """
        self["merge-upstream"].append(name)

    def opt_trusted_proxy(self, address: str) -> None:
        """
        A reverse proxy whose X-Forwarded-Proto/-Host headers are honoured:
        an address, a network (10.0.0.0/8) or "unix" (repeatable).
        """
        self["trusted-proxy"].append(address)

    def opt_file_host(self, host: str) -> None:
        """
        HOST[:PORT]: when given, the only hosts besides the upstreams that
        files are fetched from, also on private addresses (repeatable).
        """
        self["file-host"].append(host)

    def opt_admin(self, user: str) -> None:
        """
        A user of the auth file who may change every private project
        (repeatable).
        """
        self["admin"].append(user)

    def opt_cooldown_exempt(self, name: str) -> None:
        """
        A project (NAME) or release (NAME==VERSION) the cooldown never
        holds back (repeatable).
        """
        self["cooldown-exempt"].append(name)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse, and turn any error into one line that gives the reason first
        and points at ``--help``: twistd would print its whole usage (some
        forty lines) before the reason.

        :raises SystemExit: with that line (status 1).
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"proxypypi: {e} (see {_command()} --help)") from None

    def postOptions(self) -> None:
        try:
            self["config_obj"] = config = options_to_config(self)
            if self.parent is not None and not self.parent.get("logger"):
                # twistd creates its log observer after parsing options.
                use_logfile(self.parent.get("logfile"))
                self.parent["logger"] = f"proxypypi.ops.logs.{config.log_format}_observer"
            Storage(self["config_obj"].storage, _no_runner).prepare()
            if config.auth_file is not None:
                check_auth_file(config.auth_file)
            build_rules(config.policy, 1)
        except (ConfigError, StorageError, AuthFileError, RulesError) as e:
            raise usage.UsageError(str(e)) from e


def _command() -> str:
    """
    How the user ran us, for the pointer to ``--help``.
    """
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return "twistd proxypypi" if program.startswith("twistd") else "proxypypi"


def _no_runner(*args: Any) -> Any:
    raise AssertionError("no blocking work at option time")


def options_to_config(options: usage.Options) -> Config:
    """
    Merge the options over the ``--config`` file.
    """
    settings: dict[str, object] = {}
    if options["config"]:
        settings.update(load_toml(options["config"]))
    for parameter in Options.optParameters:
        key = str(parameter[0])
        if key != "config" and options[key] is not None:
            settings[key] = options[key]
    for flag in Options.optFlags:
        key = str(flag[0])
        if options[key]:
            settings[key] = True
    for key in ("merge-upstream", "trusted-proxy", "file-host", "admin", "cooldown-exempt"):
        if options[key]:
            settings[key] = options[key]
    return build_config(
        settings,
        options["upstreams"],
        options["listens"] or (),
        default_index=lambda listen: find_default_index(os.environ, listen),
    )


def makeService(options: usage.Options) -> IService:
    """
    Build the service; called by twistd after the options are parsed.
    """
    from twisted.internet import reactor

    from proxypypi.service.compose import make_service

    try:
        # SIGHUP reads the --config file again, under the same command line.
        return make_service(
            options["config_obj"], reactor, reread=lambda: options_to_config(options).policy
        )
    except (ConfigError, StorageError) as e:
        # twistd would print a traceback; the message says it all.
        raise SystemExit(f"proxypypi: {e}") from e

# -*- test-case-name: tests.test_policy_admin -*-
"""
``proxypypi-admin policy explain NAME [VERSION]``: for each file of a
project's stored page (or of its private uploads), whether the policy
serves it and, if not, why; read from the storage directory, under the
policy the service's settings describe (``--config`` and the same policy
options as the service), at this moment.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TextIO

from packaging.utils import NormalizedName
from packaging.version import InvalidVersion, Version

from proxypypi.cache.page import CachedPage
from proxypypi.config.policy import POLICY_KEYS, policy_config
from proxypypi.config.settings import load_toml
from proxypypi.config.urls import ConfigError
from proxypypi.names import normalize, version_of
from proxypypi.ops.admin.common import AdminError
from proxypypi.policy.decision import quarantine_message
from proxypypi.policy.rules import RulesError
from proxypypi.policy.state import build_rules, describe
from proxypypi.private.model import PAGE_FILE, PrivateFile
from proxypypi.simple.model import ProjectPage


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """
    ``policy explain``'s arguments.
    """
    p = commands.add_parser(
        "policy",
        help="say for each file of a project whether the policy serves it, and why",
        description="policy explain NAME [VERSION]: for each file of the project's stored "
        "page (or its private uploads), whether the policy in the given settings serves "
        "it now, and why not.",
    )
    p.add_argument("action", choices=["explain"])
    p.add_argument("name", help="the project")
    p.add_argument("version", nargs="?", help="only this version's files")
    p.add_argument("--storage", required=True, help="the service's storage directory")
    p.add_argument("--config", help="the service's TOML settings file")
    p.add_argument("--cooldown", help="as the service's option (overrides --config)")
    p.add_argument("--cooldown-unknown", choices=["allow", "deny"])
    p.add_argument("--cooldown-exempt", action="append", default=[], metavar="NAME")
    p.add_argument("--deny", metavar="FILE")
    p.add_argument("--allow", metavar="FILE")
    p.set_defaults(func=explain)


def _page(root: str, name: NormalizedName) -> tuple[ProjectPage, str]:
    """
    The project's private page, else its stored upstream page, and where
    it came from.

    :raises AdminError: when neither is stored, or it is damaged.
    """
    private = os.path.join(root, "private", name, PAGE_FILE)
    stored = os.path.join(root, "pages", name + ".json")
    try:
        if os.path.isfile(private):
            with open(private, "rb") as f:
                doc = json.load(f)
            files = tuple(PrivateFile.from_json(item).dist_file() for item in doc["files"])
            return ProjectPage(name, files), "private uploads"
        with open(stored, "rb") as f:
            cached = CachedPage.from_bytes(name, f.read())
        return cached.page, f"stored page from {cached.source}"
    except FileNotFoundError as e:
        raise AdminError(f"no page of {name} is stored in {root}") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AdminError(f"the stored page of {name} is damaged: {e}") from e


def explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    Print each file's verdict.

    :returns: 0.
    :raises AdminError: for bad settings, rules, names, or no stored page.
    """
    name = normalize(args.name)
    if name is None:
        raise AdminError(f"{args.name!r} is not a project name")
    settings: dict[str, object] = {}
    try:
        if args.config:
            settings.update(load_toml(args.config))
        for key in POLICY_KEYS:
            value = getattr(args, key.replace("-", "_"), None)
            if value:
                settings[key] = value
        rules = build_rules(policy_config(settings), 1)
    except (ConfigError, RulesError) as e:
        raise AdminError(str(e)) from e
    wanted = None
    if args.version is not None:
        try:
            wanted = str(Version(args.version))
        except InvalidVersion as e:
            raise AdminError(f"{args.version!r} is not a version") from e
    page, source = _page(args.storage, name)
    now = time.time()
    quarantine = quarantine_message(page)
    print(f"{name}: {source}; policy: {describe(rules)}", file=out)
    shown = 0
    for f in page.files:
        if wanted is not None and version_of(f.filename, name) != wanted:
            continue
        shown += 1
        withheld = rules.verdict(name, f, now, quarantine)
        if withheld is None:
            print(f"served    {f.filename}", file=out)
        else:
            verb = "would be withheld" if rules.report_only else "withheld"
            print(f"{verb:<9} {f.filename}: {withheld.message}", file=out)
    if not shown:
        what = f"version {args.version} of {name}" if wanted else name
        print(f"no file of {what} is stored", file=out)
    return 0

# -*- test-case-name: tests.test_admin -*-
"""
``proxypypi-admin``: housekeeping for a proxypypi storage directory.

A plain command-line program, independent of twistd and of the reactor, so
it works on the storage of a stopped service as well as a running one:

``verify``
    re-hash every stored file against the hash its project page promised,
    move mismatches to ``DATA/quarantine/<project>/``, and report (with
    ``--repair``: remove) leftovers: zero-byte files, foreign files and
    temporary files a crash left behind.
``stats``
    projects, files and bytes, upstream cache and private uploads apart.
``prefetch``
    warm the cache through a running service by having pip download a set
    of requirements (dependencies included) through it.
``policy explain NAME [VERSION]``
    for each file of a project, whether the supply-chain policy serves it,
    and why not.
``adduser``
    add a user who may upload (or change a password) in the htpasswd file.

Every change ``verify`` makes is one ``rename`` or ``unlink``, each atomic,
so it is safe next to a running service: a quarantined or removed upstream
file is simply fetched again on its next request.  Temporary files younger
than ``--min-age`` may belong to a running download and are left alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from proxypypi.ops.admin import policy
from proxypypi.ops.admin.common import AdminError
from proxypypi.ops.admin.prefetch import prefetch
from proxypypi.ops.admin.stats import stats
from proxypypi.ops.admin.users import adduser
from proxypypi.ops.admin.verify import DEFAULT_MIN_AGE, verify


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxypypi-admin", description="Housekeeping for a proxypypi storage directory."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser(
        "verify",
        help="re-hash stored files, quarantine mismatches, report leftovers",
        description="Re-hash every stored file against its project page; move mismatches "
        "to DATA/quarantine/<project>/ (exit code 1 when there was any); report zero-byte, "
        "foreign and temporary leftovers, and remove them with --repair.",
    )
    p.add_argument("--storage", required=True, help="the service's storage directory")
    p.add_argument("--repair", action="store_true", help="remove leftovers")
    p.add_argument(
        "--min-age",
        type=float,
        default=DEFAULT_MIN_AGE,
        metavar="SECONDS",
        help="temporary files untouched for less than this may be in use and are "
        f"left alone [{DEFAULT_MIN_AGE:.0f}]",
    )
    p.set_defaults(func=verify)

    p = commands.add_parser("stats", help="projects, files and bytes")
    p.add_argument("--storage", required=True, help="the service's storage directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=stats)

    p = commands.add_parser(
        "prefetch",
        help="warm the cache through a running service",
        description="Download requirements and all their dependencies with pip through a "
        "running proxy, so it fetches and stores every file pip needs.  Arguments after "
        "-- go to pip download (e.g. -- --platform manylinux2014_x86_64 --only-binary :all:).",
    )
    p.add_argument("requirements", nargs="*", help="requirement specifiers")
    p.add_argument(
        "-r", "--requirement", action="append", default=[], metavar="FILE",
        help="a requirements file (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--index-url",
        default="http://127.0.0.1:3141/simple/",
        help="the proxy's simple index [http://127.0.0.1:3141/simple/]",
    )
    p.add_argument("--dest", help="keep the downloaded files here (default: discard them)")
    p.set_defaults(func=prefetch)

    policy.add_parser(commands)
    p = commands.add_parser(
        "adduser",
        help="add a user who may upload, or change a password",
        description="Write a bcrypt entry for NAME into the htpasswd file given to the "
        "service with --auth-file (created when missing), as htpasswd -B would.  The password "
        "is asked twice on a terminal, else read from the first line of standard input.",
    )
    p.add_argument("name", metavar="NAME", help="the user name")
    p.add_argument("--auth-file", required=True, metavar="FILE", help="the htpasswd file")
    p.set_defaults(func=adduser)
    return parser


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """
    Run one command; the console script ``proxypypi-admin``.

    :returns: the exit code: 0, 1 (``verify`` found mismatches, or the
        command failed), 2 (bad usage).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, extra = args_list[:cut], args_list[cut + 1 :]
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = _parser().parse_args(args_list)
    args.extra = extra
    args.stdin = sys.stdin if stdin is None else stdin
    try:
        code: int = args.func(args, out, err)
    except AdminError as e:
        print(f"proxypypi-admin {args.command}: {e}", file=err)
        return 2
    return code


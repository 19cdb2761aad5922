# -*- test-case-name: tests.test_adduser -*-
"""
``proxypypi-admin adduser``: a user who may upload, written to the
htpasswd file as ``htpasswd -B`` would (bcrypt, ``$2y$``), so that no
apache2-utils is needed.

The file is replaced atomically (a temporary file beside it, then a
rename), keeping its permission bits; the running service notices the
change and reads it again.  Other lines (users, comments) are kept as
they are; an existing entry of the same user is replaced.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
from collections.abc import Callable
from typing import TextIO

import bcrypt

from proxypypi.ops.admin.common import AdminError
from proxypypi.private.auth import BCRYPT_MAX_PASSWORD

#: bcrypt's cost for new entries: ``htpasswd -B``'s default (5) is too
#: cheap against guessing today; 12 takes a quarter second here, once per
#: login thanks to the service's cache of good checks.
COST = 12

#: The longest user name accepted.
MAX_NAME = 255


def check_name(name: str) -> bytes:
    """
    A user name as the file holds it.

    :raises AdminError: for a name the file cannot hold (empty, a colon,
        white space or control characters, too long).
    """
    if not name or len(name) > MAX_NAME or ":" in name or not name.isprintable() or any(
        c.isspace() for c in name
    ):
        raise AdminError(
            f"{name!r} cannot be a user name: use printable characters without spaces or ':'"
        )
    return name.encode("utf-8")


def hash_password(password: bytes, cost: int = COST) -> bytes:
    """
    A bcrypt hash in ``htpasswd -B``'s spelling (``$2y$``, which is the
    same algorithm as ``$2b$``).

    :raises AdminError: for an empty password, or one longer than bcrypt
        reads (it would silently ignore the rest).
    """
    if not password:
        raise AdminError("the password is empty")
    if len(password) > BCRYPT_MAX_PASSWORD:
        raise AdminError(f"the password is longer than bcrypt's {BCRYPT_MAX_PASSWORD} bytes")
    return b"$2y$" + bcrypt.hashpw(password, bcrypt.gensalt(rounds=cost))[4:]


def add_user(path: str, name: bytes, hashed: bytes) -> bool:
    """
    Write ``name``'s entry into the htpasswd file at ``path`` (created,
    readable by its owner only, when missing).

    :returns: whether an entry of ``name`` was replaced.
    """
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        lines, mode = [], 0o600
    except OSError as e:
        raise AdminError(f"cannot read {path}: {e.strerror}") from e
    entry = name + b":" + hashed
    kept = [line for line in lines if line.strip().partition(b":")[0] != name]
    replaced = len(kept) != len(lines)
    data = b"\n".join([*kept, entry]) + b"\n"
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".htpasswd-{secrets.token_hex(6)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise AdminError(f"cannot write {path}: {e.strerror}") from e
    return replaced


def read_password(stdin: TextIO, ask: Callable[[str], str] = getpass.getpass) -> bytes:
    """
    The new password: asked twice on a terminal, else the first line of
    standard input (for scripts: ``echo "$PW" | proxypypi-admin adduser``).

    :raises AdminError: when the two answers differ.
    """
    if not stdin.isatty():
        return stdin.readline(4 * BCRYPT_MAX_PASSWORD).rstrip("\r\n").encode("utf-8")
    first = ask("New password: ")
    if ask("Same password again: ") != first:
        raise AdminError("the passwords differ; nothing was written")
    return first.encode("utf-8")


def adduser(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    The ``adduser`` command.
    """
    name = check_name(args.name)
    hashed = hash_password(read_password(args.stdin))
    replaced = add_user(args.auth_file, name, hashed)
    print(f"{'replaced' if replaced else 'added'} {args.name} in {args.auth_file}", file=out)
    return 0

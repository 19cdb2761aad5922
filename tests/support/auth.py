"""
Users for the upload and read guards: htpasswd entries as ``htpasswd -B``
writes them, Basic credentials as clients send them, and a bcrypt check
that counts, for the tests that bound how many verifications a request
costs.
"""

from __future__ import annotations

import base64

import bcrypt

from proxypypi.private.auth import Verify


def htpasswd_line(user: str, password: str) -> bytes:
    """
    One entry as ``htpasswd -B`` writes it (``$2y$``; cost 4 keeps tests fast).
    """
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4))
    return user.encode() + b":" + hashed.replace(b"$2b$", b"$2y$", 1) + b"\n"


def basic(user: str, password: str) -> str:
    """
    The ``Authorization`` value of HTTP Basic credentials.
    """
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def counting_checkpw(calls: list[bytes]) -> Verify:
    """
    `bcrypt.checkpw` that appends to ``calls`` the hash of every
    verification, to give `proxypypi.private.auth.HtpasswdChecker` as its
    ``verify``.
    """

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return bcrypt.checkpw(password, hashed)

    return checkpw

# -*- test-case-name: tests.test_downloads -*-
"""
What a `proxypypi.cache.download.Download` goes through: its phases, the
inputs of its state machine, and the running hashes it checks its bytes
with.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

from twisted.python.failure import Failure


class Phase(enum.Enum):
    """
    Where a download stands.
    """

    FETCHING = "fetching"
    STREAMING = "streaming"
    VERIFIED = "verified"
    COMPLETE = "complete"
    CANCELLING = "cancelling"
    FAILED = "failed"


class Inputs(Protocol):
    """
    What can happen to a download.
    """

    def headers_arrived(self) -> None:
        """An origin answered with the file's headers."""

    def bytes_verified(self) -> None:
        """Every byte is on disk and every hash matched."""

    def committed(self) -> None:
        """The file is in its final place, synced."""

    def failed(self, failure: Failure) -> None:
        """The download will never be complete."""

    def cancel(self) -> None:
        """The service is stopping: give up."""


def hashers(hashes: Mapping[str, str]) -> dict[str, Any]:
    """
    A running hash for every algorithm of the page's hashes we can compute.
    """
    out: dict[str, Any] = {}
    for name, digest in hashes.items():
        if name in hashlib.algorithms_available and digest:
            out[name] = hashlib.new(name)
    if "sha256" not in out:
        out["sha256"] = hashlib.sha256()
    return out

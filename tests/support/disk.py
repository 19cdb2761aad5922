"""
Disk work for tests: the blocking jobs the service hands to its disk
threads, run at once (`sync_run`) or when the test says (`HeldRunner`); a
storage whose disk the test can fill; and what ended up on disk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred

from proxypypi.cache.storage import Claim, FileKey, Storage


def sync_run(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """
    A `proxypypi.cache.storage.Runner` that runs the job at once, on the
    caller's thread, so in-memory tests need no thread pool.
    """
    return maybeDeferred(f, *args)


class HeldRunner:
    """
    A runner that holds every job until the test calls `run_all`, as a busy
    thread pool would: what happens while disk work is pending can be
    checked.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((f, args, d))
        return d

    def run_all(self) -> None:
        """
        Run the jobs held so far, in order (jobs they add wait for the next
        call).
        """
        jobs, self.jobs = self.jobs, []
        for f, args, d in jobs:
            maybeDeferred(f, *args).chainDeferred(d)


@attrs.define
class FillableStorage(Storage):
    """
    `Storage` whose disk the test can fill: while `full` is true, every
    partial file is opened on ``/dev/full``, so writes fail with ``ENOSPC``
    the way they do on a full disk.  A storage handed to the code under
    test, rather than a patched method, so no other test sees it.
    """

    full: bool = attrs.field(default=False, kw_only=True)

    def open_partial(self) -> tuple[int, str]:
        fd, path = super().open_partial()
        if not self.full:
            return fd, path
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), path

    def claim(self, key: FileKey) -> Claim | None:
        claim = super().claim(key)
        if claim is None or not self.full:
            return claim
        os.close(claim.fd)
        return Claim(os.open("/dev/full", os.O_WRONLY), claim.path)


@attrs.define
class UnwritableSpool(Storage):
    """
    `Storage` whose ``tmp/`` the test can make unusable: while `broken`
    is true, creating a spool file there fails, and so does removing one
    (what a file system remounted read-only does, with EROFS; here the
    directory is under ``/dev/null``, so both fail with ENOTDIR).
    """

    broken: bool = attrs.field(default=False, kw_only=True)

    @property
    def tmp_dir(self) -> str:
        return "/dev/null/tmp" if self.broken else super().tmp_dir


def stored(storage: Storage, project: str, filename: str) -> bytes | None:
    """
    The bytes of an upstream file in ``storage``, or ``None`` when it is not
    stored.
    """
    path = storage.file_path(project, filename)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def listing(root: str) -> dict[str, str]:
    """
    Every file under ``root`` (by path relative to it) with the sha256 of its
    content.
    """
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found

# -*- test-case-name: tests.test_admin -*-
"""
``proxypypi-admin prefetch``: warm the cache through a running service by
having pip download a set of requirements (dependencies included) through
it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import urlsplit

import attrs

from proxypypi.ops.admin.common import AdminError
from proxypypi.sizes import human_bytes


def pip_command(
    index_url: str,
    dest: str,
    requirement_files: Sequence[str],
    requirements: Sequence[str],
    extra: Sequence[str] = (),
) -> list[str]:
    """
    The pip invocation that downloads ``requirements`` (and their
    dependencies) through the proxy: this interpreter's pip, isolated from
    the user's pip configuration (so no other index is consulted), no pip
    cache (every file must come through the proxy), no self-version check.
    """
    argv = [
        sys.executable,
        "-m",
        "pip",
        "--isolated",
        "--disable-pip-version-check",
        "--no-input",
        "download",
        "--no-cache-dir",
        "--progress-bar",
        "off",
        "--index-url",
        index_url,
        "--dest",
        dest,
    ]
    host = urlsplit(index_url).hostname
    if urlsplit(index_url).scheme == "http" and host:
        argv += ["--trusted-host", host]
    for path in requirement_files:
        argv += ["--requirement", path]
    return argv + list(requirements) + list(extra)


@attrs.define
class Progress:
    """
    What pip said so far, shown on one self-rewriting line when ``err`` is
    a terminal, as plain lines otherwise.
    """

    err: TextIO
    started: float = attrs.field(factory=time.monotonic)
    collected: int = 0
    saved: list[str] = attrs.field(factory=list)
    _spin: int = 0

    @property
    def interactive(self) -> bool:
        return self.err.isatty()

    def feed(self, line: str) -> None:
        text = line.strip()
        if text.startswith("Collecting "):
            self.collected += 1
        elif text.startswith(("Saved ", "File was already downloaded ")):
            name = os.path.basename(text.rsplit(" ", 1)[1])
            self.saved.append(name)
            if not self.interactive:
                print(f"[{len(self.saved)}] {name}", file=self.err, flush=True)
        if self.interactive:
            self._spin += 1
            elapsed = time.monotonic() - self.started
            spinner = "|/-\\"[self._spin % 4]
            print(
                f"\r{spinner} {self.collected} requirements, "
                f"{len(self.saved)} files, {elapsed:.0f}s",
                end="",
                file=self.err,
                flush=True,
            )

    def done(self) -> None:
        if self.interactive:
            print(file=self.err)


def prefetch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.requirements and not args.requirement:
        raise AdminError("nothing to prefetch: give requirements, or -r FILE")
    parts = urlsplit(args.index_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AdminError(f"--index-url {args.index_url!r} is not an http(s) URL")
    with tempfile.TemporaryDirectory(prefix="proxypypi-prefetch-") as scratch:
        dest = args.dest or scratch
        argv = pip_command(args.index_url, dest, args.requirement, args.requirements, args.extra)
        progress = Progress(err)
        tail: deque[str] = deque(maxlen=40)
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip("\n"))
            progress.feed(line)
        code = process.wait()
        progress.done()
        elapsed = time.monotonic() - progress.started
        size = sum(
            os.path.getsize(os.path.join(dest, n))
            for n in set(progress.saved)
            if os.path.isfile(os.path.join(dest, n))
        )
    if code != 0:
        print("pip failed; its last lines:", file=err)
        for line in tail:
            print("  " + line, file=err)
        print(
            f"prefetch failed after {elapsed:.1f}s ({len(progress.saved)} files fetched "
            f"before the failure)",
            file=out,
        )
        return code or 1
    print(
        f"prefetched {len(progress.saved)} files ({human_bytes(size)}) through "
        f"{args.index_url} in {elapsed:.1f}s",
        file=out,
    )
    return 0



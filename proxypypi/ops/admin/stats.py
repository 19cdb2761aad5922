# -*- test-case-name: tests.test_admin -*-
"""
``proxypypi-admin stats``: projects, files and bytes, upstream cache and
private uploads apart.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from typing import Any, TextIO

from proxypypi.names import (
    METADATA_SUFFIX,
)
from proxypypi.ops.admin.common import AdminError, entries, walk
from proxypypi.sizes import human_bytes


def _count(entries: Iterator[os.DirEntry[str]]) -> tuple[int, int]:
    n = size = 0
    for entry in entries:
        n += 1
        size += entry.stat(follow_symlinks=False).st_size
    return n, size


def collect_stats(root: str) -> dict[str, Any]:
    """
    Counts and sizes of everything in the storage directory ``root``.
    """
    if not os.path.isdir(root):
        raise AdminError(f"{root} is not a directory; give the service's --storage")
    upstream_projects = upstream_files = upstream_bytes = metadata_files = 0
    for project in entries(os.path.join(root, "files")):
        files = [e for e in walk(project.path)] if project.is_dir() else []
        if files:
            upstream_projects += 1
        for entry in files:
            upstream_files += 1
            upstream_bytes += entry.stat(follow_symlinks=False).st_size
            metadata_files += entry.name.endswith(METADATA_SUFFIX)
    private_projects = private_files = private_bytes = 0
    for project in entries(os.path.join(root, "private")):
        if not project.is_dir():
            continue
        files = [
            e
            for e in walk(project.path)
            if not e.name.endswith(".json") and not e.name.startswith(".")
        ]
        private_projects += bool(files)
        n, size = _count(iter(files))
        private_files += n
        private_bytes += size
    pages = sum(1 for e in entries(os.path.join(root, "pages")) if e.name.endswith(".json"))
    quarantined = _count(walk(os.path.join(root, "quarantine")))
    temporary = _count(walk(os.path.join(root, "tmp")))
    return {
        "storage": os.path.abspath(root),
        "projects": {"upstream": upstream_projects, "private": private_projects},
        "pages": pages,
        "files": {
            "upstream": {
                "count": upstream_files,
                "bytes": upstream_bytes,
                "metadata": metadata_files,
            },
            "private": {"count": private_files, "bytes": private_bytes},
        },
        "quarantine": {"count": quarantined[0], "bytes": quarantined[1]},
        "temporary": {"count": temporary[0], "bytes": temporary[1]},
        "bytes": upstream_bytes + private_bytes + quarantined[1] + temporary[1],
    }



def stats(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    s = collect_stats(args.storage)
    if args.json:
        print(json.dumps(s, indent=1), file=out)
        return 0
    up, private = s["files"]["upstream"], s["files"]["private"]

    def counted(figures: dict[str, int]) -> str:
        return f"{figures['count']} files, {human_bytes(figures['bytes'])}"

    rows = [
        ("storage", s["storage"]),
        ("projects", f"{s['projects']['upstream']} upstream, {s['projects']['private']} private"),
        ("pages", str(s["pages"])),
        (
            "upstream",
            f"{up['count']} files ({up['metadata']} of them .metadata), {human_bytes(up['bytes'])}",
        ),
        ("private", counted(private)),
        ("quarantine", counted(s["quarantine"])),
        ("temporary", counted(s["temporary"])),
        ("total", human_bytes(s["bytes"])),
    ]
    for name, value in rows:
        print(f"{name:<11} {value}", file=out)
    return 0



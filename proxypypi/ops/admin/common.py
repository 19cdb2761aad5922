"""
What every ``proxypypi-admin`` command shares: its error, and the walk of a
storage directory that never follows a link out of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator


class AdminError(Exception):
    """
    The command cannot run; the message says why.
    """



def entries(directory: str) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def walk(directory: str) -> Iterator[os.DirEntry[str]]:
    for entry in entries(directory):
        if entry.is_dir(follow_symlinks=False):
            yield from walk(entry.path)
        elif entry.is_file(follow_symlinks=False):
            yield entry

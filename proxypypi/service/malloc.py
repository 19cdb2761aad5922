# -*- test-case-name: tests.test_malloc -*-
"""
The C allocator (glibc's), tuned for a long-running service that reads
large pages in worker threads.

Two of glibc's defaults cost a page cache memory for nothing (measured with
``python -m bench pages``: the peak RSS of the 40-page run went from 143 to
121 MiB):

- each thread gets an arena of its own (up to eight per core), which keeps
  what the thread freed for its own later use: with page, disk and reactor
  threads, that is several pages' worth held at once;
- the size above which a block is mapped on its own, and so given back to
  the system when freed, grows to the largest block freed so far (up to
  32 MiB): after the first large page, its megabyte-sized buffers come from
  the arenas and stay there.

Both are what ``MALLOC_ARENA_MAX`` and ``MALLOC_MMAP_THRESHOLD_`` set from
the environment, and an operator's setting there wins.  Elsewhere than on
glibc nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping

#: ``mallopt`` parameters, from glibc's ``malloc.h``.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

#: Arenas for all threads: the reactor's and one for the workers.
ARENAS = 2
#: Blocks from this size up are mapped on their own.
MMAP_THRESHOLD = 1024 * 1024

Mallopt = Callable[[int, int], int]


def glibc_mallopt() -> Mallopt | None:
    """
    glibc's ``mallopt``, or ``None`` on another C library.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc's alone)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def tune_malloc(
    mallopt: Mallopt | None = None, environ: Mapping[str, str] = os.environ
) -> list[str]:
    """
    Set the allocator's parameters, before the worker threads start, unless
    the environment sets them.

    :returns: the settings made, for the start-up log.
    """
    if mallopt is None:
        mallopt = glibc_mallopt()
        if mallopt is None:
            return []
    made = []
    for variable, parameter, value in (
        ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENAS),
        ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ):
        if variable not in environ and mallopt(parameter, value) == 1:
            made.append(f"{variable}={value}")
    return made

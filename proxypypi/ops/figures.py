# -*- test-case-name: tests.test_metrics,tests.test_status -*-
"""
What the storage holds, for ``/metrics`` and the status page: read from
running totals and one ``statvfs``, cheap at any number of stored files.
"""

from __future__ import annotations

import shutil

import attrs

from proxypypi.cache.usage import IUsageTracker
from proxypypi.private.store import PrivateStore


@attrs.frozen
class StorageFigures:
    """
    :ivar files: upstream files in ``DATA/files`` (``None``: not known yet).
    :ivar bytes: their size.
    :ivar private_files: uploaded files.
    :ivar private_bytes: their size.
    :ivar limit: ``--max-cache-size``, if set.
    :ivar evicted_files: files evicted since start.
    :ivar evicted_bytes: bytes evicted since start.
    :ivar disk_total: size of the file system holding the storage.
    :ivar disk_free: bytes free on it (for this user).
    """

    files: int | None
    bytes: int | None
    private_files: int
    private_bytes: int
    limit: int | None
    evicted_files: int
    evicted_bytes: int
    disk_total: int | None
    disk_free: int | None


def storage_figures(
    usage: IUsageTracker, private: PrivateStore, root: str, limit: int | None
) -> StorageFigures:
    """
    The figures of the storage at ``root``, whose upstream files ``usage``
    tracks, with the uploads of ``private``.
    """
    cache = usage.figures()
    private_files = private_bytes = 0
    for name in private.names():
        project = private.project(name)
        if project is not None:
            private_files += len(project.files)
            private_bytes += sum(f.size for f in project.files)
    disk_total: int | None = None
    disk_free: int | None = None
    try:
        disk = shutil.disk_usage(root)
        disk_total, disk_free = disk.total, disk.free
    except OSError:
        pass
    return StorageFigures(
        cache.files,
        cache.bytes,
        private_files,
        private_bytes,
        limit,
        cache.evicted_files,
        cache.evicted_bytes,
        disk_total,
        disk_free,
    )

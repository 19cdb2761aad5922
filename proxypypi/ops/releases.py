# -*- test-case-name: tests.test_browse -*-
"""
One project's releases as its browse page shows them
(`proxypypi.web.browseproject`): which files of each release are stored
here, their sizes, hashes and upload times.

Built from three sources: the project's stored page (what the upstream
listed: hashes, sizes, upload times), the files in ``DATA/files`` (what is
stored; files the page no longer lists included), and its uploads.  A page
may list tens of thousands of files, so the shaping runs in a thread and
returns only the releases of the page shown: the parsed page is dropped
there, not carried to the reactor thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import attrs
from packaging.utils import NormalizedName
from packaging.version import InvalidVersion, Version

from proxypypi.cache.page import CachedPage
from proxypypi.cache.storage import project_files
from proxypypi.names import METADATA_SUFFIX, version_of
from proxypypi.private.model import PrivateProject
from proxypypi.simple.model import Yanked


@attrs.frozen
class FileView:
    """
    One file of a release.

    :ivar stored: its bytes are here (in ``DATA/files`` or uploaded).
    :ivar size: the size on disk when stored, else the upstream's figure.
    :ivar upload_time: as the upstream (or our upload record) gave it:
        any string.
    :ivar listed: the stored page lists it (a stored file may outlive its
        entry, with ``--forget-removed``).
    """

    filename: str
    stored: bool
    size: int | None = None
    sha256: str | None = None
    upload_time: str | None = None
    yanked: Yanked = False
    removed_upstream: bool = False
    private: bool = False
    listed: bool = True


@attrs.frozen
class ReleaseView:
    """
    One release: its files shown, and how many others it has that are
    not stored and not shown.
    """

    version: str | None
    files: tuple[FileView, ...]
    hidden: int = 0


@attrs.frozen
class ProjectView:
    """
    One page of a project's browse page.

    :ivar source: the upstream its stored page came from (``None``: no
        stored page), ``fetched_at`` when.
    :ivar stored_files: distribution files stored, all releases counted.
    :ivar matching: the releases of this view (those with a stored file,
        or all), on every page.
    :ivar listed: every release known.
    """

    name: NormalizedName
    source: str | None
    fetched_at: float | None
    stored_files: int
    stored_bytes: int
    releases: tuple[ReleaseView, ...]
    matching: int
    listed: int

    @property
    def empty(self) -> bool:
        """
        Nothing of the project is here: no file and no stored page.
        """
        return self.source is None and self.listed == 0


def _all_files(
    cached: CachedPage | None, on_disk: dict[str, int], private: PrivateProject | None
) -> list[FileView]:
    """
    Uploads first, then the page's files, then stored files it does not
    list; each file name once.
    """
    seen: dict[str, FileView] = {}
    for p in private.files if private is not None else ():
        seen[p.filename] = FileView(
            p.filename, True, p.size, p.sha256, p.upload_time, p.yanked, private=True
        )
    for f in cached.page.files if cached is not None else ():
        if f.filename not in seen:
            stored = f.filename in on_disk
            seen[f.filename] = FileView(
                f.filename,
                stored,
                on_disk[f.filename] if stored else f.size,
                f.sha256,
                f.upload_time,
                f.yanked,
                f.removed_upstream,
            )
    for filename, size in on_disk.items():
        if filename not in seen:
            seen[filename] = FileView(filename, True, size, listed=False)
    return list(seen.values())


def _newest_first(versions: Iterable[str | None]) -> list[str | None]:
    """
    Versions newest first; what no version can be made of last.
    """
    parsed: list[tuple[Version, str]] = []
    other: list[str | None] = []
    for v in versions:
        try:
            parsed.append((Version(v), v)) if v is not None else other.append(v)
        except InvalidVersion:
            other.append(v)
    parsed.sort(key=lambda t: t[0], reverse=True)
    return [v for _, v in parsed] + other


def view_project(
    files_dir: str,
    name: NormalizedName,
    cached: CachedPage | None,
    private: PrivateProject | None,
    everything: bool,
    offset: int,
    limit: int,
) -> ProjectView:
    """
    The releases of ``name`` from ``offset`` (at most ``limit``): with
    ``everything``, every release known, each with all its files;
    otherwise only the releases with a stored file, each with its stored
    files (and the number of the others).  Newest release first.
    Blocking: reads the project's directory of files.
    """
    on_disk = {
        filename: st.st_size
        for filename, st in project_files(os.path.join(files_dir, name))
        if not filename.endswith(METADATA_SUFFIX)
    }
    by_version: dict[str | None, list[FileView]] = {}
    for f in _all_files(cached, on_disk, private):
        by_version.setdefault(version_of(f.filename, name), []).append(f)
    releases = []
    for version in _newest_first(by_version):
        files = by_version[version]
        shown = files if everything else [f for f in files if f.stored]
        if shown:
            releases.append(ReleaseView(version, tuple(shown), len(files) - len(shown)))
    stored = [f for files in by_version.values() for f in files if f.stored]
    return ProjectView(
        name,
        cached.source if cached is not None else None,
        cached.fetched_at if cached is not None else None,
        len(stored),
        sum(f.size or 0 for f in stored),
        tuple(releases[offset : offset + limit]),
        len(releases),
        len(by_version),
    )

# -*- test-case-name: tests.test_browse -*-
"""
What is stored here, project by project, one page of a listing at a time,
for the browse pages (`proxypypi.web.browse`).

A store may hold a hundred thousand files of thousands of projects, so one
request never walks all of it: only the project names are listed (one
read of the ``DATA/files`` directory and one of ``DATA/pages``, no
``stat`` of any file), filtered and sorted; then only the projects on the
page asked for are measured (their files' ``stat``, their stored page's
bookkeeping read from its last bytes).  Everything here blocks, and runs in
the disk threads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import attrs
from packaging.utils import NormalizedName

from proxypypi.cache.page import stored_source
from proxypypi.cache.storage import project_files, stored_projects
from proxypypi.names import METADATA_SUFFIX, normalize

#: Longest search kept, in characters (no project name is longer).
MAX_QUERY = 100

#: What project names treat as one separator (PEP 503), and spaces, which
#: people type.
_SEPARATORS = re.compile(r"[-_.\s]+")

#: The suffix of stored pages in ``DATA/pages``.
_PAGE_SUFFIX = ".json"


def search_key(text: str) -> str:
    """
    A search as a piece of a normalized name: lower case, each run of
    separators one dash (``Zope.Interface`` finds ``zope-interface``).
    """
    return _SEPARATORS.sub("-", text.strip().lower())[:MAX_QUERY]


@attrs.frozen
class StoredProject:
    """
    One project as the listing shows it: what ``DATA/files`` holds of it
    and where its stored page came from.

    :ivar files: distribution files stored (not their ``.metadata``).
    :ivar bytes: their size.
    :ivar newest: when the newest of those files was stored.
    :ivar filenames: the distribution files, for the last-use lookups made
        on the reactor thread.
    :ivar source: the upstream its stored page came from; ``None``
        without a stored page.
    """

    name: NormalizedName
    files: int = 0
    bytes: int = 0
    newest: float | None = None
    filenames: tuple[str, ...] = ()
    source: str | None = None


@attrs.frozen
class Listing:
    """
    One page of the listing.

    :ivar matching: the projects that match the search, on every page.
    """

    matching: int
    projects: tuple[StoredProject, ...]


def project_names(files_dir: str, pages_dir: str) -> set[NormalizedName]:
    """
    The projects with a directory of files or a stored page.  Names only:
    each directory is read once, no file in it is opened or ``stat``-ed.
    """
    names = {NormalizedName(entry.name) for entry in stored_projects(files_dir)}
    try:
        pages = list(os.scandir(pages_dir))
    except FileNotFoundError:
        pages = []
    for entry in pages:
        stem = entry.name.removesuffix(_PAGE_SUFFIX)
        if stem != entry.name and normalize(stem) == stem and entry.is_file():
            names.add(NormalizedName(stem))
    return names


def ranked(names: Iterable[NormalizedName], key: str) -> list[NormalizedName]:
    """
    The names that contain ``key`` (every name for an empty key): the one
    equal to it first, then those starting with it, then the others, each
    group in alphabetical order.
    """
    return sorted(
        (n for n in names if key in n),
        key=lambda n: (n != key, not n.startswith(key), n),
    )


def measure(files_dir: str, pages_dir: str, name: NormalizedName) -> StoredProject:
    """
    What is stored of ``name``: its files (``stat`` only) and where its
    stored page came from (its last bytes only).
    """
    files = total = 0
    newest: float | None = None
    filenames = []
    for filename, st in project_files(os.path.join(files_dir, name)):
        if filename.endswith(METADATA_SUFFIX):
            continue
        files += 1
        total += st.st_size
        filenames.append(filename)
        newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
    source = stored_source(os.path.join(pages_dir, name + _PAGE_SUFFIX))
    return StoredProject(name, files, total, newest, tuple(filenames), source)


def list_stored(
    files_dir: str,
    pages_dir: str,
    private: Iterable[NormalizedName],
    key: str,
    offset: int,
    limit: int,
) -> Listing:
    """
    The page of at most ``limit`` projects from ``offset`` among those
    stored (files or page) or ``private`` whose name contains ``key``.
    """
    names = ranked(project_names(files_dir, pages_dir).union(private), key)
    shown = names[offset : offset + limit]
    return Listing(len(names), tuple(measure(files_dir, pages_dir, name) for name in shown))

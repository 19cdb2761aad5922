# -*- test-case-name: tests.test_simple_parse -*-
"""
The index data, independent of how it was serialized (HTML or JSON).

A `ProjectPage` is what one upstream said about one project, plus what we
remember of it; a `DistFile` is one file on that page.  Both are immutable
values: a refreshed page is a new object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs
from packaging.utils import NormalizedName

from proxypypi.names import normal_version, version_of

#: ``False`` (not yanked), ``True`` (yanked, no reason) or the reason.
Yanked = bool | str

#: ``False`` (none), ``True`` (offered, hash unknown) or ``{"sha256": hex}``.
CoreMetadata = bool | Mapping[str, str]


def merge_versions(listed: Iterable[str], found: Iterable[str]) -> tuple[str, ...]:
    """
    A PEP 700 ``versions`` list: the upstream's as it gave it, then each
    version ``found`` (in file names) that equals none of those as a
    version.  Compared as versions, not strings: the upstream lists
    ``0.6c1`` where a file name's version reads ``0.6rc1``, and listing
    both would show one release twice.  Strings that are no version
    compare as they are.
    """
    merged = dict.fromkeys(listed)
    seen = {normal_version(v) or v for v in merged}
    for v in found:
        key = normal_version(v) or v
        if key not in seen:
            seen.add(key)
            merged[v] = None
    return tuple(merged)


@attrs.frozen
class DistFile:
    """
    One distribution file as listed on a project page.

    :ivar url: the absolute URL the file was listed with upstream (without
        the hash fragment); the only URL this file is ever fetched from.
        Empty for files that have no upstream (private uploads).
    :ivar hashes: hash name to lowercase hex digest, as the upstream gave it.
    :ivar removed_upstream: the upstream no longer lists this file but we
        still keep it (see ``--forget-removed``).
    """

    filename: str
    url: str
    hashes: Mapping[str, str] = attrs.field(factory=dict)
    requires_python: str | None = None
    yanked: Yanked = False
    core_metadata: CoreMetadata = False
    gpg_sig: bool | None = None
    size: int | None = None
    upload_time: str | None = None
    provenance: str | None = None
    removed_upstream: bool = False

    @property
    def sha256(self) -> str | None:
        """
        The sha256 hex digest the index promises, if it gave one.
        """
        return self.hashes.get("sha256")

    @property
    def metadata_sha256(self) -> str | None:
        """
        The sha256 of the PEP 658 ``.metadata`` file, if the index gave one.
        """
        if isinstance(self.core_metadata, Mapping):
            return self.core_metadata.get("sha256")
        return None


@attrs.frozen
class ProjectStatus:
    """
    PEP 792 project status (``active``, ``archived``, ``quarantined``,
    ``deprecated``) and its optional reason.
    """

    status: str
    reason: str | None = None


@attrs.frozen
class ProjectPage:
    """
    Everything an index says about one project.

    :ivar versions: the versions the upstream listed (PEP 700), which may
        include versions without files; see `all_versions`.
    :ivar last_serial: the upstream's change serial (``X-PyPI-Last-Serial``
        or ``_last-serial``), used to refuse pages older than the one held.
    """

    name: NormalizedName
    files: tuple[DistFile, ...] = ()
    versions: tuple[str, ...] = ()
    last_serial: int | None = None
    status: ProjectStatus | None = None

    def file(self, filename: str) -> DistFile | None:
        """
        The file listed under exactly ``filename``, if any.
        """
        for f in self.files:
            if f.filename == filename:
                return f
        return None

    def all_versions(self) -> tuple[str, ...]:
        """
        The PEP 700 ``versions`` list: what upstream listed, plus the
        version of a file it does not list (one kept after the upstream
        removed its release), compared as versions (`merge_versions`).
        """
        found = (version_of(f.filename, self.name) for f in self.files)
        return merge_versions(self.versions, (v for v in found if v is not None))

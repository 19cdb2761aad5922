# -*- test-case-name: tests.test_simple_parse -*-
"""
The index data, independent of how it was serialized (HTML or JSON).

A `ProjectPage` is what one upstream said about one project, plus what we
remember of it; a `DistFile` is one file on that page.  Both are immutable
values: a refreshed page is a new object.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from packaging.utils import NormalizedName

from proxypypi.names import version_of

#: ``False`` (not yanked), ``True`` (yanked, no reason) or the reason.
Yanked = bool | str

#: ``False`` (none), ``True`` (offered, hash unknown) or ``{"sha256": hex}``.
CoreMetadata = bool | Mapping[str, str]


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
        The PEP 700 ``versions`` list: what upstream listed plus the version
        of every file, without duplicates, in first-seen order.
        """
        seen: dict[str, None] = dict.fromkeys(self.versions)
        for f in self.files:
            v = version_of(f.filename, self.name)
            if v is not None:
                seen.setdefault(v, None)
        return tuple(seen)

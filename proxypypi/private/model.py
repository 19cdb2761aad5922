# -*- test-case-name: tests.test_upload -*-
"""
The records of private projects: an upload waiting to be stored, the files
as their project's page records them, and the refusals.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
from packaging.utils import NormalizedName
from packaging.version import Version

from proxypypi.cache.forms import MemoryForms
from proxypypi.names import InvalidDistFilename, parse_dist_filename
from proxypypi.simple.model import DistFile, ProjectPage, Yanked

#: The page file inside a project's directory; a leading dot keeps it out
#: of reach of file URLs (``names.is_safe_filename`` refuses such names).
PAGE_FILE = ".page.json"



class UploadRejected(Exception):
    """
    An upload (or a change to a private file) that cannot be accepted.

    :ivar code: the HTTP status to answer.
    :ivar message: one line saying why, for the client's user.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DigestMismatch(UploadRejected):
    """
    A digest the client sent does not match the bytes received.

    :ivar algorithm: the digest's algorithm (``sha256``, ``blake2_256``,
        ``md5``).
    :ivar actual: the digest of the bytes received.
    """

    def __init__(self, algorithm: str, actual: str) -> None:
        super().__init__(
            400,
            f"the {algorithm} digest does not match the file received ({actual}); "
            "the upload was damaged or the digest is wrong",
        )
        self.algorithm = algorithm
        self.actual = actual


def upload_time(seconds: float) -> str:
    """
    A PEP 700 ``upload-time``: ISO 8601 in UTC with a ``Z``.
    """
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")



@attrs.frozen
class Upload:
    """
    A validated upload whose file still waits in its spool file.

    :ivar spool_path: where the file waits (on the storage's file system,
        so storing it is a rename).
    :ivar digests: algorithm (``sha256``, ``blake2_256``, ``md5``) to the
        lower-case hex digest the client sent.
    """

    project: NormalizedName
    filename: str
    kind: str
    version: Version
    spool_path: str
    digests: Mapping[str, str]
    requires_python: str | None
    user: str



@attrs.frozen
class PrivateFile:
    """
    One uploaded file as its project's page records it.
    """

    filename: str
    sha256: str
    size: int
    upload_time: str
    requires_python: str | None = None
    yanked: Yanked = False
    metadata_sha256: str | None = None
    uploaded_by: str | None = None

    def dist_file(self) -> DistFile:
        """
        The file as the index model lists it; with no upstream URL, so it
        can never be fetched from anywhere.
        """
        return DistFile(
            filename=self.filename,
            url="",
            hashes={"sha256": self.sha256},
            requires_python=self.requires_python,
            yanked=self.yanked,
            core_metadata={"sha256": self.metadata_sha256} if self.metadata_sha256 else False,
            size=self.size,
            upload_time=self.upload_time,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "upload-time": self.upload_time,
            "requires-python": self.requires_python,
            "yanked": self.yanked,
            "metadata-sha256": self.metadata_sha256,
            "uploaded-by": self.uploaded_by,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PrivateFile:
        yanked = data.get("yanked", False)
        return cls(
            filename=str(data["filename"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            upload_time=str(data["upload-time"]),
            requires_python=data.get("requires-python"),
            yanked=yanked if isinstance(yanked, bool | str) else False,
            metadata_sha256=data.get("metadata-sha256"),
            uploaded_by=data.get("uploaded-by"),
        )


def first_uploaders(files: Iterable[PrivateFile]) -> tuple[str, ...]:
    """
    The users who uploaded ``files``, each once, in order: the owners of a
    project recorded before owners were (they are the ones who created it).
    """
    return tuple(dict.fromkeys(f.uploaded_by for f in files if f.uploaded_by))


@attrs.frozen
class PrivateProject:
    """
    A private project's files, in upload order, its page, and that page's
    forms, rendered when first asked for and kept (a private page is small).

    :ivar owners: the users who may change it (besides the admins): who
        created it, and whom its owners added.
    """

    name: NormalizedName
    files: tuple[PrivateFile, ...]
    page: ProjectPage
    forms: MemoryForms
    owners: tuple[str, ...] = ()

    @classmethod
    def build(
        cls, name: NormalizedName, files: Iterable[PrivateFile], owners: Iterable[str] = ()
    ) -> PrivateProject:
        files = tuple(files)
        page = ProjectPage(name, tuple(f.dist_file() for f in files))
        return cls(name, files, page, MemoryForms(page), tuple(owners))

    def check_owner(self, user: str, admins: frozenset[str]) -> None:
        """
        :raises UploadRejected: 403 unless ``user`` owns this project or is
            an admin.
        """
        if user in admins or user in self.owners:
            return
        raise UploadRejected(
            403,
            f"{self.name} belongs to {', '.join(self.owners) or 'the admins'}; "
            "ask an owner or an admin (--admin) to add you to its owners",
        )

    def file(self, filename: str) -> PrivateFile | None:
        for f in self.files:
            if f.filename == filename:
                return f
        return None

    def to_bytes(self) -> bytes:
        doc = {
            "name": self.name,
            "owners": list(self.owners),
            "files": [f.to_json() for f in self.files],
        }
        return json.dumps(doc, indent=1).encode("utf-8")


@attrs.frozen
class StoredFile:
    """
    A private file (or its ``.metadata``) to serve.
    """

    path: str
    sha256: str
    metadata: bool


@attrs.frozen
class AddResult:
    """
    :ivar existing: the same file was uploaded before; nothing changed.
    """

    file: PrivateFile
    existing: bool = False




def is_sdist_of(filename: str, version: Version) -> bool:
    """
    Whether ``filename`` is an sdist of ``version`` (a release has one).
    """
    try:
        dist = parse_dist_filename(filename)
    except InvalidDistFilename:
        return False
    return dist.kind == "sdist" and dist.version == version

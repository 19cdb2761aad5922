# -*- test-case-name: tests.test_upload -*-
"""
Private projects: uploaded files, their pages, and the names they take
away from every upstream.

::

    DATA/private/<project>/<filename>            an uploaded file
    DATA/private/<project>/<filename>.metadata   a wheel's METADATA, byte-exact (PEP 658)
    DATA/private/<project>/.page.json            the project's files and their facts

A project with a page here is *private*: its index page lists only these
files and no upstream is asked about it (dependency confusion: whoever
publishes the same name upstream gains nothing), unless the operator named
it with ``--merge-upstream``.  The name stays private when its last file is
deleted, until it is released explicitly.

Every change is made durable before it is acknowledged: files are fsynced
and renamed into place, and the page is written last (temp file, fsync,
rename), so a crash leaves either the old page or the new one, never one
that lists a missing file.  Nothing here is ever evicted: this tree is
outside ``DATA/files/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import zipfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from typing import Any

import attrs
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName
from packaging.version import InvalidVersion, Version
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from proxypypi.cache.pages import CachedPage, PageCache
from proxypypi.cache.storage import (
    PARTIAL_SUFFIX,
    Runner,
    fsync_dir,
    unlink_all,
    write_atomically,
    write_synced,
)
from proxypypi.names import METADATA_SUFFIX, InvalidDistFilename, normalize, parse_dist_filename
from proxypypi.simple.model import DistFile, ProjectPage, Yanked
from proxypypi.upstream.pool import ProjectNotFound
from proxypypi.web.body import SpooledFile

#: The page file inside a project's directory; a leading dot keeps it out
#: of reach of file URLs (``names.is_safe_filename`` refuses such names).
PAGE_FILE = ".page.json"

#: The ``source`` of private pages.
PRIVATE_SOURCE = "private"

#: The largest wheel METADATA extracted.
MAX_METADATA = 16 * 1024 * 1024

#: The digests an upload may carry: form field, our name, hex length.
DIGEST_FIELDS = (
    ("sha256_digest", "sha256", 64),
    ("blake2_256_digest", "blake2_256", 64),
    ("md5_digest", "md5", 32),
)

#: Fields every upload must have, besides the ``content`` file.
REQUIRED_FIELDS = (":action", "protocol_version", "name", "version", "filetype")

_FILETYPES = {"bdist_wheel": "wheel", "sdist": "sdist"}

_READ_CHUNK = 1024 * 1024


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


def upload_time(seconds: float) -> str:
    """
    A PEP 700 ``upload-time``: ISO 8601 in UTC with a ``Z``.
    """
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Validation of the form: cheap checks, before anything is hashed or stored.


@attrs.frozen
class Upload:
    """
    A validated upload whose file still waits in its spool file.

    :ivar digests: our digest name to the lower-case hex the client sent.
    """

    project: NormalizedName
    filename: str
    kind: str
    version: Version
    spool: SpooledFile
    digests: Mapping[str, str]
    requires_python: str | None
    user: str


def _single(fields: Mapping[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    value = values[0].strip()
    return value or None


def _check_filename(filename: str) -> None:
    if "/" in filename or "\\" in filename or ".." in filename:
        raise UploadRejected(
            400, f"file name {filename!r} must be a bare file name: no path separators or '..'"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in filename):
        raise UploadRejected(400, "file name contains control characters")


def validate_form(
    fields: Mapping[str, list[str]], content: SpooledFile | None, user: str
) -> Upload:
    """
    Check an upload form as twine and ``uv publish`` send it.

    :raises UploadRejected: naming the first problem found.
    """
    action = _single(fields, ":action")
    if action is not None and action != "file_upload":
        raise UploadRejected(
            400, f"unsupported :action {action!r}; this index only accepts file_upload"
        )
    missing = [name for name in REQUIRED_FIELDS if _single(fields, name) is None]
    if content is None:
        missing.append("content")
    if missing:
        raise UploadRejected(400, f"missing form field(s): {', '.join(missing)}")
    assert content is not None
    if _single(fields, "protocol_version") != "1":
        raise UploadRejected(400, "unsupported protocol_version; this index speaks version 1")
    filename = content.filename
    _check_filename(filename)
    try:
        dist = parse_dist_filename(filename)
    except InvalidDistFilename:
        raise UploadRejected(
            400, f"{filename!r} is not a wheel (.whl) or sdist (.tar.gz) file name"
        ) from None
    if dist.kind == "sdist" and not filename.endswith(".tar.gz"):
        raise UploadRejected(400, f"{filename!r}: sdists must be .tar.gz files (PEP 625)")
    filetype = _single(fields, "filetype") or ""
    if _FILETYPES.get(filetype) != dist.kind:
        raise UploadRejected(
            400, f"filetype {filetype!r} does not match {filename!r} (bdist_wheel or sdist)"
        )
    name = _single(fields, "name") or ""
    project = normalize(name)
    if project is None:
        raise UploadRejected(400, f"{name!r} is not a valid project name")
    if dist.project != project:
        raise UploadRejected(
            400, f"file name {filename!r} is for project {dist.project}, but name says {name!r}"
        )
    raw_version = _single(fields, "version") or ""
    try:
        version = Version(raw_version)
    except InvalidVersion:
        raise UploadRejected(400, f"{raw_version!r} is not a valid version") from None
    if version != dist.version:
        raise UploadRejected(
            400, f"file name {filename!r} is version {dist.version}, but version says {raw_version}"
        )
    digests: dict[str, str] = {}
    for field, ours, length in DIGEST_FIELDS:
        value = _single(fields, field)
        if value is None:
            continue
        value = value.lower()
        if len(value) != length or any(c not in "0123456789abcdef" for c in value):
            raise UploadRejected(400, f"{field} is not a {length}-digit hex digest")
        digests[ours] = value
    if not digests:
        raise UploadRejected(400, "send sha256_digest (or blake2_256_digest) with the file")
    if content.size == 0:
        raise UploadRejected(400, f"{filename!r} is empty")
    requires_python = _single(fields, "requires_python")
    if requires_python is not None:
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier:
            raise UploadRejected(
                400, f"requires_python {requires_python!r} is not a version specifier"
            ) from None
    return Upload(project, filename, dist.kind, version, content, digests, requires_python, user)


# Inspection of the file: blocking, in a thread.


@attrs.frozen
class Inspected:
    """
    What reading the whole uploaded file established.

    :ivar metadata_path: a spool file holding the wheel's METADATA.
    """

    sha256: str
    size: int
    requires_python: str | None
    metadata_path: str | None = None
    metadata_sha256: str | None = None


def wheel_metadata(path: str, filename: str) -> bytes:
    """
    The exact bytes of a wheel's ``<name>-<version>.dist-info/METADATA``.

    :raises UploadRejected: when the file is not a wheel with one.
    """
    stem = filename[: -len(".whl")].split("-")
    expected = f"{stem[0]}-{stem[1]}.dist-info/METADATA"
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if expected not in names:
                found = [
                    n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
                ]
                if len(found) != 1:
                    raise UploadRejected(400, f"{filename!r} is not a valid wheel: no {expected}")
                expected = found[0]
            info = zf.getinfo(expected)
            if info.file_size > MAX_METADATA:
                raise UploadRejected(400, f"{filename!r}: METADATA is too large")
            with zf.open(info) as member:
                data = member.read(MAX_METADATA + 1)
    except UploadRejected:
        raise
    except Exception as e:
        raise UploadRejected(400, f"{filename!r} is not a valid wheel ({e})") from None
    if len(data) > MAX_METADATA:
        raise UploadRejected(400, f"{filename!r}: METADATA is too large")
    return data


def _write_spool(spool_dir: str, data: bytes) -> str:
    path = os.path.join(spool_dir, f"upload-{secrets.token_hex(12)}.metadata{PARTIAL_SUFFIX}")
    write_synced(path, data, exclusive=True)
    return path


def inspect_upload(upload: Upload, spool_dir: str) -> Inspected:
    """
    Hash the spooled file, compare every digest the client sent, and take
    a wheel's METADATA out.  Also fsyncs the spool file, so that renaming
    it into place later makes it durable.  Blocking: runs in a thread.

    :raises UploadRejected: when a digest does not match or a wheel is not
        one.
    """
    hashers: dict[str, Any] = {"sha256": hashlib.sha256()}
    if "blake2_256" in upload.digests:
        hashers["blake2_256"] = hashlib.blake2b(digest_size=32)
    if "md5" in upload.digests:
        hashers["md5"] = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(upload.spool.path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            size += len(chunk)
            for h in hashers.values():
                h.update(chunk)
        os.fsync(f.fileno())
    for field, ours, _length in DIGEST_FIELDS:
        sent = upload.digests.get(ours)
        if sent is not None and hashers[ours].hexdigest() != sent:
            raise UploadRejected(
                400,
                f"{field} does not match the file received ({hashers[ours].hexdigest()}); "
                "the upload was damaged or the digest is wrong",
            )
    requires_python = upload.requires_python
    if upload.kind != "wheel":
        return Inspected(hashers["sha256"].hexdigest(), size, requires_python)
    metadata = wheel_metadata(upload.spool.path, upload.filename)
    if requires_python is None:
        requires_python = BytesHeaderParser().parsebytes(metadata).get("Requires-Python")
        requires_python = requires_python.strip() if requires_python else None
    return Inspected(
        hashers["sha256"].hexdigest(),
        size,
        requires_python or None,
        _write_spool(spool_dir, metadata),
        hashlib.sha256(metadata).hexdigest(),
    )


# What is stored


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


@attrs.frozen
class PrivateProject:
    """
    A private project's files, in upload order, and its page ready to
    render (renderings are cached inside the `CachedPage`).
    """

    name: NormalizedName
    files: tuple[PrivateFile, ...]
    cached: CachedPage

    @classmethod
    def build(
        cls, name: NormalizedName, files: Iterable[PrivateFile], now: float
    ) -> PrivateProject:
        files = tuple(files)
        page = ProjectPage(name, tuple(f.dist_file() for f in files))
        return cls(name, files, CachedPage(page, PRIVATE_SOURCE, now))

    def file(self, filename: str) -> PrivateFile | None:
        for f in self.files:
            if f.filename == filename:
                return f
        return None

    def to_bytes(self) -> bytes:
        doc = {"name": self.name, "files": [f.to_json() for f in self.files]}
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


@attrs.define(eq=False)
class PrivateStore:
    """
    The private projects of one service.

    :ivar root: ``DATA/private``.
    :ivar spool_dir: ``DATA/tmp``, where uploads wait.
    :ivar run: runs blocking work (hashing, fsync) off the reactor thread.
    :ivar merge_upstream: private projects whose upstream files stay
        listed after the private ones.
    :ivar allow_overwrite: let a different file replace one of the same
        name.
    """

    root: str
    spool_dir: str
    run: Runner
    clock: IReactorTime
    merge_upstream: frozenset[NormalizedName] = frozenset()
    allow_overwrite: bool = False
    log = Logger()
    _projects: dict[NormalizedName, PrivateProject] = attrs.field(factory=dict)
    _lock: DeferredLock = attrs.field(factory=DeferredLock)
    _merged: dict[NormalizedName, tuple[PrivateProject, CachedPage, CachedPage]] = attrs.field(
        factory=dict
    )

    @classmethod
    def open(
        cls,
        root: str,
        spool_dir: str,
        run: Runner,
        clock: IReactorTime,
        *,
        merge_upstream: Iterable[str] = (),
        allow_overwrite: bool = False,
    ) -> PrivateStore:
        """
        Create the directory if needed and load every private project
        (blocking; at start-up).  Damaged pages are skipped with an error
        in the log: their names then fall back to the upstreams, which the
        operator must fix.
        """
        merged = frozenset(n for n in (normalize(m) for m in merge_upstream) if n is not None)
        store = cls(root, spool_dir, run, clock, merged, allow_overwrite)
        os.makedirs(root, exist_ok=True)
        now = clock.seconds()
        for entry in sorted(os.listdir(root)):
            page = os.path.join(root, entry, PAGE_FILE)
            name = normalize(entry)
            if name != entry or not os.path.isfile(page):
                continue
            try:
                with open(page, "rb") as f:
                    doc = json.load(f)
                files = [PrivateFile.from_json(item) for item in doc["files"]]
            except (OSError, ValueError, KeyError, TypeError) as e:
                store.log.error(
                    "cannot read the private page {path} ({error}); {project} is not "
                    "private until it is fixed",
                    path=page,
                    error=e,
                    project=name,
                )
                continue
            store._projects[name] = PrivateProject.build(name, files, now)
        if store._projects:
            store.log.info("{count} private projects", count=len(store._projects))
        return store

    # Reading

    def is_private(self, name: str) -> bool:
        return name in self._projects

    def project(self, name: str) -> PrivateProject | None:
        return self._projects.get(NormalizedName(name))

    def names(self) -> list[NormalizedName]:
        return sorted(self._projects)

    def claims(self, project: str, filename: str) -> bool:
        """
        Whether a file URL of ``project`` is ours to answer: every file of a
        private project, or, for one merged with its upstream, the files
        uploaded here.
        """
        private = self.project(project)
        if private is None:
            return False
        return project not in self.merge_upstream or private.file(filename) is not None

    def stored_file(self, project: str, filename: str) -> StoredFile | None:
        """
        The uploaded file (or ``<file>.metadata``) at ``filename``, if any.
        """
        private = self.project(project)
        if private is None:
            return None
        metadata = filename.endswith(METADATA_SUFFIX)
        dist = filename[: -len(METADATA_SUFFIX)] if metadata else filename
        f = private.file(dist)
        if f is None:
            return None
        if metadata:
            if f.metadata_sha256 is None:
                return None
            return StoredFile(self._path(project, filename), f.metadata_sha256, True)
        return StoredFile(self._path(project, filename), f.sha256, False)

    def ready(self, name: NormalizedName, pages: PageCache) -> CachedPage | None:
        """
        The page to serve for ``name`` if it can be had without waiting
        (`PageCache.ready` for projects that are not private).
        """
        private = self._projects.get(name)
        if private is None:
            return pages.ready(name)
        if name not in self.merge_upstream:
            return private.cached
        upstream = pages.ready(name)
        return None if upstream is None else self._merge(private, upstream)

    async def page_for(self, name: NormalizedName, pages: PageCache) -> CachedPage:
        """
        The page to serve for ``name``: the private page of a private
        project (no upstream is asked), the private files followed by the
        upstream's for a merged one, the upstream page for any other.

        :raises ProjectNotFound: and the rest of what `PageCache.get`
            raises, for projects that are not private.
        """
        private = self._projects.get(name)
        if private is None:
            return await pages.get(name)
        if name not in self.merge_upstream:
            return private.cached
        try:
            upstream = await pages.get(name)
        except ProjectNotFound:
            return private.cached
        except Exception as e:
            self.log.warn(
                "serving only the private files of {project}: {error}", project=name, error=e
            )
            return private.cached
        return self._merge(private, upstream)

    def _merge(self, private: PrivateProject, upstream: CachedPage) -> CachedPage:
        remembered = self._merged.get(private.name)
        if remembered is not None and remembered[0] is private and remembered[1] is upstream:
            return remembered[2]
        ours = {f.filename for f in private.files}
        theirs: tuple[DistFile, ...] = ()
        status = upstream.page.status
        if status is None or status.status != "quarantined":
            theirs = tuple(f for f in upstream.page.files if f.filename not in ours)
        page = ProjectPage(private.name, private.cached.page.files + theirs)
        merged = CachedPage(
            page, upstream.source, upstream.fetched_at, upstream.etag, upstream.last_modified
        )
        self._merged[private.name] = (private, upstream, merged)
        return merged

    # Changing

    def _path(self, project: str, filename: str) -> str:
        return os.path.join(self.root, project, filename)

    async def add(self, upload: Upload) -> AddResult:
        """
        Store an uploaded file, durably, once its digests check out.  The
        spool file is consumed whatever happens.

        :raises UploadRejected: 400 for a damaged upload, 409 when another
            file of the same name exists (and overwriting is not allowed).
        """
        metadata_spool: str | None = None
        try:
            inspected: Inspected = await self.run(inspect_upload, upload, self.spool_dir)
            metadata_spool = inspected.metadata_path
            async with self._lock:
                return await self._add_locked(upload, inspected)
        finally:
            for path in (upload.spool.path, metadata_spool):
                if path is not None:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass

    async def _add_locked(self, upload: Upload, inspected: Inspected) -> AddResult:
        project = self._projects.get(upload.project)
        files = list(project.files) if project is not None else []
        existing = project.file(upload.filename) if project is not None else None
        if existing is not None and existing.sha256 == inspected.sha256:
            return AddResult(existing, existing=True)
        if existing is not None and not self.allow_overwrite:
            raise UploadRejected(
                409,
                f"{upload.filename} already exists here with different content; "
                "upload it under a new version",
            )
        if upload.kind == "sdist":
            for f in files:
                if f.filename != upload.filename and _is_sdist_of(f.filename, upload.version):
                    raise UploadRejected(
                        400, f"only one sdist per release: {f.filename} is already here"
                    )
        record = PrivateFile(
            filename=upload.filename,
            sha256=inspected.sha256,
            size=inspected.size,
            upload_time=upload_time(self.clock.seconds()),
            requires_python=inspected.requires_python,
            metadata_sha256=inspected.metadata_sha256,
            uploaded_by=upload.user,
        )
        files = [f for f in files if f.filename != upload.filename] + [record]
        updated = PrivateProject.build(upload.project, files, self.clock.seconds())
        await self.run(
            self._commit_files, upload.project, upload.filename, upload.spool.path,
            inspected.metadata_path, updated.to_bytes(),
        )  # fmt: skip
        self._projects[upload.project] = updated
        self.log.info(
            "{user} uploaded {filename} ({size} bytes) to private project {project}",
            user=upload.user,
            filename=upload.filename,
            size=inspected.size,
            project=upload.project,
        )
        return AddResult(record)

    def _commit_files(
        self, project: str, filename: str, spool: str, metadata: str | None, page: bytes
    ) -> None:
        """
        Rename the (already fsynced) spool files into place, then write the
        page.  Blocking.
        """
        directory = os.path.join(self.root, project)
        os.makedirs(directory, exist_ok=True)
        os.replace(spool, os.path.join(directory, filename))
        meta_path = os.path.join(directory, filename + METADATA_SUFFIX)
        if metadata is not None:
            os.replace(metadata, meta_path)
        else:
            try:
                os.unlink(meta_path)  # an overwritten wheel's, say
            except FileNotFoundError:
                pass
        fsync_dir(directory)
        fsync_dir(self.root)
        write_atomically(os.path.join(directory, PAGE_FILE), page)

    async def set_yanked(self, project: str, filename: str, yanked: Yanked) -> PrivateFile:
        """
        Yank a file (``True`` or a reason) or unyank it (``False``).

        :raises UploadRejected: 404 when there is no such private file.
        """
        async with self._lock:
            private, f = self._find(project, filename)
            changed = attrs.evolve(f, yanked=yanked)
            files = [changed if g.filename == filename else g for g in private.files]
            await self._write_page(PrivateProject.build(private.name, files, self.clock.seconds()))
            self.log.info(
                "{filename} of {project} is now {state}",
                filename=filename,
                project=project,
                state="yanked" if yanked is not False else "not yanked",
            )
            return changed

    async def delete(self, project: str, filename: str) -> PrivateFile:
        """
        Remove a file for good.  The project stays private, even without
        files, until `release`d.

        :raises UploadRejected: 404 when there is no such private file.
        """
        async with self._lock:
            private, f = self._find(project, filename)
            files = [g for g in private.files if g.filename != filename]
            await self._write_page(PrivateProject.build(private.name, files, self.clock.seconds()))
            paths = [self._path(project, filename), self._path(project, filename + METADATA_SUFFIX)]
            await self.run(unlink_all, paths)
            self.log.info("deleted {filename} of {project}", filename=filename, project=project)
            return f

    async def release(self, project: str) -> None:
        """
        Stop treating a project without files as private: its name goes
        back to the upstreams.

        :raises UploadRejected: 404 when it is not private, 409 while it
            still has files.
        """
        async with self._lock:
            private = self.project(project)
            if private is None:
                raise UploadRejected(404, f"{project} is not a private project")
            if private.files:
                raise UploadRejected(
                    409, f"{project} still has {len(private.files)} files; delete them first"
                )
            await self.run(shutil.rmtree, os.path.join(self.root, project))
            del self._projects[private.name]
            self._merged.pop(private.name, None)
            self.log.info("released the private name {project}", project=project)

    def _find(self, project: str, filename: str) -> tuple[PrivateProject, PrivateFile]:
        private = self.project(project)
        f = private.file(filename) if private is not None else None
        if private is None or f is None:
            raise UploadRejected(404, f"{filename} is not a file of the private project {project}")
        return private, f

    async def _write_page(self, updated: PrivateProject) -> None:
        path = os.path.join(self.root, updated.name, PAGE_FILE)
        await self.run(write_atomically, path, updated.to_bytes())
        self._projects[updated.name] = updated


def _is_sdist_of(filename: str, version: Version) -> bool:
    try:
        dist = parse_dist_filename(filename)
    except InvalidDistFilename:
        return False
    return dist.kind == "sdist" and dist.version == version

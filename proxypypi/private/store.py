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

A private project belongs to its owners, recorded in its page: the user
who created it, and whom they add.  Only they and the admins
(``--admin``) may upload to it, yank, delete or release it, or change its
owners; anyone else gets 403.

Every change is durable before it is acknowledged: files are fsynced and
renamed into place, the page written last (temp file, fsync, rename), so a
crash leaves the old page or the new one, never one listing a missing
file; then ``.generation`` is replaced, so every worker reads it again.
The pages are served as the policy judges them (`proxypypi.private.served`).
Nothing here is evicted: this tree is outside ``DATA/files/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterable

import attrs
from packaging.utils import NormalizedName
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from proxypypi.cache.forms import MemoryForms
from proxypypi.cache.locks import Generation, Locks
from proxypypi.cache.pages import PageCache
from proxypypi.cache.storage import (
    Runner,
    remove_quietly,
    unlink_all,
    write_atomically,
)
from proxypypi.config.policy import PolicyConfig
from proxypypi.names import METADATA_SUFFIX, normalize
from proxypypi.policy.decision import Withheld
from proxypypi.policy.state import Policy
from proxypypi.private.archive import Inspected, inspect_upload
from proxypypi.private.disk import commit_upload, read_project
from proxypypi.private.model import (
    PAGE_FILE,
    AddResult,
    PrivateFile,
    PrivateProject,
    StoredFile,
    Upload,
    UploadRejected,
    is_sdist_of,
    upload_time,
)
from proxypypi.private.served import ServedForms
from proxypypi.simple.model import Yanked

#: Replaced whenever a worker changes a private project, so that the
#: others read them again (a name no project can have: it starts with a
#: dot).
GENERATION = ".generation"


@attrs.define(eq=False)
class PrivateStore:
    """
    The private projects of one service.

    :ivar root: ``DATA/private``.
    :ivar spool_dir: ``DATA/tmp``, where uploads wait.
    :ivar run: runs blocking work (hashing, fsync) off the reactor thread.
    :ivar merge_upstream: private projects whose upstream files stay
        listed after the private ones.
    :ivar allow_overwrite: let a different file replace one of the same name.
    :ivar admins: users who may change every private project.
    :ivar policy: the deny and allow rules private files answer to too.
    """

    root: str
    spool_dir: str
    run: Runner
    clock: IReactorTime
    merge_upstream: frozenset[NormalizedName] = frozenset()
    allow_overwrite: bool = False
    admins: frozenset[str] = frozenset()
    policy: Policy = attrs.field(
        default=attrs.Factory(lambda self: Policy.start(PolicyConfig(), self.clock), True)
    )
    #: Worker processes may change them too: look before every read.
    shared: bool = attrs.field(default=True, kw_only=True)
    log = Logger()
    _projects: dict[NormalizedName, PrivateProject] = attrs.field(factory=dict)
    _lock: DeferredLock = attrs.field(factory=DeferredLock)
    _served: ServedForms = attrs.field(init=False)
    #: Replaced by any worker that changes a private project.
    _generation: Generation = attrs.field(init=False)
    #: Changes across the worker processes, one at a time.
    _locks: Locks = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._served = ServedForms(self.policy, self.clock)
        self._generation = Generation(os.path.join(self.root, GENERATION))
        self._locks = Locks(os.path.join(os.path.dirname(self.root), "locks"), self.clock)

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
        admins: Iterable[str] = (),
        policy: Policy | None = None,
        shared: bool = True,
    ) -> PrivateStore:
        """
        Create the directory if needed and load every private project (blocking;
        at start-up).  Damaged pages are skipped with an error in the log: their
        names then fall back to the upstreams, which the operator must fix.
        """
        merged = frozenset(n for n in (normalize(m) for m in merge_upstream) if n is not None)
        store = cls(root, spool_dir, run, clock, merged, allow_overwrite, frozenset(admins),
                    *(() if policy is None else (policy,)), shared=shared)  # fmt: skip
        os.makedirs(root, exist_ok=True)
        store._generation.changed()
        store._reload()
        if store._projects:
            store.log.info("{count} private projects", count=len(store._projects))
        return store

    def _reload(self) -> None:
        """Read every private project from disk (blocking; a page each)."""
        projects: dict[NormalizedName, PrivateProject] = {}
        for entry in sorted(os.listdir(self.root)):
            name = normalize(entry)
            if name != entry:
                continue
            try:
                project = read_project(os.path.join(self.root, entry), name)
            except (OSError, ValueError, KeyError, TypeError) as e:
                self.log.error(
                    "cannot read the private page of {project} ({error}); it is not "
                    "private until it is fixed",
                    error=e,
                    project=name,
                )
                continue
            if project is not None:
                projects[name] = project
        self._projects = projects
        self._served.forget()

    def _current(self) -> dict[NormalizedName, PrivateProject]:
        """
        The private projects, read again when another worker changed them
        (it replaced the generation file): a ``stat`` (none if not shared).
        """
        if self.shared and self._generation.changed():
            self._reload()
        return self._projects

    # Reading

    def is_private(self, name: str) -> bool:
        return name in self._current()

    def project(self, name: str) -> PrivateProject | None:
        return self._current().get(NormalizedName(name))

    def names(self) -> list[NormalizedName]:
        return sorted(self._current())

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

    def forms_ready(self, name: NormalizedName) -> MemoryForms | None:
        """
        The forms of ``name``'s page if it is private and not merged with
        the upstream's (those are had at once, with no I/O).
        """
        private = self._current().get(name)
        if private is None or name in self.merge_upstream:
            return None
        return self._served.own(private)

    async def forms_for(self, name: NormalizedName, pages: PageCache) -> MemoryForms:
        """
        The forms of a private project's page: its own files, followed, for
        a project merged with its upstream (``--merge-upstream``), by the
        upstream's files it has no file of the same name for.  When the
        upstream has nothing to add (it does not know the project, or does
        not answer), the private page alone.

        :raises KeyError: when ``name`` is not private.
        """
        private = self._current()[name]
        if name not in self.merge_upstream:
            return self._served.own(private)
        return await self._served.merged(private, pages)

    def rejudge(self) -> None:
        """Judge every private page again (the rules changed)."""
        self._served.rejudge(list(self._current().values()))

    def verdict(self, project: str, filename: str) -> Withheld | None:
        """
        Why the private file ``filename`` (a distribution) is withheld, or
        ``None``.
        """
        private = self.project(project)
        return None if private is None else self._served.verdict(private, filename)

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
            # Before hashing anything; again under the lock, where it counts.
            self._check_owner(self._projects.get(upload.project), upload.user)
            inspected: Inspected = await self.run(inspect_upload, upload, self.spool_dir)
            metadata_spool = inspected.metadata_path
            async with self._changing():
                return await self._add_locked(upload, inspected)
        finally:
            for path in (upload.spool_path, metadata_spool):
                if path is not None:
                    remove_quietly(path)

    async def _add_locked(self, upload: Upload, inspected: Inspected) -> AddResult:
        project = self._projects.get(upload.project)
        self._check_owner(project, upload.user)
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
                if f.filename != upload.filename and is_sdist_of(f.filename, upload.version):
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
        owners = project.owners if project is not None else (upload.user,)
        updated = PrivateProject.build(upload.project, files, owners)
        await self.run(
            commit_upload, self.root, upload.project, upload.filename, upload.spool_path,
            inspected.metadata_path, updated.to_bytes(),
        )  # fmt: skip
        await self._bump()
        self._projects[upload.project] = updated
        self.log.info(
            "{user} uploaded {filename} ({size} bytes) to private project {project}",
            user=upload.user,
            filename=upload.filename,
            size=inspected.size,
            project=upload.project,
        )
        return AddResult(record)

    async def set_yanked(
        self, project: str, filename: str, yanked: Yanked, user: str
    ) -> PrivateFile:
        """
        Yank a file (``True`` or a reason) or unyank it (``False``).

        :raises UploadRejected: 404 when there is no such private file, 403
            when ``user`` may not change the project.
        """
        async with self._changing():
            private, f = self._find(project, filename, user)
            changed = attrs.evolve(f, yanked=yanked)
            files = [changed if g.filename == filename else g for g in private.files]
            await self._write_page(PrivateProject.build(private.name, files, private.owners))
            self.log.info(
                "{filename} of {project} is now {state}",
                filename=filename,
                project=project,
                state="yanked" if yanked is not False else "not yanked",
            )
            return changed

    async def delete(self, project: str, filename: str, user: str) -> PrivateFile:
        """
        Remove a file for good.  The project stays private, even without
        files, until `release`d.

        :raises UploadRejected: 404 when there is no such private file, 403
            when ``user`` may not change the project.
        """
        async with self._changing():
            private, f = self._find(project, filename, user)
            files = [g for g in private.files if g.filename != filename]
            await self._write_page(PrivateProject.build(private.name, files, private.owners))
            paths = [self._path(project, filename), self._path(project, filename + METADATA_SUFFIX)]
            await self.run(unlink_all, paths)
            self.log.info("deleted {filename} of {project}", filename=filename, project=project)
            return f

    async def release(self, project: str, user: str) -> None:
        """
        Stop treating a project without files as private: its name goes
        back to the upstreams.

        :raises UploadRejected: 404 when it is not private, 403 when
            ``user`` may not change it, 409 while it still has files.
        """
        async with self._changing():
            private = self._owned(project, user)
            if private.files:
                raise UploadRejected(
                    409, f"{project} still has {len(private.files)} files; delete them first"
                )
            await self.run(shutil.rmtree, os.path.join(self.root, project))
            await self._bump()
            del self._projects[private.name]
            self._served.forget(private.name)
            self.log.info("released the private name {project}", project=project)

    async def set_owners(self, project: str, owners: Iterable[str], user: str) -> PrivateProject:
        """
        Replace the owners of a project (at least one).

        :raises UploadRejected: 404 when it is not private, 403 when
            ``user`` may not change it, 400 for an empty list.
        """
        owners = tuple(dict.fromkeys(owners))
        if not owners:
            raise UploadRejected(400, "a private project needs at least one owner")
        async with self._changing():
            private = self._owned(project, user)
            updated = PrivateProject.build(private.name, private.files, owners)
            await self._write_page(updated)
            self.log.info("owners of {project}: {owners}", project=project, owners=owners)
            return updated

    def _check_owner(self, private: PrivateProject | None, user: str) -> None:
        # Anyone may create a project that does not exist.
        if private is not None:
            private.check_owner(user, self.admins)

    def _owned(self, project: str, user: str) -> PrivateProject:
        private = self.project(project)
        if private is None:
            raise UploadRejected(404, f"{project} is not a private project")
        self._check_owner(private, user)
        return private

    def _find(
        self, project: str, filename: str, user: str
    ) -> tuple[PrivateProject, PrivateFile]:
        private = self.project(project)
        f = private.file(filename) if private is not None else None
        if private is None or f is None:
            raise UploadRejected(404, f"{filename} is not a file of the private project {project}")
        self._check_owner(private, user)
        return private, f

    async def _write_page(self, updated: PrivateProject) -> None:
        path = os.path.join(self.root, updated.name, PAGE_FILE)
        await self.run(write_atomically, path, updated.to_bytes())
        await self._bump()
        self._projects[updated.name] = updated

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[None]:
        """
        One change at a time, in this process and across the workers, made
        to the projects as the disk has them now.
        """
        async with self._lock:
            held, _ = await self._locks.acquire("private")
            try:
                self._current()
                yield
            finally:
                held.release()

    async def _bump(self) -> None:
        """Tell the other workers the private projects changed."""
        await self.run(self._generation.bump)


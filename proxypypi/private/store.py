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

The cooldown never holds back an upload (the files are the operator's
own); deny and allow rules apply to them as to any file.  A private page
is judged when first asked for after it or the rules change (it is small:
on the reactor thread).

Every change is made durable before it is acknowledged: files are fsynced
and renamed into place, and the page is written last (temp file, fsync,
rename), so a crash leaves either the old page or the new one, never one
that lists a missing file.  Nothing here is ever evicted: this tree is
outside ``DATA/files/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable

import attrs
from packaging.utils import NormalizedName
from packaging.version import Version
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from proxypypi.cache.forms import MemoryForms
from proxypypi.cache.page import CachedPage
from proxypypi.cache.pages import PageCache, PageFacts
from proxypypi.cache.storage import (
    Runner,
    fsync_dir,
    unlink_all,
    write_atomically,
)
from proxypypi.config.policy import PolicyConfig
from proxypypi.names import METADATA_SUFFIX, InvalidDistFilename, normalize, parse_dist_filename
from proxypypi.policy.decision import Withheld
from proxypypi.policy.state import Policy
from proxypypi.private.archive import Inspected, inspect_upload
from proxypypi.private.model import (
    PAGE_FILE,
    AddResult,
    PrivateFile,
    PrivateProject,
    StoredFile,
    Upload,
    UploadRejected,
    upload_time,
)
from proxypypi.simple.model import DistFile, ProjectPage, Yanked
from proxypypi.upstream.pages import ProjectNotFound


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
    :ivar policy: the deny and allow rules private files answer to too.
    """

    root: str
    spool_dir: str
    run: Runner
    clock: IReactorTime
    merge_upstream: frozenset[NormalizedName] = frozenset()
    allow_overwrite: bool = False
    policy: Policy = attrs.field(
        default=attrs.Factory(lambda self: Policy.start(PolicyConfig(), self.clock), True)
    )
    log = Logger()
    _projects: dict[NormalizedName, PrivateProject] = attrs.field(factory=dict)
    #: Each project's page as the policy serves it, and what it was judged from.
    _judged: dict[NormalizedName, tuple[PrivateProject, MemoryForms]] = attrs.field(factory=dict)
    _lock: DeferredLock = attrs.field(factory=DeferredLock)
    _merged: dict[NormalizedName, tuple[PrivateProject, PageFacts, MemoryForms]] = attrs.field(
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
        policy: Policy | None = None,
    ) -> PrivateStore:
        """
        Create the directory if needed and load every private project
        (blocking; at start-up).  Damaged pages are skipped with an error
        in the log: their names then fall back to the upstreams, which the
        operator must fix.
        """
        merged = frozenset(n for n in (normalize(m) for m in merge_upstream) if n is not None)
        store = cls(root, spool_dir, run, clock, merged, allow_overwrite)
        if policy is not None:
            store.policy = policy
        os.makedirs(root, exist_ok=True)
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
            store._projects[name] = PrivateProject.build(name, files)
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

    def forms_ready(self, name: NormalizedName) -> MemoryForms | None:
        """
        The forms of ``name``'s page if it is private and not merged with
        the upstream's (those are had at once, with no I/O).
        """
        private = self._projects.get(name)
        if private is None or name in self.merge_upstream:
            return None
        return self._judge(private)

    def _judge(self, private: PrivateProject) -> MemoryForms:
        """
        The forms of ``private``'s page as the policy serves it: judged
        again only when the project or the rules changed.
        """
        rules = self.policy.rules
        known = self._judged.get(private.name)
        current = known is not None and known[1].held.generation == rules.generation
        if known is not None and known[0] is private and current:
            return known[1]
        decision = rules.judge(private.page, self.clock.seconds())
        forms = private.forms
        if decision.page is not private.page or decision.held.total:
            forms = MemoryForms(decision.page, decision.held)
        self._judged[private.name] = (private, forms)
        self.policy.ledger.note(private.name, decision.held)
        return forms

    def rejudge(self) -> None:
        """
        Judge every private page under the rules in force (after they
        changed), so that the ledger counts what they hold back.
        """
        for private in list(self._projects.values()):
            self._judge(private)

    def verdict(self, project: str, filename: str) -> Withheld | None:
        """
        Why the private file ``filename`` (a distribution, not its
        ``.metadata``) is withheld, or ``None``.
        """
        private = self.project(project)
        f = private.file(filename) if private is not None else None
        if private is None or f is None:
            return None
        return self.policy.rules.verdict(private.name, f.dist_file(), self.clock.seconds())

    async def forms_for(self, name: NormalizedName, pages: PageCache) -> MemoryForms:
        """
        The forms of a private project's page: its own files, followed, for
        a project merged with its upstream (``--merge-upstream``), by the
        upstream's files it has no file of the same name for.  When the
        upstream has nothing to add (it does not know the project, or does
        not answer), the private page alone.

        :raises KeyError: when ``name`` is not private.
        """
        private = self._projects[name]
        if name not in self.merge_upstream:
            return self._judge(private)
        try:
            facts = await pages.get(name)
            remembered = self._merged.get(name)
            if remembered is not None and remembered[0] is private and remembered[1] is facts:
                held = remembered[2].held
                if held.generation == self.policy.generation and (
                    self.clock.seconds() < held.valid_until
                ):
                    return remembered[2]
            upstream = await pages.stored(name)
        except ProjectNotFound:
            return self._judge(private)
        except Exception as e:
            self.log.warn(
                "serving only the private files of {project}: {error}", project=name, error=e
            )
            return self._judge(private)
        decision = self.policy.rules.judge(self._merge(private, upstream), self.clock.seconds())
        merged = MemoryForms(decision.page, decision.held)
        self._merged[name] = (private, facts, merged)
        return merged

    def _merge(self, private: PrivateProject, upstream: CachedPage) -> ProjectPage:
        ours = {f.filename for f in private.files}
        theirs: tuple[DistFile, ...] = ()
        status = upstream.page.status
        if status is None or status.status != "quarantined":
            theirs = tuple(f for f in upstream.page.files if f.filename not in ours)
        return ProjectPage(private.name, private.page.files + theirs)

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
            for path in (upload.spool_path, metadata_spool):
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
        updated = PrivateProject.build(upload.project, files)
        await self.run(
            self._commit_files, upload.project, upload.filename, upload.spool_path,
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
            await self._write_page(PrivateProject.build(private.name, files))
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
            await self._write_page(PrivateProject.build(private.name, files))
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
            self._judged.pop(private.name, None)
            self.policy.ledger.note(private.name, None)
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

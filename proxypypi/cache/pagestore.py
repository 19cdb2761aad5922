# -*- test-case-name: tests.test_index -*-
"""
Project pages on disk: the stored page (``DATA/pages/<project>.json``, the
upstream's files and our bookkeeping) and its forms
(``DATA/pages/_forms/<project>.<suffix>``, what clients get).

Every method here blocks and is called off the reactor thread: a page of
ten thousand files takes a good part of a hundred milliseconds to parse or
render, which the reactor must never wait for.  Writes are atomic (temp
file, fsync, rename), so a crash leaves a page or its forms old or new,
never torn; a form is rewritten only when its bytes change, so its entity
tag (from the file's identity) stays put across refreshes that change
nothing.

A fetched page's forms are written before the stored page (which the
client that asked need not wait for): a crash in between leaves forms
newer than the stored page, which only makes the page look older than it
is, so it is fetched again sooner; never the reverse.

The stored page keeps every file; the forms list what the policy serves
(`proxypypi.policy`).  Beside a page's forms, ``<project>.policy`` holds
the digest of the files its forms leave out (no file: none left out), so
a page judged anew, after a rule change, a restart or a file coming of
age, has its forms rendered again only when what they leave out changed.
It says ``dirty`` while forms are being rewritten, so that a crash
midway leaves them to be rendered again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import attrs
from packaging.utils import NormalizedName
from twisted.logger import Logger

from proxypypi.cache.coremetadata import with_stored_metadata
from proxypypi.cache.forms import (
    FORMS_DIR,
    OFFLINE_FORMS_DIR,
    Form,
    form_path,
    local_url,
    render,
)
from proxypypi.cache.page import (
    CachedPage,
    stored_bookkeeping,
    stored_entry,
    stored_head,
    with_bookkeeping,
)
from proxypypi.cache.storage import Chunks, Storage, unlink_all, write_atomically
from proxypypi.policy.decision import Decision, Held, Judge
from proxypypi.simple.model import DistFile
from proxypypi.simple.parse import PageParseError
from proxypypi.simple.render import render_project_json, render_project_jsons

#: The suffix of the file recording what a page's forms leave out.
POLICY_SUFFIX = "policy"

#: What that file says while forms are being rewritten.
_DIRTY = b"dirty"


@attrs.frozen
class Stored:
    """
    What storing (or loading) a page yields for the memory of the cache.

    :ivar cached: the page as stored.
    :ivar rendered: forms rendered and kept in memory because they could
        not be written (a full or read-only disk): served from there.
    :ivar held: what the policy holds back of it.
    """

    cached: CachedPage
    rendered: dict[Form, bytes] = attrs.field(factory=dict)
    held: Held = attrs.field(factory=Held)


@attrs.frozen
class Prepared:
    """
    A page rendered for storage, not written yet: the stored page's bytes
    and its forms.
    """

    cached: CachedPage
    raw: Chunks
    rendered: dict[Form, bytes]
    decision: Decision


@attrs.define
class PageStore:
    """
    The pages directory of one storage.

    :ivar offline: forms list only the files on disk, and live in a
        directory of their own (`OFFLINE_FORMS_DIR`).
    """

    storage: Storage
    offline: bool = False
    log = Logger()

    forms_dir: str = attrs.field(init=False)
    #: Upstreams already named in the log for giving no upload times.
    _timeless: set[str] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        self.forms_dir = os.path.join(
            self.storage.pages_dir, OFFLINE_FORMS_DIR if self.offline else FORMS_DIR
        )

    def form_path(self, name: str, form: Form | str) -> str:
        return form_path(self.forms_dir, name, form)

    def read(self, name: NormalizedName) -> CachedPage | None:
        """
        The stored page of ``name``, or ``None`` (none, or damaged: logged).
        Offline, only the files on disk are kept: listing others would only
        make an installer choose them and fail.
        """
        raw = self.storage.read_page(name)
        if raw is None:
            return None
        try:
            cached = CachedPage.from_bytes(name, raw)
        except (ValueError, PageParseError) as e:
            self.log.warn(
                "ignoring damaged stored page for {project}: {error}", project=name, error=e
            )
            return None
        if self.offline:
            cached = cached.only(lambda f: self.storage.has_file(name, f.filename), 0.0)
            cached = attrs.evolve(cached, fetched_at=0.0)
        return cached

    def find_entry(self, name: NormalizedName, filename: str) -> DistFile | None:
        """
        The entry of ``filename`` in the stored page of ``name``, if it is
        listed there (offline, only if the file is stored here too).
        """
        raw = self.storage.read_page(name)
        if raw is None:
            return None
        try:
            f = stored_entry(raw, name, filename)
        except ValueError as e:
            self.log.warn(
                "ignoring damaged stored page for {project}: {error}", project=name, error=e
            )
            return None
        if f is not None and self.offline and not self.storage.has_file(name, filename):
            return None
        return f

    def prepare(self, cached: CachedPage, forms: Iterable[Form], judge: Judge) -> Prepared:
        """
        Render ``cached`` for storage, and ``forms`` of it plus every form
        already on disk (they would show the old page otherwise), as the
        policy serves it.  The stored page is rendered here, with the
        forms, though written after them: its bytes are one block that
        goes back to the system once written, where the parsed page it
        comes from is thousands of small objects that would have to wait
        for it.  Wheels whose ``.metadata`` was taken out here offer it
        (`with_stored_metadata`).
        """
        page = with_stored_metadata(
            cached.page, os.path.join(self.storage.files_dir, cached.page.name)
        )
        cached = attrs.evolve(cached, page=page)
        decision = self._judge(cached, judge)
        wanted = set(forms) | set(self.forms_on_disk(page.name))
        if decision.page is page:
            # The stored page and the JSON form differ only in the file URLs.
            stored, served = render_project_jsons(
                page, [lambda f: f.url, lambda f: local_url(f, page.name)]
            )
        else:
            stored = render_project_json(page, lambda f: f.url)
            served = render_project_json(decision.page, lambda f: local_url(f, page.name))
        rendered = render(decision.page, wanted, served)
        return Prepared(cached, cached.to_chunks(stored), rendered, decision)

    def _judge(self, cached: CachedPage, judge: Judge) -> Decision:
        """
        What the policy serves of ``cached``, saying in the log what a
        person should know: an upstream without upload times (once), a
        page with nothing left, what report-only mode would hold back.
        """
        decision = judge(cached.page)
        held, name = decision.held, cached.page.name
        if decision.unknown_times and cached.source not in self._timeless:
            self._timeless.add(cached.source)
            self.log.warn(
                "{upstream} gives no upload times (first seen on {project}): files of unknown "
                "age are held back by the cooldown (--cooldown-unknown deny); ask the upstream "
                "for JSON pages, which carry them",
                upstream=cached.source,
                project=name,
            )
        if held.empty_reason is not None:
            self.log.info("{reason}", reason=held.empty_reason)
        elif held.total and not held.enforced:
            self.log.info(
                "policy, report only: {count} files of {project} would be held back, e.g. "
                "{example}",
                count=held.total,
                project=name,
                example=decision.withheld[0][1].message,
            )
        return decision

    def write_forms(self, prepared: Prepared) -> bool:
        """
        Write prepared forms.  A write that fails is noted on the storage
        and logged.

        :returns: whether every form was written.
        """
        name = prepared.cached.page.name
        try:
            self._write_forms(name, prepared.rendered, prepared.decision.held.digest)
        except OSError as e:
            self._failed(name, e, "serving it from memory")
            return False
        self.storage.wrote()
        return True

    def write_stored(self, name: NormalizedName, raw: Chunks) -> bool:
        """
        Write a stored page prepared by `prepare`.  A write that
        fails is noted on the storage and logged.

        :returns: whether it was written.
        """
        try:
            write_atomically(self.storage.page_path(name), raw)
        except OSError as e:
            self._failed(name, e, "it is fetched again after a restart")
            return False
        self.storage.wrote()
        return True

    def _failed(self, name: str, e: OSError, consequence: str) -> None:
        self.storage.failed_write(e)
        self.log.error(
            "cannot store page of {project} ({error}); {consequence}",
            project=name,
            error=os.strerror(e.errno or 0),
            consequence=consequence,
        )

    def store(self, cached: CachedPage, forms: Iterable[Form], judge: Judge) -> Stored:
        """
        `prepare` and write the forms, then the stored page, all at once:
        the forms stay in memory when they could not be written.
        """
        prepared = self.prepare(cached, forms, judge)
        written = self.write_forms(prepared)
        self.write_stored(cached.page.name, prepared.raw)
        return Stored(cached, {} if written else prepared.rendered, prepared.decision.held)

    def prepare_merged(
        self, cached: CachedPage, keep_removed: bool, forms: Iterable[Form], judge: Judge
    ) -> Prepared:
        """
        `prepare` a page fetched now; with ``keep_removed``, plus the files
        we stored that the upstream no longer lists, marked as removed
        upstream (never-forget, unless ``--forget-removed``).
        """
        name = cached.page.name
        if keep_removed:
            listed = {f.filename for f in cached.page.files}
            stored_here = self._stored_files(name)
            if not stored_here <= listed:
                old = self.read(name)
                if old is not None:
                    kept = tuple(
                        attrs.evolve(f, removed_upstream=True)
                        for f in old.page.files
                        if f.filename not in listed and f.filename in stored_here
                    )
                    page = attrs.evolve(cached.page, files=cached.page.files + kept)
                    cached = attrs.evolve(cached, page=page)
        return self.prepare(cached, forms, judge)

    def restore(self, name: NormalizedName, judge: Judge) -> Stored | None:
        """
        The stored page of ``name`` rendered and stored again (to offer
        metadata stored since); ``None`` when none is stored.
        """
        cached = self.read(name)
        return None if cached is None else self.store(cached, (), judge)

    def keep_only_stored(self, name: NormalizedName, judge: Judge) -> Stored | None:
        """
        The stored page reduced to the files on disk, marked as removed
        upstream, stored; ``None`` when none of its files is.
        """
        old = self.read(name)
        if old is None:
            return None
        stored_here = self._stored_files(name)
        files = tuple(
            attrs.evolve(f, removed_upstream=True)
            for f in old.page.files
            if f.filename in stored_here
        )
        if not files:
            return None
        page = attrs.evolve(old.page, files=files)
        return self.store(attrs.evolve(old, page=page), (), judge)

    def _stored_files(self, name: str) -> set[str]:
        try:
            return set(os.listdir(os.path.join(self.storage.files_dir, name)))
        except OSError:
            return set()

    def load(self, name: NormalizedName, judge: Judge) -> Stored | None:
        """
        The stored page of ``name``, judged by the policy; its forms on
        disk are rendered again if they were rendered under another
        judgement.  ``None`` when no page is stored.
        """
        return self._judged(name, (), judge)

    def render_form(self, name: NormalizedName, form: Form, judge: Judge) -> Stored | None:
        """
        Render one form of the stored page of ``name`` (first asked for
        now); ``None`` when no page is stored.
        """
        return self._judged(name, (form,), judge)

    def _judged(self, name: NormalizedName, forms: Iterable[Form], judge: Judge) -> Stored | None:
        cached = self.read(name)
        if cached is None:
            return None
        decision = self._judge(cached, judge)
        held = decision.held
        wanted = set(forms)
        if self._recorded(name) != held.digest.encode():
            wanted |= set(self.forms_on_disk(name))
        if not wanted:
            return Stored(cached, held=held)
        rendered = render(decision.page, wanted)
        try:
            self._write_forms(name, rendered, held.digest)
        except OSError as e:
            self.storage.failed_write(e)
            return Stored(cached, rendered, held)
        return Stored(cached, held=held)

    def _recorded(self, name: str) -> bytes:
        """
        The digest of what the forms on disk leave out (empty: nothing).
        """
        try:
            with open(self.form_path(name, POLICY_SUFFIX), "rb") as f:
                return f.read(64)
        except FileNotFoundError:
            return b""

    def _write_forms(self, name: str, rendered: dict[Form, bytes], digest: str) -> None:
        """
        Write forms rendered under the judgement of ``digest``, and record
        it.  Blocking.
        """
        os.makedirs(self.forms_dir, exist_ok=True)
        record = self.form_path(name, POLICY_SUFFIX)
        changed = self._recorded(name) != digest.encode()
        if changed:
            write_atomically(record, _DIRTY)
        for form, body in rendered.items():
            self._write_if_changed(self.form_path(name, form), body)
        if changed and digest:
            write_atomically(record, digest.encode())
        elif changed:
            unlink_all([record])

    def fetched_at(self, name: NormalizedName) -> float | None:
        """
        When the stored page of ``name`` was fetched (by any process), or
        ``None`` without one.
        """
        meta = stored_bookkeeping(self.storage.page_path(name))
        value = None if meta is None else meta.get("fetched-at")
        return float(value) if isinstance(value, int | float) else None

    def retouch(
        self,
        name: NormalizedName,
        source: str,
        fetched_at: float,
        etag: str | None,
        last_modified: str | None,
    ) -> None:
        """
        Rewrite the bookkeeping of a stored page confirmed unchanged (a 304),
        without parsing or rendering the page again: the bookkeeping block
        is the stored page's last key.  A page that is gone or damaged is
        left for the next full fetch.
        """
        path = self.storage.page_path(name)
        try:
            with open(path, "rb") as f:
                head = stored_head(f.read())
        except (OSError, ValueError):
            return
        write_atomically(path, with_bookkeeping(head, source, fetched_at, etag, last_modified))

    def forget(self, name: NormalizedName) -> None:
        """
        Remove the stored page of ``name`` and its forms.
        """
        unlink_all([self.storage.page_path(name), *self._form_paths(name)])

    def forms_on_disk(self, name: str) -> list[Form]:
        return [form for form in Form if os.path.exists(self.form_path(name, form))]

    def _form_paths(self, name: str) -> list[str]:
        return [self.form_path(name, form) for form in (*Form, POLICY_SUFFIX)]

    def _write_if_changed(self, path: str, body: bytes) -> None:
        try:
            with open(path, "rb") as f:
                if f.read(len(body) + 1) == body:
                    return
        except FileNotFoundError:
            pass
        write_atomically(path, body)

# -*- test-case-name: tests.test_web -*-
"""
``/simple/``: the list of every project, streamed through and cached.

A real index lists hundreds of thousands of names (the public one over
900,000).  The list is read incrementally as the upstream sends it, HTML or
JSON (`proxypypi.simple.parse.ProjectListScanner`), and each batch of
names is written at once to the four forms of our own list (HTML and JSON,
each plain and gzip), in partial files that the first clients already read
while they grow (`proxypypi.cache.growing.GrowingFile`): the first names go
out as soon as the upstream sends them, and at no point is the whole list
held in memory.  The forms are committed together once the upstream's list
is complete (its end seen, within its size and time bounds), and served
from disk until they are older than the TTL; a list that fails keeps the
previous one in use.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence

import attrs
from isal import isal_zlib
from packaging.utils import canonicalize_name
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxypypi.cache.complete import CompleteFile
from proxypypi.cache.forms import Form, compressor
from proxypypi.cache.growing import GrowingFile
from proxypypi.cache.locks import Locks
from proxypypi.cache.storage import Storage, write_all
from proxypypi.interfaces import IFileSource
from proxypypi.simple import render
from proxypypi.simple.negotiate import HTML, JSON_V1
from proxypypi.simple.parse import ProjectListScanner
from proxypypi.upstream.fetch import (
    BodyReceiver,
    BodyTooLarge,
    FetchError,
    GunzipStream,
    UpstreamTimeout,
    describe_failure,
    gzip_encoded,
    header,
    request,
)
from proxypypi.upstream.member import Upstream
from proxypypi.upstream.pages import UpstreamUnavailable
from proxypypi.upstream.pool import Pool
from proxypypi.waiting import SingleFlight, Waiters

#: HTML first: every index serves it.  Either is read as what it is.
LIST_ACCEPT = f"{HTML}, {JSON_V1};q=0.1".encode()

#: The largest list accepted (the public index's is about 60 MB of HTML).
MAX_LIST_BYTES = 512 * 1024 * 1024

#: Seconds one upstream may take to send its whole list.
LIST_TIMEOUT = 300.0

_HEADS = {
    Form.HTML: render.project_list_html_head(),
    Form.JSON: render.project_list_json_head(),
}
_TAILS = {
    Form.HTML: render.project_list_html_tail(),
    Form.JSON: render.project_list_json_tail(),
}


@attrs.define(eq=False)
class _Writer:
    """
    The four forms of the list, growing side by side in partial files.
    Compressed forms are flushed after every batch, so their readers get
    every name at once too.
    """

    files: dict[Form, GrowingFile]
    #: Private names (normalized), listed at the end unless the upstream
    #: lists them (PEP 503: every project, once).
    private: frozenset[str] = frozenset()
    count: int = 0
    _seen: set[str] = attrs.field(factory=set)
    _compressors: dict[Form, isal_zlib.Compress] = attrs.field(factory=dict)

    @classmethod
    def open(
        cls, storage: Storage, paths: dict[Form, str], private: frozenset[str]
    ) -> _Writer:
        files = {}
        for form in Form:
            fd, partial = storage.open_partial()
            files[form] = GrowingFile(partial, paths[form], fd)
        compressors = {form: compressor() for form in Form if form.gzipped}
        writer = cls(files, private, compressors=compressors)
        writer._write(_HEADS, isal_zlib.Z_SYNC_FLUSH)
        return writer

    def add(self, names: list[str]) -> None:
        if not names:
            return
        normalized = [canonicalize_name(n) for n in names]
        html = b"".join(map(render.project_list_html_entry, names, normalized))
        json = b"".join(
            render.project_list_json_entry(n, first=(self.count + i == 0))
            for i, n in enumerate(names)
        )
        self.count += len(names)
        if self.private:
            self._seen.update(n for n in normalized if n in self.private)
        self._write({Form.HTML: html, Form.JSON: json}, isal_zlib.Z_SYNC_FLUSH)

    def end(self) -> None:
        """
        Write the private names the upstream does not list, then the ends
        of the forms; `commit` makes them permanent.
        """
        self.add(sorted(self.private - self._seen))
        self._write(_TAILS, isal_zlib.Z_FINISH)

    def _write(self, plain: dict[Form, bytes], flush: int) -> None:
        for form in Form:
            data = plain[form.plain]
            compressor = self._compressors.get(form)
            if compressor is not None:
                data = compressor.compress(data) + compressor.flush(flush)
            self.files[form].append(data)

    def commit(self) -> None:
        """
        Make every form permanent.  Blocking.
        """
        for growing in self.files.values():
            growing.commit()

    def completed(self) -> None:
        for growing in self.files.values():
            growing.completed()

    def fail(self, failure: Failure) -> None:
        for growing in self.files.values():
            growing.fail(failure)


@attrs.define
class ProjectList:
    """
    The cached project list and its refresh.

    :ivar max_bytes: the largest list accepted from an upstream.
    :ivar timeout: seconds one upstream may take to send its whole list.
    """

    pool: Pool
    storage: Storage
    clock: IReactorTime
    ttl: float = 3600.0
    offline: bool = False
    max_bytes: int = MAX_LIST_BYTES
    timeout: float = LIST_TIMEOUT
    log = Logger()
    _refreshing: SingleFlight[str, None] = attrs.field(factory=SingleFlight)
    #: The writer of the list being fetched, for cold requests to stream;
    #: ``None`` when another worker fetched it meanwhile (read it from disk).
    _started: Waiters[_Writer | None] = attrs.field(factory=Waiters)
    #: One list fetch across the worker processes.
    locks: Locks = attrs.field(
        default=attrs.Factory(
            lambda self: Locks(os.path.join(self.storage.root, "locks"), self.clock),
            takes_self=True,
        )
    )
    _merged_key: tuple[int, int, tuple[str, ...]] | None = None

    def path(self, form: Form) -> str:
        # Project names never start with "_", so these cannot collide.
        return os.path.join(self.storage.pages_dir, f"_index.{form.value}")

    def merged_path(self, form: Form) -> str:
        return os.path.join(self.storage.pages_dir, f"_index+private.{form.value}")

    def _age(self) -> float | None:
        """
        Seconds since the stored list was fetched; ``None`` without one
        (any form missing: a list stored before the compressed forms
        existed is fetched again).
        """
        try:
            oldest = min(os.stat(self.path(form)).st_mtime for form in Form)
        except OSError:
            return None
        return self.clock.seconds() - oldest

    async def current(
        self, form: Form, private: Sequence[str] = ()
    ) -> tuple[IFileSource | None, str]:
        """
        The list as ``form``, with the private project names ``private``
        listed too (PEP 503: every project): streamed while it is fetched
        when none is stored, refreshed in the background when stale.

        :returns: what to send (``None`` when the proxy is offline without
            a list, or the list was replaced in between), and the cache
            result (``hit``, ``stale`` or ``miss``).
        :raises FetchError: when none is stored and no upstream answered.
        """
        age = None if self.offline else self._age()
        if not self.offline and age is None:
            self._refresh(frozenset(private)).addErrback(lambda _: None)
            writer = await self._started.wait()
            if writer is not None:
                # The first fetch streams the upstream's names as they come.
                return writer.files[form], "miss"
            age = self._age()
        if age is not None and age >= self.ttl:
            cache = "stale"
            self._refresh().addErrback(lambda _: None)
        else:
            cache = "hit"
        path = self.path(form)
        if private and os.path.exists(path):
            path = await self._with_private(form, tuple(private))
        return CompleteFile.at(path), cache

    async def _with_private(self, form: Form, private: tuple[str, ...]) -> str:
        """
        The path of the upstream list plus the private names it lacks,
        rebuilt (off the reactor thread) whenever either changes.
        """
        st = os.stat(self.path(Form.HTML))
        key = (st.st_mtime_ns, st.st_size, private)
        merged = self.merged_path(form)
        if self._merged_key != key or not os.path.exists(merged):
            await self.storage.run(_merge_private, self, private)
            self._merged_key = key
        return merged

    def _refresh(self, private: frozenset[str] = frozenset()) -> Deferred[None]:
        """
        Fetch the list again (once, however many ask); with ``private``,
        the private names it lacks are listed too.
        """
        return self._refreshing.run(
            "list", lambda: Deferred.fromCoroutine(self._fetch(private))
        )

    async def _fetch(self, private: frozenset[str]) -> None:
        if self._started.fired:
            # A new refresh: later cold requests follow its own writer.
            self._started = Waiters()
        held, waited = await self.locks.acquire("list")
        try:
            age = self._age() if waited else None
            if age is not None and age < self.ttl:
                # Another worker fetched it while this one waited.
                self._started.fire(None)
                return
            await self._fetch_unlocked(private)
        finally:
            held.release()

    async def _fetch_unlocked(self, private: frozenset[str]) -> None:
        errors = []
        for member in self.pool.in_order():
            try:
                count = await self._fetch_from(member, private)
            except Exception as e:
                reason = describe_failure(Failure(e))
                errors.append(f"{member.url}: {reason}")
                self.log.warn(
                    "project list from {upstream} failed: {reason}",
                    upstream=member.url,
                    reason=reason,
                )
                continue
            self.log.info(
                "project list from {upstream}: {count} projects", upstream=member.url, count=count
            )
            return
        error = UpstreamUnavailable("; ".join(errors))
        self._started.fire(Failure(error))
        raise error

    async def _fetch_from(self, member: Upstream, private: frozenset[str]) -> int:
        response = await request(
            member.agent,
            self.clock,
            member.url,
            {b"accept": LIST_ACCEPT, b"accept-encoding": b"gzip"},
            member.config.first_byte_timeout,
        )
        if response.code != 200:
            response.deliverBody(Protocol())
            raise FetchError(f"HTTP {response.code}")
        gunzip = GunzipStream() if gzip_encoded(response) else None
        scanner = ProjectListScanner(header(response, b"content-type") or "")
        writer = _Writer.open(self.storage, {form: self.path(form) for form in Form}, private)
        received = 0

        def on_data(data: bytes) -> None:
            nonlocal received
            if gunzip is not None:
                data = gunzip.feed(data)
            received += len(data)
            if received > self.max_bytes:
                raise BodyTooLarge(f"project list larger than {self.max_bytes} bytes")
            writer.add(scanner.feed(data))

        try:
            self._started.fire(writer)
            receiver = BodyReceiver(on_data, self.clock, member.idle_timeout)
            response.deliverBody(receiver)
            try:
                await receiver.done.addTimeout(self.timeout, self.clock)
            except DeferredTimeout:
                raise UpstreamTimeout(
                    f"project list not complete within {self.timeout:g}s"
                ) from None
            if gunzip is not None:
                gunzip.close()
            writer.add(scanner.close())
            if not scanner.complete:
                raise FetchError("the project list ended before its end")
            writer.end()
            await self.storage.run(writer.commit)
        except BaseException as e:
            writer.fail(Failure(e))
            raise
        writer.completed()
        return writer.count


def _merge_private(project_list: ProjectList, private: tuple[str, ...]) -> None:
    """
    Write the merged lists: the stored upstream list with the private names
    it does not already hold appended before its end, in every form.  The
    upstream list is read through mmap and copied by the kernel, never
    loaded whole; the compressed forms compress the merged plain ones as
    they are read back.  Blocking.
    """
    with (
        open(project_list.path(Form.HTML), "rb") as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm,
    ):
        missing = [n for n in private if mm.find(b'href="' + n.encode() + b'/"') < 0]
        empty = mm.size() == len(_HEADS[Form.HTML] + _TAILS[Form.HTML])
    entries = {
        Form.HTML: b"".join(render.project_list_html_entry(n) for n in missing),
        Form.JSON: b"".join(
            render.project_list_json_entry(n, first=empty and i == 0)
            for i, n in enumerate(missing)
        ),
    }
    storage = project_list.storage
    for plain, gzipped in ((Form.HTML, Form.HTML_GZ), (Form.JSON, Form.JSON_GZ)):
        tail = _TAILS[plain]
        fd, partial = storage.open_partial()
        try:
            with open(project_list.path(plain), "rb") as f:
                length = os.fstat(f.fileno()).st_size - len(tail)
                offset = 0
                while offset < length:
                    offset += os.sendfile(fd, f.fileno(), offset, length - offset)
            write_all(fd, entries[plain] + tail)
            os.fsync(fd)
        except BaseException:
            storage.discard(fd, partial)
            raise
        os.close(fd)
        os.replace(partial, project_list.merged_path(plain))
        _compress_file(storage, project_list.merged_path(plain), project_list.merged_path(gzipped))


def _compress_file(storage: Storage, source: str, target: str) -> None:
    """
    Write ``target`` as ``source`` gzip-compressed, chunk by chunk.  Blocking.
    """
    gzip = compressor()
    fd, partial = storage.open_partial()
    try:
        with open(source, "rb") as f:
            while chunk := f.read(1024 * 1024):
                write_all(fd, gzip.compress(chunk))
        write_all(fd, gzip.flush())
        os.fsync(fd)
    except BaseException:
        storage.discard(fd, partial)
        raise
    os.close(fd)
    os.replace(partial, target)

# -*- test-case-name: tests.test_web -*-
"""
``/simple/``: the list of every project, streamed through and cached.

A real index lists hundreds of thousands of names.  The list is asked for
as HTML (every index serves it) and parsed incrementally; each name is
written straight to two partial files, our HTML and our JSON rendering,
so at no point is the whole list held in memory.  Both are committed
together and served from disk until they are older than the TTL.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxypypi.cache.storage import Storage, write_all
from proxypypi.simple import render
from proxypypi.simple.negotiate import HTML, JSON_V1
from proxypypi.simple.parse import ProjectListParser, parse_project_list_json
from proxypypi.upstream.fetch import BodyReceiver, FetchError, describe_failure, header, request
from proxypypi.upstream.member import Upstream
from proxypypi.upstream.pages import UpstreamUnavailable
from proxypypi.upstream.pool import Pool
from proxypypi.waiting import SingleFlight

LIST_ACCEPT = f"{HTML}, {JSON_V1};q=0.1".encode()


@attrs.define(eq=False)
class _Writer:
    """
    Both renderings of the list, growing side by side in partial files.
    """

    storage: Storage
    html: list[bytes] = attrs.field(factory=list)
    json: list[bytes] = attrs.field(factory=list)
    count: int = 0
    _files: list[tuple[int, str]] = attrs.field(factory=list)

    def open(self) -> None:
        self._files = [self.storage.open_partial(), self.storage.open_partial()]
        self._write(render.project_list_html_head(), render.project_list_json_head())

    def _write(self, html: bytes, json: bytes) -> None:
        for (fd, _), data in zip(self._files, (html, json), strict=True):
            write_all(fd, data)

    def add(self, names: list[str]) -> None:
        if not names:
            return
        html = b"".join(render.project_list_html_entry(n) for n in names)
        json = b"".join(
            render.project_list_json_entry(n, first=(self.count + i == 0))
            for i, n in enumerate(names)
        )
        self.count += len(names)
        self._write(html, json)

    def finish(self, html_path: str, json_path: str) -> None:
        """
        Close both files and move them into place.  Blocking.
        """
        self._write(render.project_list_html_tail(), render.project_list_json_tail())
        for (fd, partial), final in zip(self._files, (html_path, json_path), strict=True):
            os.fsync(fd)
            os.close(fd)
            os.replace(partial, final)
        self._files = []

    def discard(self) -> None:
        for fd, partial in self._files:
            self.storage.discard(fd, partial)
        self._files = []


@attrs.define
class ProjectList:
    """
    The cached project list and its refresh.
    """

    pool: Pool
    storage: Storage
    clock: IReactorTime
    ttl: float = 3600.0
    max_json_bytes: int = 256 * 1024 * 1024
    offline: bool = False
    log = Logger()
    _refreshing: SingleFlight[str, None] = attrs.field(factory=SingleFlight)
    _merged_key: tuple[int, int, tuple[str, ...]] | None = None

    def path(self, media_type: str) -> str:
        suffix = "json" if media_type == JSON_V1 else "html"
        # Project names never start with "_", so these cannot collide.
        return os.path.join(self.storage.pages_dir, f"_index.{suffix}")

    def _age(self) -> float | None:
        try:
            return self.clock.seconds() - os.stat(self.path(JSON_V1)).st_mtime
        except OSError:
            return None

    async def current(self, media_type: str, private: Sequence[str] = ()) -> tuple[str, str]:
        """
        The list as ``media_type``, with the private project names
        ``private`` listed too (PEP 503: every project): fetched now when
        none is stored, refreshed in the background when stale.

        :returns: the path of the file to send (it may be missing, when the
            list is being replaced or the proxy is offline without one), and
            the cache result (``hit``, ``stale`` or ``miss``).
        :raises FetchError: when none is stored and no upstream answered.
        """
        age = None if self.offline else self._age()
        if not self.offline and age is None:
            cache = "miss"
            await self._refresh()
        elif age is not None and age >= self.ttl:
            cache = "stale"
            self._refresh().addErrback(lambda _: None)
        else:
            cache = "hit"
        path = self.path(media_type)
        if private and os.path.exists(path):
            path = await self._with_private(media_type, tuple(private))
        return path, cache

    async def _with_private(self, media_type: str, private: tuple[str, ...]) -> str:
        """
        The path of the upstream list plus the private names it lacks,
        rebuilt (off the reactor thread) whenever either changes.
        """
        st = os.stat(self.path(HTML))
        key = (st.st_mtime_ns, st.st_size, private)
        merged = self.merged_path(media_type)
        if self._merged_key != key or not os.path.exists(merged):
            await self.storage.run(_merge_private, self, private)
            self._merged_key = key
        return merged

    def merged_path(self, media_type: str) -> str:
        suffix = "json" if media_type == JSON_V1 else "html"
        return os.path.join(self.storage.pages_dir, f"_index+private.{suffix}")

    def _refresh(self) -> Deferred[None]:
        return self._refreshing.run("list", lambda: Deferred.fromCoroutine(self._fetch()))

    async def _fetch(self) -> None:
        errors = []
        for member in self.pool.in_order():
            try:
                count = await self._fetch_from(member)
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
        raise UpstreamUnavailable("; ".join(errors))

    async def _fetch_from(self, member: Upstream) -> int:
        response = await request(
            member.page_agent,
            self.clock,
            member.url,
            {b"accept": LIST_ACCEPT},
            member.config.first_byte_timeout,
        )
        if response.code != 200:
            raise FetchError(f"HTTP {response.code}")
        writer = _Writer(self.storage)
        writer.open()
        try:
            is_json = (header(response, b"content-type") or "").startswith(JSON_V1)
            if is_json:
                body = bytearray()

                def on_data(data: bytes) -> None:
                    body.extend(data)
                    if len(body) > self.max_json_bytes:
                        raise FetchError("project list too large")

            else:
                parser = ProjectListParser()

                def on_data(data: bytes) -> None:
                    writer.add(parser.feed(data))

            receiver = BodyReceiver(on_data, self.clock, self.pool.idle_timeout)
            response.deliverBody(receiver)
            await receiver.done
            writer.add(parse_project_list_json(bytes(body)) if is_json else parser.close())
            await self.storage.run(writer.finish, self.path(HTML), self.path(JSON_V1))
        except BaseException:
            writer.discard()
            raise
        return writer.count


def _merge_private(project_list: ProjectList, private: tuple[str, ...]) -> None:
    """
    Write both merged lists: the stored upstream list with the private
    names it does not already hold appended before its end.  The upstream
    list is read through mmap and copied by the kernel, never loaded whole.
    Blocking.
    """
    html_path = project_list.path(HTML)
    with open(html_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        missing = [n for n in private if mm.find(b'href="' + n.encode() + b'/"') < 0]
        empty = mm.size() == len(render.project_list_html_head() + render.project_list_html_tail())
    for media_type, tail, entries in (
        (
            HTML,
            render.project_list_html_tail(),
            [render.project_list_html_entry(n) for n in missing],
        ),
        (
            JSON_V1,
            render.project_list_json_tail(),
            [
                render.project_list_json_entry(n, first=empty and i == 0)
                for i, n in enumerate(missing)
            ],
        ),
    ):
        source = project_list.path(media_type)
        target = project_list.merged_path(media_type)
        fd, partial = project_list.storage.open_partial()
        try:
            with open(source, "rb") as f:
                length = os.fstat(f.fileno()).st_size - len(tail)
                offset = 0
                while offset < length:
                    offset += os.sendfile(fd, f.fileno(), offset, length - offset)
            write_all(fd, b"".join(entries) + tail)
            os.fsync(fd)
        except BaseException:
            project_list.storage.discard(fd, partial)
            raise
        os.close(fd)
        os.replace(partial, target)

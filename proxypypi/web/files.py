# -*- test-case-name: tests.test_web -*-
"""
``/files/<project>/<filename>`` and ``<filename>.metadata``.

A complete file is served from disk.  Anything else must be listed on the
project's page: the page gives the only URL it may be fetched from, and
the hashes it must match.  Clients are answered as soon as the upstream's
headers arrive and read the file while it downloads.

A file the policy withholds (`proxypypi.policy`) is refused with 403 and
the reason before anything else happens: never fetched, and never served
from disk, whenever it was stored.
"""

from __future__ import annotations

from typing import cast

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET, Request

from proxypypi.cache.complete import CompleteFile
from proxypypi.cache.coremetadata import WheelMetadataError, extract_metadata
from proxypypi.cache.download import MAX_METADATA_BYTES
from proxypypi.cache.storage import FileKey
from proxypypi.cache.transfer import FileNotFoundUpstream
from proxypypi.interfaces import IFileSource
from proxypypi.internals import request_gone
from proxypypi.names import METADATA_SUFFIX, is_safe_filename, normalize
from proxypypi.policy.decision import Withheld
from proxypypi.simple.model import DistFile
from proxypypi.upstream.fetch import FetchError
from proxypypi.upstream.origin import Origin
from proxypypi.upstream.pages import ProjectNotFound
from proxypypi.web.deferred import render_async
from proxypypi.web.errors import Page, error
from proxypypi.web.fileresponse import respond_with_file
from proxypypi.web.privatefiles import respond_private_file, upstream_file_cache_control
from proxypypi.web.proxy import Proxy
from proxypypi.web.site import facts_of

DIST_TYPE = "application/octet-stream"
METADATA_TYPE = "text/plain; charset=utf-8"


def _split(filename: str) -> tuple[str, bool]:
    """
    The distribution file a request is about, and whether it asks for that
    file's core metadata.
    """
    if filename.endswith(METADATA_SUFFIX):
        return filename[: -len(METADATA_SUFFIX)], True
    return filename, False


def _intact(stored: CompleteFile, f: DistFile, metadata: bool) -> bool:
    """
    Whether a stored file can be what the page lists: its size matches
    (an empty or truncated file left by a foreign hand is never served).
    Hashes were checked when it was stored; ``proxypypi-admin verify``
    re-checks them.
    """
    if metadata or f.size is None:
        return stored.size > 0
    return stored.size == f.size


def _etag(f: DistFile | None, metadata: bool) -> str | None:
    if f is None:
        return None
    digest = f.metadata_sha256 if metadata else f.sha256
    return f'"{digest}"' if digest else None


class FilesResource(Page):
    """
    The ``/files/`` tree: exactly two segments below it.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render_HEAD(self, request: IRequest) -> bytes | int:
        return self.render_GET(request)

    def render_GET(self, request: IRequest) -> bytes | int:
        if len(request.postpath) != 2:
            return error(request, 404, "no such file; file URLs are /files/<project>/<filename>")
        try:
            project, filename = (s.decode("utf-8") for s in request.postpath)
        except UnicodeDecodeError:
            return error(request, 404, "no such file")
        if normalize(project) != project or not is_safe_filename(filename):
            return error(request, 404, "no such file")
        dist, metadata = _split(filename)
        content_type = METADATA_TYPE if metadata else DIST_TYPE
        if self.proxy.private.claims(project, dist):
            # Private files never come from an upstream (proxypypi.private.store).
            facts_of(request).note("private")
            refused = self._refused(request, self.proxy.private.verdict(project, dist))
            if refused is not None:
                return refused
            return respond_private_file(request, self.proxy, project, filename, content_type)
        # Before looking at the disk: a file being served is never evicted.
        done = self.proxy.usage.reading(FileKey(project, filename))
        cast(Request, request).notifyFinish().addBoth(lambda _: done())
        complete = CompleteFile.at(self.proxy.storage.file_path(project, filename))
        listed = self.proxy.pages.listed(project, dist) if complete is not None else None
        if complete is not None and listed is not None and _intact(complete, listed[1], metadata):
            refused = self._judged(request, listed[1], listed[0].held.quarantine)
            if refused is not None:
                return refused
            facts_of(request).note("hit")
            return self._send(request, complete, listed[1], metadata)

        async def fetch() -> bytes | int:
            return await self._fetch(request, project, filename)

        return render_async(request, fetch)

    async def _fetch(self, request: IRequest, project: str, filename: str) -> bytes | int:
        if self.proxy.config.offline:
            return error(request, 404, f"{filename} is not stored here, and the proxy is offline")
        dist, metadata = _split(filename)
        name = normalize(project)
        assert name is not None
        try:
            facts, f = await self.proxy.pages.entry(name, dist)
        except ProjectNotFound:
            return error(request, 404, f"project {project} not found on any upstream")
        except FetchError as e:
            return error(request, 502, f"no upstream answered for {project}: {e}")
        if f is None or not f.url:
            return error(request, 404, f"{dist} is not listed on the page of {project}")
        refused = self._judged(request, f, facts.held.quarantine)
        if refused is not None:
            return refused
        if metadata and not f.core_metadata:
            return error(request, 404, f"the index offers no core metadata for {dist}")
        if metadata:
            await self._metadata_from_stored_wheel(project, dist, f)
        complete = CompleteFile.at(self.proxy.storage.file_path(project, filename))
        if complete is not None:
            if _intact(complete, f, metadata):
                facts_of(request).note("hit")
                return self._send(request, complete, f, metadata)
            self.log.warn(
                "stored {filename} has {size} bytes, not what its page says; fetching it again",
                filename=filename,
                size=complete.size,
            )
        key = FileKey(project, filename)
        joined = self.proxy.downloads.running(key) is not None
        facts_of(request).note("join" if joined else "miss", facts.source)
        download = self.proxy.downloads.get(
            key,
            self._origins(facts.source, f, metadata),
            _hashes(f, metadata),
            None if metadata else f.size,
            seen=None if complete is None else complete.identity,
            limit=MAX_METADATA_BYTES if metadata else self.proxy.config.max_file_size,
        )
        try:
            await download.wait_for_headers()
        except FileNotFoundUpstream:
            return error(request, 404, f"the upstream no longer has {filename}")
        except FetchError as e:
            return error(request, 502, f"cannot fetch {filename}: {e}")
        except OSError as e:
            return error(request, 507, f"cannot store {filename}: {e.strerror}")
        if request_gone(request):
            return NOT_DONE_YET
        return self._send(request, download, f, metadata)

    def _judged(self, request: IRequest, f: DistFile, quarantine: str | None) -> bytes | None:
        """
        `_refused`, for a file of an upstream's page.
        """
        project = normalize(request.postpath[0].decode("utf-8"))
        assert project is not None
        now = self.proxy.clock.seconds()
        return self._refused(request, self.proxy.policy.rules.verdict(project, f, now, quarantine))

    def _refused(self, request: IRequest, withheld: Withheld | None) -> bytes | None:
        """
        The 403 refusing a withheld file, or ``None`` when it is served
        (reporting only, the refusal is logged and counted, not made).
        """
        if withheld is None:
            return None
        self.proxy.policy.ledger.refuse(withheld.reason)
        if self.proxy.policy.rules.report_only:
            self.log.info("policy, report only: would refuse {why}", why=withheld.message)
            return None
        return error(request, 403, withheld.message)

    async def _metadata_from_stored_wheel(self, project: str, dist: str, f: DistFile) -> None:
        """
        Take the ``.metadata`` asked for out of the wheel when it is stored
        here (and its METADATA has the hash the page promises) rather than
        fetch it: so it is again after an eviction took it, and an
        upstream's own costs no request.
        """
        if CompleteFile.at(self.proxy.storage.file_path(project, dist + METADATA_SUFFIX)):
            return
        path = self.proxy.storage.file_path(project, dist)
        wheel = CompleteFile.at(path)
        if wheel is None or not dist.endswith(".whl") or not _intact(wheel, f, False):
            return
        try:
            await self.proxy.storage.run(extract_metadata, path, dist, f.metadata_sha256)
        except (WheelMetadataError, OSError) as e:
            self.log.info("{file}: metadata fetched, not taken out: {error}", file=dist, error=e)

    def _send(
        self, request: IRequest, source: IFileSource, f: DistFile, metadata: bool
    ) -> bytes | int:
        return respond_with_file(
            request,
            source,
            etag=_etag(f, metadata),
            content_type=METADATA_TYPE if metadata else DIST_TYPE,
            clock=self.proxy.clock,
            cache_control=upstream_file_cache_control(self.proxy),
        )

    def _origins(self, source: str, f: DistFile, metadata: bool) -> list[Origin]:
        url = f.url + (METADATA_SUFFIX if metadata else "")
        return self.proxy.pool.origins(source, url)


def _hashes(f: DistFile, metadata: bool) -> dict[str, str]:
    if not metadata:
        return dict(f.hashes)
    digest = f.metadata_sha256
    return {"sha256": digest} if digest else {}

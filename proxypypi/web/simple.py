# -*- test-case-name: tests.test_web -*-
"""
``/simple/`` and ``/simple/<name>/``: the index pages, negotiated.
"""

from __future__ import annotations

import functools

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from proxypypi.cache.answers import Answer
from proxypypi.cache.complete import CompleteFile
from proxypypi.cache.forms import Form, Rendered, file_etag
from proxypypi.names import normalize
from proxypypi.policy.decision import Held
from proxypypi.simple.negotiate import negotiate
from proxypypi.upstream.fetch import FetchError
from proxypypi.upstream.pages import ProjectNotFound
from proxypypi.web.deferred import render_async
from proxypypi.web.errors import ErrorResource, Page, error, redirect
from proxypypi.web.fileresponse import respond_with_file
from proxypypi.web.privatefiles import cache_scope, page_cache_control
from proxypypi.web.proxy import Proxy
from proxypypi.web.ranges import if_none_match_matches
from proxypypi.web.site import facts_of

VARY = b"Accept, Accept-Encoding"

#: How many files of the page the policy withheld (sent while a policy is
#: in force), and, reporting only, how many it would have.
WITHHELD = b"x-proxypypi-policy-withheld"
WOULD_WITHHOLD = b"x-proxypypi-policy-would-withhold"


def _negotiate(request: IRequest) -> str | None:
    """
    The media type to answer with: a ``?format=`` media type, which the
    public index honours in place of ``Accept`` (for browsers and
    scripts), else the ``Accept`` header.  A ``+`` left unescaped in the
    query reads as a space, which no media type holds: it is put back.
    """
    chosen = request.args.get(b"format") if request.args else None
    accept = chosen[0].replace(b" ", b"+") if chosen else request.getHeader(b"accept")
    return negotiate(accept.decode("latin-1") if accept is not None else None)


def _not_acceptable(request: IRequest) -> bytes:
    request.setHeader(b"vary", VARY)
    return error(
        request,
        406,
        "none of the requested media types is served here; ask for "
        "application/vnd.pypi.simple.v1+json or text/html",
    )


@functools.lru_cache(maxsize=64)
def accepts_gzip(header: bytes | None) -> bool:
    """
    Whether an ``Accept-Encoding`` header admits gzip (``q=0`` refuses it).
    Remembered: clients send a handful of distinct values, and this is
    asked on every page request.
    """
    if not header:
        return False
    for part in header.decode("latin-1").lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


class SimpleResource(Page):
    """
    ``/simple/``: the project list; its children are project pages.
    """

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"" and not request.postpath:
            return self
        return ProjectResource(self.proxy, path)

    def render_GET(self, request: IRequest) -> bytes | int:
        if not request.path.endswith(b"/"):
            return redirect(request, "simple/")
        media_type = _negotiate(request)
        if media_type is None:
            return _not_acceptable(request)
        return render_async(request, lambda: self._send_list(request, media_type))

    async def _send_list(self, request: IRequest, media_type: str) -> bytes | int:
        project_list = self.proxy.project_list
        form = Form.of(media_type, accepts_gzip(request.getHeader(b"accept-encoding")))
        try:
            source, cache = await project_list.current(form, self.proxy.private.names())
        except FetchError as e:
            facts_of(request).note("miss")
            return error(request, 502, f"no upstream answered for the project list: {e}")
        facts_of(request).note(cache)
        if source is None:
            if project_list.offline:
                return error(request, 404, "no project list is stored, and the proxy is offline")
            return error(request, 503, "the project list is being rebuilt; try again")
        request.setHeader(b"vary", VARY)
        if form.gzipped:
            request.setHeader(b"content-encoding", b"gzip")
        etag = None
        if isinstance(source, CompleteFile):
            etag = file_etag(source.size, source.mtime_ns, source.identity[1])
        return respond_with_file(
            request,
            source,
            etag=etag,
            content_type=media_type,
            clock=self.proxy.clock,
            cache_control=f"max-age={self.proxy.config.client_max_age}, "
            f"{cache_scope(self.proxy)}",
        )


class ProjectResource(Page):
    """
    ``/simple/<name>/``.
    """

    def __init__(self, proxy: Proxy, raw_name: bytes) -> None:
        super().__init__()
        self.proxy = proxy
        self.raw_name = raw_name

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"" and not request.postpath:
            return self
        return ErrorResource(404, "no such page")

    def render_GET(self, request: IRequest) -> bytes | int:
        raw = self.raw_name.decode("utf-8", "replace")
        name = normalize(raw)
        if name is None:
            return error(request, 404, f"{raw!r} is not a valid project name")
        trailing = request.path.endswith(b"/")
        if raw != name or not trailing:
            return redirect(request, f"../{name}/" if trailing else f"{name}/")
        media_type = _negotiate(request)
        if media_type is None:
            return _not_acceptable(request)

        form = Form.of(media_type, accepts_gzip(request.getHeader(b"accept-encoding")))
        private = self.proxy.private
        pages = self.proxy.pages
        if private.is_private(name):
            # Private projects shadow every upstream (proxypypi.private.store).
            facts_of(request).note("private")
            forms = private.forms_ready(name)
            if forms is not None:
                return self._send(request, name, media_type, form, forms.get(form), forms.held)

            async def merged() -> bytes:
                found = await private.forms_for(name, pages)
                return self._send(request, name, media_type, form, found.get(form), found.held)

            return render_async(request, merged)
        ready = pages.answer_ready(name, form)
        if ready is not None:
            return self._send_answer(request, ready, media_type)

        async def answer() -> bytes | int:
            try:
                found = await pages.answer(name, form)
            except ProjectNotFound:
                return error(request, 404, f"project {name} not found on any upstream")
            except FetchError as e:
                return error(request, 502, f"no upstream answered for {name}: {e}")
            return self._send_answer(request, found, media_type)

        return render_async(request, answer)

    def _send_answer(self, request: IRequest, answer: Answer, media_type: str) -> bytes | int:
        """
        Answer with a form of a page from the upstreams: from its file (or
        its bytes, when the disk would not take them).
        """
        facts = answer.facts
        if answer.cache == "hit":
            facts_of(request).note("hit")
        else:
            facts_of(request).note(answer.cache, facts.source)
        if answer.body is not None:
            rendered = Rendered(answer.body, answer.etag)
            return self._send(request, facts.name, media_type, answer.form, rendered, facts.held)
        assert answer.source is not None
        if facts.held.empty_reason is not None:
            return self._emptied(request, facts.held)
        self._headers(request, facts.name, media_type, answer.form, facts.held)
        return respond_with_file(
            request,
            answer.source,
            etag=answer.etag,
            content_type=media_type,
            clock=self.proxy.clock,
            cache_control=page_cache_control(self.proxy, facts.name),
        )

    def _headers(
        self, request: IRequest, name: str, media_type: str, form: Form, held: Held
    ) -> None:
        request.setHeader(b"content-type", media_type.encode())
        request.setHeader(b"vary", VARY)
        request.setHeader(b"cache-control", page_cache_control(self.proxy, name).encode())
        if form.gzipped:
            request.setHeader(b"content-encoding", b"gzip")
        if self.proxy.policy.rules.active:
            request.setHeader(WITHHELD, b"%d" % held.withheld)
            if not held.enforced:
                request.setHeader(WOULD_WITHHOLD, b"%d" % held.total)

    def _emptied(self, request: IRequest, held: Held) -> bytes:
        """
        Answer for a page whose every file the policy withheld: a 404
        saying why, never an empty page that would leave an installer
        guessing.
        """
        request.setHeader(WITHHELD, b"%d" % held.withheld)
        return error(request, 404, held.empty_reason or "every file is withheld")

    def _send(
        self,
        request: IRequest,
        name: str,
        media_type: str,
        form: Form,
        rendered: Rendered,
        held: Held,
    ) -> bytes:
        """
        Answer with a form held in memory (or 304).
        """
        if held.empty_reason is not None:
            return self._emptied(request, held)
        self._headers(request, name, media_type, form, held)
        request.setHeader(b"etag", rendered.etag.encode())
        cached_tags = request.getHeader(b"if-none-match")
        if cached_tags is not None and if_none_match_matches(
            cached_tags.decode("latin-1"), rendered.etag
        ):
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-length", b"%d" % len(rendered.body))
        return rendered.body

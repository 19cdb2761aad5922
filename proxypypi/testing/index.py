# -*- test-case-name: tests.test_testing -*-
"""
`FakeIndex`: an in-memory upstream package index served by
``twisted.web``.  It speaks both serializations of the simple repository
API and can be told to misbehave (`proxypypi.testing.responses.Fault`).

All timing goes through an injected reactor so unit tests can drive the
fake with a `twisted.internet.task.Clock`; the global reactor is never
imported.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
from email.parser import BytesHeaderParser
from urllib.parse import quote, unquote_to_bytes

import attrs
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorTCP,
    IReactorTime,
)
from twisted.web import server
from twisted.web.resource import IResource, Resource

from proxypypi.names import METADATA_SUFFIX
from proxypypi.testing.dists import Dist
from proxypypi.testing.responses import (
    Exchange,
    Fault,
    Response,
    etag_matches,
    file_response,
    text_response,
)

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html; charset=utf-8"
_JSON_ACCEPTED = {JSON_TYPE, "application/vnd.pypi.simple.latest+json"}


@attrs.frozen
class RecordedRequest:
    """
    What the fake index saw of one request; ``path`` is percent-decoded.
    """

    method: str
    path: str
    range: str | None = None
    accept: str | None = None
    if_none_match: str | None = None
    if_range: str | None = None
    user_agent: str | None = None
    accept_encoding: str | None = None


@attrs.frozen
class _Listed:
    """
    One file as the fake index lists it.
    """

    dist: Dist
    yanked: bool | str
    upload_time: str | None
    requires_python: str | None
    offer_metadata: bool


@attrs.define
class _Project:
    name: NormalizedName
    files: dict[str, _Listed] = attrs.field(factory=dict)
    last_serial: int = 0
    #: PEP 792 status and reason, listed on the JSON page.
    status: tuple[str, str | None] | None = None



def _wants_json(accept: str | None) -> bool:
    """
    Whether the client lists the JSON serialization with a non-zero q.
    """
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in _JSON_ACCEPTED:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


@attrs.define(eq=False)
class FakeIndex:
    """
    An in-memory upstream index with failure injection.

    Files are added as `Dist` values and served under ``/files/``; project
    pages under ``/simple/<normalized>/`` list them in the JSON (PEP 691,
    api-version 1.1) or HTML (PEP 503) form, chosen by ``Accept``.

    Everything below is a knob a test may set at any time:

    :ivar formats: the serializations the fake speaks (``"json"``,
        ``"html"``); when only one is supported it is answered whatever the
        client asks, as old or minimal indexes do.
    :ivar include_size: list ``size`` in JSON (and claim api-version 1.1;
        without it the page claims 1.0).
    :ivar absolute_urls: list files as ``http://<Host>/files/...`` rather
        than ``../../files/...``.
    :ivar gzip: answer pages gzip-encoded to clients that accept it, as
        real indexes do (body faults then apply to the encoded bytes).
    :ivar latency: seconds before the response headers of every request.
    :ivar throttle: body bytes per second, sent in ``chunk_size`` chunks.
    :ivar fault: the default `Fault` for every request.
    :ivar fault_for: per-path faults (keyed by decoded request path, such as
        ``/files/x-1.0-py3-none-any.whl``); they win over ``fault``.
    :ivar requests: every request received, in order.
    :ivar serial: the global change serial; each `add` or `remove`
        increments it and stamps the project's ``last-serial`` with it.
    """

    reactor: IReactorTime
    formats: set[str] = attrs.field(factory=lambda: {"json", "html"})
    include_size: bool = True
    absolute_urls: bool = False
    gzip: bool = False
    latency: float = 0.0
    throttle: int | None = None
    chunk_size: int = 16 * 1024
    fault: Fault | None = None
    fault_for: dict[str, Fault] = attrs.field(factory=dict)
    requests: list[RecordedRequest] = attrs.field(factory=list)
    serial: int = 0
    _projects: dict[NormalizedName, _Project] = attrs.field(factory=dict, init=False)

    # -- content ------------------------------------------------------------

    def add(
        self,
        dist: Dist,
        *,
        yanked: bool | str = False,
        upload_time: str | None = None,
        requires_python: str | None = None,
        offer_metadata: bool = True,
    ) -> None:
        """
        List ``dist`` on its project's page (creating the project), or
        replace the listing of a file with the same name (to yank it, say).

        :param upload_time: PEP 700 ``upload-time``; omitted when ``None``.
        :param requires_python: defaults to the wheel's own
            ``Requires-Python``, as the reference index derives it.
        :param offer_metadata: advertise and serve the PEP 658 ``.metadata``
            file (only possible for wheels).
        """
        if requires_python is None and dist.metadata is not None:
            headers = BytesHeaderParser().parsebytes(dist.metadata)
            requires_python = headers.get("Requires-Python")
        project = self._projects.setdefault(dist.project, _Project(dist.project))
        project.files[dist.filename] = _Listed(
            dist,
            yanked,
            upload_time,
            requires_python,
            offer_metadata and dist.metadata is not None,
        )
        self._bump(project)

    def remove(self, project: str, filename: str | None = None) -> None:
        """
        Stop listing and serving one file, or (``filename`` ``None``) the
        whole project, which then answers 404.

        :raises KeyError: if there is no such project or file.
        """
        name = canonicalize_name(project)
        if filename is None:
            del self._projects[name]
            self.serial += 1
            return
        del self._projects[name].files[filename]
        self._bump(self._projects[name])

    def set_status(self, project: str, status: str, reason: str | None = None) -> None:
        """
        Give a project a PEP 792 status (``quarantined``, ``archived``,
        ...), listed on its JSON page.

        :raises KeyError: if there is no such project.
        """
        listed = self._projects[canonicalize_name(project)]
        listed.status = (status, reason)
        self._bump(listed)

    def count(self, path_prefix: str, method: str | None = None) -> int:
        """
        How many recorded requests had a path starting with ``path_prefix``
        (and the given ``method``, if any).
        """
        return sum(
            1
            for r in self.requests
            if r.path.startswith(path_prefix) and (method is None or r.method == method)
        )

    def resource(self) -> IResource:
        """
        The root resource: mount it at ``/`` (pages are at ``/simple/``).
        """
        return _IndexResource(self)

    def _bump(self, project: _Project) -> None:
        self.serial += 1
        project.last_serial = self.serial

    def _find(self, filename: str) -> _Listed | None:
        for project in self._projects.values():
            listed = project.files.get(filename)
            if listed is not None:
                return listed
        return None

    def _take_fault(self, path: str) -> Fault | None:
        for fault in (self.fault_for.get(path), self.fault):
            if fault is None or fault.times == 0:
                continue
            if fault.times is not None:
                fault.times -= 1
            return fault
        return None

    # -- rendering ----------------------------------------------------------

    def _route(self, request: server.Request, path: str) -> Response:
        if path == "/simple":
            return text_response(301, "moved", Location="/simple/")
        if path == "/simple/":
            return self._page(request, None)
        if path.startswith("/simple/"):
            name, slash, rest = path[len("/simple/") :].partition("/")
            if rest or not name:
                return text_response(404, "not found")
            normalized = canonicalize_name(name)
            if normalized != name or not slash:
                return text_response(301, "moved", Location=f"/simple/{normalized}/")
            project = self._projects.get(normalized)
            if project is None:
                return text_response(404, "no such project")
            return self._page(request, project)
        if path.startswith("/files/"):
            filename = path[len("/files/") :]
            listed = self._find(filename)
            if listed is not None:
                return file_response(request, listed.dist.data, listed.dist.sha256)
            if filename.endswith(METADATA_SUFFIX):
                listed = self._find(filename.removesuffix(METADATA_SUFFIX))
                if listed is not None and listed.offer_metadata:
                    metadata = listed.dist.metadata or b""
                    return file_response(request, metadata, hashlib.sha256(metadata).hexdigest())
        return text_response(404, "not found")

    def _page(self, request: server.Request, project: _Project | None) -> Response:
        json_wanted = _wants_json(request.getHeader("accept"))
        as_json = "json" in self.formats and (json_wanted or "html" not in self.formats)
        serial = self.serial if project is None else project.last_serial
        if project is None:
            body = self._list_json(serial) if as_json else self._list_html(serial)
        elif as_json:
            body = self._project_json(request, project)
        else:
            body = self._project_html(request, project)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {
            "Content-Type": JSON_TYPE if as_json else HTML_TYPE,
            "Vary": "Accept",
            "ETag": etag,
            "Cache-Control": "max-age=600, public",
            "X-PyPI-Last-Serial": str(serial),
        }
        inm = request.getHeader("if-none-match")
        if inm is not None and etag_matches(inm, etag):
            return Response(304, headers)
        if self.gzip and "gzip" in (request.getHeader("accept-encoding") or ""):
            headers["Content-Encoding"] = "gzip"
            body = gzip.compress(body, mtime=0)
        return Response(200, headers, body)

    def _meta(self, serial: int) -> dict[str, object]:
        return {"api-version": "1.1" if self.include_size else "1.0", "_last-serial": serial}

    def _list_json(self, serial: int) -> bytes:
        projects = [{"name": name} for name in sorted(self._projects)]
        return json.dumps({"meta": self._meta(serial), "projects": projects}).encode()

    def _list_html(self, serial: int) -> bytes:
        links = "".join(f'    <a href="{n}/">{n}</a><br />\n' for n in sorted(self._projects))
        return _html_doc("Simple index", links, serial)

    def _file_url(self, request: server.Request, filename: str) -> str:
        quoted = quote(filename, safe="+!")
        if self.absolute_urls:
            host = request.getHeader("host") or f"127.0.0.1:{request.getHost().port}"
            return f"http://{host}/files/{quoted}"
        return f"../../files/{quoted}"

    def _versions(self, project: _Project) -> list[str]:
        versions = {Version(f.dist.version) for f in project.files.values()}
        return [str(v) for v in sorted(versions)]

    def _project_json(self, request: server.Request, project: _Project) -> bytes:
        files = []
        for f in project.files.values():
            entry: dict[str, object] = {
                "filename": f.dist.filename,
                "url": self._file_url(request, f.dist.filename),
                "hashes": {"sha256": f.dist.sha256},
                "requires-python": f.requires_python,
                "yanked": f.yanked,
            }
            core: object = {"sha256": f.dist.metadata_sha256} if f.offer_metadata else False
            entry["core-metadata"] = core
            entry["data-dist-info-metadata"] = core
            if self.include_size:
                entry["size"] = len(f.dist.data)
            if f.upload_time is not None:
                entry["upload-time"] = f.upload_time
            files.append(entry)
        page = {
            "meta": self._meta(project.last_serial),
            "name": project.name,
            "versions": self._versions(project),
            "files": files,
        }
        if project.status is not None:
            status, reason = project.status
            page["project-status"] = {"status": status} if reason is None else {
                "status": status, "reason": reason}  # fmt: skip
        return json.dumps(page).encode()

    def _project_html(self, request: server.Request, project: _Project) -> bytes:
        links = []
        for f in project.files.values():
            attrs_ = [
                f'href="{html.escape(self._file_url(request, f.dist.filename))}'
                f'#sha256={f.dist.sha256}"'
            ]
            if f.requires_python is not None:
                attrs_.append(f'data-requires-python="{html.escape(f.requires_python)}"')
            if f.yanked is not False:
                reason = f.yanked if isinstance(f.yanked, str) else ""
                attrs_.append(f'data-yanked="{html.escape(reason)}"')
            if f.offer_metadata:
                value = f"sha256={f.dist.metadata_sha256}"
                attrs_.append(f'data-dist-info-metadata="{value}"')
                attrs_.append(f'data-core-metadata="{value}"')
            text = html.escape(f.dist.filename)
            links.append(f"    <a {' '.join(attrs_)}>{text}</a><br />\n")
        return _html_doc(f"Links for {project.name}", "".join(links), project.last_serial)


def _html_doc(title: str, links: str, serial: int) -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>{title}</title>\n  </head>\n  <body>\n"
        f"    <h1>{title}</h1>\n{links}  </body>\n</html>\n<!--SERIAL {serial}-->\n"
    ).encode()




class _IndexResource(Resource):
    """
    The fake index's single leaf resource: it sees every path, so faults,
    latency and recording apply uniformly.
    """

    isLeaf = True

    def __init__(self, index: FakeIndex) -> None:
        super().__init__()
        self._index = index

    def render(self, request: server.Request) -> int:
        index = self._index
        path = unquote_to_bytes(request.path).decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace")
        index.requests.append(
            RecordedRequest(
                method,
                path,
                range=request.getHeader("range"),
                accept=request.getHeader("accept"),
                if_none_match=request.getHeader("if-none-match"),
                if_range=request.getHeader("if-range"),
                user_agent=request.getHeader("user-agent"),
                accept_encoding=request.getHeader("accept-encoding"),
            )
        )
        fault = index._take_fault(path)
        exchange = Exchange(request, index.reactor, index.throttle, index.chunk_size)
        request.notifyFinish().addErrback(exchange.lost)
        if fault is not None and fault.hang:
            return server.NOT_DONE_YET
        if index.latency > 0:
            exchange.later(index.latency, lambda: self._respond(exchange, path, method, fault))
        else:
            self._respond(exchange, path, method, fault)
        return server.NOT_DONE_YET

    def _respond(self, exchange: Exchange, path: str, method: str, fault: Fault | None) -> None:
        request = exchange.request
        if method not in ("GET", "HEAD"):
            response = text_response(405, "method not allowed", Allow="GET, HEAD")
        elif fault is not None and fault.status is not None:
            response = text_response(fault.status, f"injected fault: {fault.status}")
        else:
            response = self._index._route(request, path)
        exchange.deliver(response, method, fault)


async def serve(reactor: IReactorTCP, resource: IResource) -> tuple[IListeningPort, str]:
    """
    Serve ``resource`` on an ephemeral loopback port.

    :return: the listening port (stop it with ``stopListening``) and the
        base URL, ``http://127.0.0.1:<port>/``.
    """
    site = server.Site(resource, reactor=reactor)
    site.noisy = False
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    return port, f"http://127.0.0.1:{port.getHost().port}/"

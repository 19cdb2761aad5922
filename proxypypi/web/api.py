# -*- test-case-name: tests.test_upload -*-
"""
A small JSON API to manage private files, for the same users who may
upload::

    GET    /api/private/<project>                    the project's files and owners
    POST   /api/private/<project>/<filename>/yank    {"reason": "..."} optional
    POST   /api/private/<project>/<filename>/unyank
    DELETE /api/private/<project>/<filename>         remove the file for good
    DELETE /api/private/<project>                    release a name with no files left
    PUT    /api/private/<project>/owners             {"owners": ["alice", "bob"]}

Changes are for the project's owners and the admins (403 for anyone
else); any user may list.  Successes answer JSON; refusals one line of
text, as everywhere else.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from proxypypi.names import normalize
from proxypypi.private.auth import User
from proxypypi.private.model import PrivateFile, UploadRejected
from proxypypi.simple.model import Yanked
from proxypypi.web.deferred import render_async
from proxypypi.web.errors import Page
from proxypypi.web.guard import answer, writer
from proxypypi.web.proxy import Proxy

_USAGE = (
    "use /api/private/<project>[/<filename>[/yank|/unyank]|/owners] "
    "(GET, POST, PUT or DELETE, with credentials)"
)

#: Owners a project may have.
MAX_OWNERS = 100


def _json(request: IRequest, data: object) -> bytes:
    body = json.dumps(data, indent=1).encode() + b"\n"
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", str(len(body)).encode())
    return body


def _file_json(project: str, f: PrivateFile) -> dict[str, object]:
    return {"project": project, **f.to_json()}


def _body(request: IRequest, example: str) -> Any:
    """
    The JSON request body (``None`` when empty).

    :raises UploadRejected: when it is not JSON.
    """
    content = getattr(request, "content", None)
    raw = content.read() if content is not None else b""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise UploadRejected(400, f"the body must be JSON like {example}") from None


def _owners(request: IRequest) -> list[str]:
    """
    The owners in the request body.

    :raises UploadRejected: when it is not ``{"owners": [names]}``.
    """
    example = '{"owners": ["alice", "bob"]}'
    doc = _body(request, example)
    owners = doc.get("owners") if isinstance(doc, dict) else None
    if (
        not isinstance(owners, list)
        or not 0 < len(owners) <= MAX_OWNERS
        or not all(isinstance(o, str) and o.strip() and ":" not in o for o in owners)
    ):
        raise UploadRejected(
            400, f"the body must be JSON like {example}: 1 to {MAX_OWNERS} user names"
        )
    return [o.strip() for o in owners]


def _reason(request: IRequest) -> Yanked:
    """
    The yank reason in the request body: ``true`` without one.

    :raises UploadRejected: when the body is not the expected JSON.
    """
    doc = _body(request, '{"reason": "..."}')
    if doc is None:
        return True
    reason = doc.get("reason") if isinstance(doc, dict) else None
    if reason is not None and not isinstance(reason, str):
        raise UploadRejected(400, "reason must be a string")
    return (reason.strip() or True) if reason else True


class PrivateApiResource(Page):
    """
    ``/api/``: everything below is handled here.
    """

    isLeaf = True

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render_GET(self, request: IRequest) -> int:
        return render_async(request, lambda: self._handle(request, "GET"))

    def render_POST(self, request: IRequest) -> int:
        return render_async(request, lambda: self._handle(request, "POST"))

    def render_DELETE(self, request: IRequest) -> int:
        return render_async(request, lambda: self._handle(request, "DELETE"))

    def render_PUT(self, request: IRequest) -> int:
        return render_async(request, lambda: self._handle(request, "PUT"))

    async def _handle(self, request: IRequest, method: str) -> bytes:
        user = await writer(self.proxy, request)
        if not isinstance(user, User):
            return user
        try:
            segments = [s.decode("utf-8") for s in request.postpath]
        except UnicodeDecodeError:
            return answer(request, 404, _USAGE)
        if segments and segments[-1] == "":
            segments.pop()
        if len(segments) < 2 or segments[0] != "private":
            return answer(request, 404, _USAGE)
        project, rest = segments[1], segments[2:]
        if normalize(project) != project:
            return answer(request, 404, f"{project!r} is not a normalized project name")
        private = self.proxy.private
        try:
            if not rest and method == "GET":
                found = private.project(project)
                if found is None:
                    raise UploadRejected(404, f"{project} is not a private project")
                files = [_file_json(project, f) for f in found.files]
                owners = list(found.owners)
                return _json(request, {"project": project, "owners": owners, "files": files})
            if not rest and method == "DELETE":
                await private.release(project, user.name)
                return _json(request, {"project": project, "released": True})
            if rest == ["owners"] and method == "PUT":
                updated = await private.set_owners(project, _owners(request), user.name)
                return _json(request, {"project": project, "owners": list(updated.owners)})
            if len(rest) == 1 and method == "DELETE":
                deleted = await private.delete(project, rest[0], user.name)
                return _json(request, {**_file_json(project, deleted), "deleted": True})
            if len(rest) == 2 and method == "POST" and rest[1] in ("yank", "unyank"):
                yanked = _reason(request) if rest[1] == "yank" else False
                changed = await private.set_yanked(project, rest[0], yanked, user.name)
                return _json(request, _file_json(project, changed))
        except UploadRejected as e:
            return answer(request, e.code, e.message)
        return answer(request, 404, _USAGE)

# -*- test-case-name: tests.test_upload -*-
"""
Serving private projects: their files from ``DATA/private/`` and the
caching headers of their pages.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from proxypypi.cache.complete import CompleteFile
from proxypypi.web.errors import error
from proxypypi.web.fileresponse import respond_with_file
from proxypypi.web.guard import cache_scope
from proxypypi.web.proxy import Proxy

_log = Logger()


def upstream_file_cache_control(proxy: Proxy) -> str:
    """
    ``Cache-Control`` of a file from an upstream: immutable, and only for
    the client's own cache when reads need credentials.
    """
    return f"{cache_scope(proxy)}, max-age=31536000, immutable"


def file_cache_control(proxy: Proxy) -> str:
    """
    Uploaded files never change under their name, unless overwriting is
    allowed: then clients must revalidate (the ETag is the sha256).
    """
    if proxy.private.allow_overwrite:
        return f"{cache_scope(proxy)}, no-cache"
    return f"{cache_scope(proxy)}, max-age=31536000, immutable"


def page_cache_control(proxy: Proxy, name: str) -> str:
    """
    ``Cache-Control`` of a project page.  A private page changes with every
    upload and yank, and installers make no request at all within
    ``max-age`` (``PROTOCOL.md`` §4 trap 13), so it is revalidated every
    time: a cheap ``304`` thanks to its ETag.
    """
    if proxy.private.is_private(name):
        return f"{cache_scope(proxy)}, no-cache"
    return f"max-age={proxy.config.client_max_age}, {cache_scope(proxy)}"


def respond_private_file(
    request: IRequest, proxy: Proxy, project: str, filename: str, content_type: str
) -> bytes | int:
    """
    Answer a file URL of a private project from private storage; ``404``
    for anything not uploaded there (no upstream is ever asked).
    """
    stored = proxy.private.stored_file(project, filename)
    complete = CompleteFile.at(stored.path) if stored is not None else None
    if stored is None or complete is None:
        if stored is not None:
            _log.error("private file {path} is listed but missing", path=stored.path)
        return error(request, 404, f"{filename} is not a file of the private project {project}")
    return respond_with_file(
        request,
        complete,
        etag=f'"{stored.sha256}"',
        content_type=content_type,
        clock=proxy.clock,
        cache_control=file_cache_control(proxy),
    )

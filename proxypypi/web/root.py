# -*- test-case-name: tests.test_web -*-
"""
The root of the resource tree.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from proxypypi.web.api import PrivateApiResource
from proxypypi.web.browse import BrowseResource
from proxypypi.web.errors import ErrorResource, Page
from proxypypi.web.files import FilesResource
from proxypypi.web.guard import guard_reads
from proxypypi.web.health import HealthResource
from proxypypi.web.metrics import MetricsResource, registry_for
from proxypypi.web.proxy import Proxy
from proxypypi.web.simple import SimpleResource
from proxypypi.web.status import render_status
from proxypypi.web.upload import UploadResource


class RootResource(Page):
    """
    ``/``: the status page (`proxypypi.web.status`); the rest of the tree
    hangs below it.  ``/metrics``, like ``/health``, needs no credentials
    even with ``--auth-read``: monitoring reads it, and it names no
    project.
    """

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy
        self.putChild(b"simple", guard_reads(proxy, SimpleResource(proxy)))
        self.putChild(b"files", guard_reads(proxy, FilesResource(proxy)))
        self.putChild(b"browse", guard_reads(proxy, BrowseResource(proxy)))
        self.putChild(b"health", HealthResource(proxy))
        self.putChild(b"metrics", MetricsResource(registry_for(proxy)))
        self.upload = UploadResource(proxy)
        self.putChild(b"legacy", self.upload)
        self.putChild(b"api", PrivateApiResource(proxy))

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            # twine's default upload URL is the root itself: no redirect.
            if request.method == b"POST":
                return self.upload
            return guard_reads(self.proxy, self)
        return ErrorResource(404, "no such page; the index is at /simple/")

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return render_status(self.proxy, request)

# -*- test-case-name: tests.test_web_simple -*-
"""
The root of the resource tree.
"""

from __future__ import annotations

import html
import json
import os

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from .. import __version__
from ..proxy import Proxy
from .errors import ErrorResource, Page
from .files import FilesResource
from .simple import SimpleResource


class HealthResource(Page):
    """
    ``/health``: JSON for load balancers and monitoring; 200 while the
    proxy can serve, 503 otherwise.
    """

    isLeaf = True

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render_GET(self, request: IRequest) -> bytes:
        now = self.proxy.clock.seconds()
        upstreams = [
            {
                "url": m.url,
                "group": m.group,
                "state": "down" if m.is_down(now) else "healthy",
                "consecutive-failures": m.failures,
            }
            for m in self.proxy.pool.members()
        ]
        writable = os.access(self.proxy.storage.tmp_dir, os.W_OK)
        usable = any(u["state"] != "down" for u in upstreams)
        ok = writable and usable
        body = json.dumps(
            {
                "status": "ok" if ok else "degraded",
                "storage-writable": writable,
                "upstreams": upstreams,
                "downloads-in-flight": len(self.proxy.downloads.in_flight()),
            },
            indent=1,
        ).encode()
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return body


class RootResource(Page):
    """
    ``/``: a short status page; the rest of the tree hangs below it.
    """

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy
        self.putChild(b"simple", SimpleResource(proxy))
        self.putChild(b"files", FilesResource(proxy))
        self.putChild(b"health", HealthResource(proxy))

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        return ErrorResource(404, "no such page; the index is at /simple/")

    def render_GET(self, request: IRequest) -> bytes:
        base = html.escape(request.prePathURL().decode("utf-8", "replace"))
        upstreams = "".join(f"<li>{html.escape(m.url)}</li>" for m in self.proxy.pool.members())
        body = (
            "<!DOCTYPE html><html><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width">'
            f"<title>proxypypi {__version__}</title></head><body>"
            f"<h1>proxypypi {__version__}</h1>"
            f"<p>Upstreams, in rank order:</p><ul>{upstreams}</ul>"
            "<p>Use this index:</p>"
            f"<pre>pip install --index-url {base}simple/ PACKAGE\n"
            f"UV_INDEX_URL={base}simple/ uv pip install PACKAGE</pre>"
            "</body></html>"
        ).encode()
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return body

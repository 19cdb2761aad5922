"""
The twisted.web floor: the least a twisted.web server can do per request.

One resource answers every GET with bytes already in memory (the files of
``--root``, read at start; the ``.gz`` sibling when the client accepts
gzip), with no routing, negotiation, logging or metrics.  The benchmark
runs it next to the proxy so that the page figures show how much of a
request's cost is the framework's and the kernel's, not proxypypi's.
Socket writes use the same 1 MiB limit as the proxy.

    python bench/floor.py --root DIR     # prints "listening on 127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.internet import abstract, reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

#: Media types by file extension, as the proxy labels the same pages.
TYPES = {b".json": b"application/vnd.pypi.simple.v1+json", b".html": b"text/html"}


class Files(Resource):
    """
    ``/<name>`` from memory; 404 for anything else.
    """

    isLeaf = True

    def __init__(self, files: dict[bytes, bytes]) -> None:
        super().__init__()
        self.files = files

    def render_GET(self, request: Request) -> bytes:
        name = request.path.lstrip(b"/")
        gzipped = self.files.get(name + b".gz")
        accept = request.getHeader(b"accept-encoding") or b""
        if gzipped is not None and b"gzip" in accept:
            request.setHeader(b"content-encoding", b"gzip")
            body = gzipped
        elif name in self.files:
            body = self.files[name]
        else:
            request.setResponseCode(404)
            return b"not found\n"
        request.setHeader(b"content-type", TYPES.get(os.path.splitext(name)[1], b"text/plain"))
        return body


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--root", required=True, help="directory whose files are served")
    args = p.parse_args(argv)
    files = {}
    for entry in os.scandir(args.root):
        if entry.is_file() and entry.stat().st_size < 64 * 1024 * 1024:
            with open(entry.path, "rb") as f:
                files[entry.name.encode()] = f.read()
    abstract.FileDescriptor.SEND_LIMIT = 1024 * 1024
    site = Site(Files(files))
    site.log = lambda request: None  # type: ignore[method-assign]
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[arg-type]
    print(f"listening on 127.0.0.1:{port.getHost().port}", flush=True)  # type: ignore[attr-defined]
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])

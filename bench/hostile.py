"""
The benchmark's hostile upstream: project pages built to cost the proxy
memory, in its own process on an ephemeral loopback port.  It prints one
JSON line (``{"port": N}``) on stdout and serves until terminated.

Every page is gzip-encoded (whatever the client asks) and answered under
``/simple/<kind>-<anything>/``:

- ``bomb``: about 1 MB of gzip expanding to 1 GiB of zeros;
- ``anchors``: gzip expanding to 30 MiB of ``<a>x</a>`` (under the
  default page limit: millions of anchors to parse);
- ``values``: gzip expanding to 30 MiB of JSON ``[[],[],...]`` (millions
  of tiny values to parse).

``PYTHONPATH`` needs nothing: this file imports no proxypypi module.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

MIB = 1024 * 1024


def _gzip(chunk: bytes, total: int, head: bytes = b"") -> bytes:
    """
    ``head``, then ``chunk`` repeated to ``total`` bytes, gzip-encoded,
    never held whole.
    """
    encoder = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts, left = [encoder.compress(head)], total
    block = chunk * max(1, (4 * MIB) // len(chunk))
    while left > 0:
        piece = block[:left]
        parts.append(encoder.compress(piece))
        left -= len(piece)
    parts.append(encoder.flush())
    return b"".join(parts)


def bodies() -> dict[str, tuple[str, bytes]]:
    """
    Each kind's Content-Type and gzip body.
    """
    return {
        "bomb": ("text/html", _gzip(b"\0", 1024 * MIB)),
        "anchors": ("text/html", _gzip(b"<a>x</a>", 30 * MIB)),
        # Not closed: the proxy must refuse it before parsing, by its count.
        "values": ("application/vnd.pypi.simple.v1+json", _gzip(b"[],", 30 * MIB, b'{"x": [')),
    }


class Hostile(Resource):
    isLeaf = True

    def __init__(self, pages: dict[str, tuple[str, bytes]]) -> None:
        super().__init__()
        self.pages = pages

    def render(self, request: Request) -> bytes:
        parts = request.path.decode("ascii", "replace").strip("/").split("/")
        if parts == ["simple"]:
            request.setHeader("content-type", "text/html")
            return b"<html><body></body></html>"
        kind = parts[1].partition("-")[0] if len(parts) == 2 else ""
        if kind not in self.pages:
            request.setResponseCode(404)
            return b"not found"
        content_type, body = self.pages[kind]
        request.setHeader("content-type", content_type)
        request.setHeader("content-encoding", "gzip")
        return body


def main(argv: list[str]) -> None:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    site = Site(Hostile(bodies()))
    site.noisy = False

    def announce(port: object) -> None:
        print(json.dumps({"port": port.getHost().port}), flush=True)  # type: ignore[attr-defined]

    TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site).addCallback(announce)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])

# -*- test-case-name: tests.test_index -*-
"""
One project page as the cache holds it: the parsed page, where and when it
came from, its validators, and its renderings (HTML and JSON, each plain
and gzip), made once and kept, so a hot page costs no rendering per
request.  Stored on disk as PEP 691 JSON with a bookkeeping block.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from urllib.parse import quote

import attrs
from packaging.utils import NormalizedName

from proxypypi.simple.model import DistFile, ProjectPage
from proxypypi.simple.negotiate import HTML, JSON_V1
from proxypypi.simple.parse import parse_project_page
from proxypypi.simple.render import render_project_html, render_project_json
from proxypypi.upstream.pages import Validators


@attrs.frozen
class Rendered:
    """
    One representation of a page: the bytes, the same gzip-compressed
    (installers accept gzip, and a large page shrinks four- to fivefold),
    and an entity tag for each.
    """

    body: bytes
    etag: str
    gzipped: bytes
    gzip_etag: str

    @classmethod
    def of(cls, body: bytes) -> Rendered:
        tag = hashlib.sha256(body).hexdigest()[:32]
        # mtime=0 keeps the compressed bytes (and so their ETag) stable.
        return cls(body, f'"{tag}"', gzip.compress(body, 6, mtime=0), f'"{tag}-gz"')


@attrs.define(eq=False)
class CachedPage:
    """
    A project page we hold, where it came from and when.
    """

    page: ProjectPage
    source: str
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None
    _renders: dict[str, Rendered] = attrs.field(factory=dict)

    def render(self, media_type: str) -> Rendered:
        """
        The page as ``media_type``, rendered once and kept (both HTML media
        types share one rendering).
        """
        kind = "json" if media_type == JSON_V1 else "html"
        r = self._renders.get(kind)
        if r is None:
            name = self.page.name

            def url(f: DistFile) -> str:
                return "../../files/{}/{}".format(name, quote(f.filename, safe="+!"))

            if kind == "json":
                body = render_project_json(self.page, url, private_keys=True)
            else:
                body = render_project_html(self.page, url)
            r = Rendered.of(body)
            self._renders[kind] = r
        return r

    def prerender(self) -> None:
        """
        Render both formats now.  Blocking, and meant for a thread: a page of
        thousands of files takes a good part of a second to render and
        compress, which must not stall the reactor on its first request.
        """
        self.render(JSON_V1)
        self.render(HTML)

    def touched(
        self, now: float, etag: str | None = None, last_modified: str | None = None
    ) -> CachedPage:
        """
        The same page, confirmed current at ``now`` (with the validators of
        the confirming 304, when it sent new ones).
        """
        return CachedPage(
            self.page,
            self.source,
            now,
            etag or self.etag,
            last_modified or self.last_modified,
            self._renders,
        )

    def only(self, keep: Callable[[DistFile], bool], now: float) -> CachedPage:
        """
        A copy listing only the files ``keep`` accepts.
        """
        page = attrs.evolve(self.page, files=tuple(f for f in self.page.files if keep(f)))
        return CachedPage(page, self.source, now, self.etag, self.last_modified)

    def validators(self) -> Validators:
        return Validators(self.source, self.etag, self.last_modified)

    def to_bytes(self) -> bytes:
        """
        The stored form: the page as PEP 691 JSON with the upstream URLs,
        plus our own bookkeeping under a private key.
        """
        body = render_project_json(self.page, lambda f: f.url)
        bookkeeping = json.dumps(
            {
                "source": self.source,
                "fetched-at": self.fetched_at,
                "etag": self.etag,
                "last-modified": self.last_modified,
            },
            separators=(",", ":"),
        ).encode()
        # The rendering is one JSON object: add our key before its last brace
        # rather than parsing and serializing a large page once more.
        return body[: body.rindex(b"}")] + b',"_proxypypi":' + bookkeeping + b"}"

    @classmethod
    def from_bytes(cls, name: NormalizedName, raw: bytes) -> CachedPage:
        """
        Load a stored page.

        :raises ValueError: when it is damaged.
        """
        meta = json.loads(raw).get("_proxypypi")
        if not isinstance(meta, dict) or not isinstance(meta.get("source"), str):
            raise ValueError("no bookkeeping block")
        page, _ = parse_project_page(raw, JSON_V1, meta["source"], name)
        return cls(
            page,
            meta["source"],
            float(meta.get("fetched-at") or 0.0),
            meta.get("etag"),
            meta.get("last-modified"),
        )



# -*- test-case-name: tests.test_index -*-
"""
One project page as the cache stores it: the parsed page, where and when it
came from, and its validators.  Stored on disk as PEP 691 JSON with the
upstream's file URLs and a bookkeeping block; what clients get are its
forms (`proxypypi.cache.forms`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import attrs
import orjson
from packaging.utils import NormalizedName

from proxypypi.simple.model import DistFile, ProjectPage
from proxypypi.simple.negotiate import JSON_V1
from proxypypi.simple.parse import parse_json_entry, parse_project_page
from proxypypi.simple.render import render_project_json
from proxypypi.upstream.pages import Validators

#: What precedes the bookkeeping block, the last key of a stored page.
_MARK = b',"_proxypypi":'
#: How each file's entry in a stored page starts.
_ENTRY = b'{"filename":'
#: Bytes read from the end of a stored page for its bookkeeping block: a
#: source URL, a time and two validators, well under this.
_TAIL = 16384


def stored_head(raw: bytes) -> memoryview:
    """
    A stored page without its bookkeeping block (and closing brace), as a
    view (the page can be megabytes).

    :raises ValueError: when it has none.
    """
    return memoryview(raw)[: raw.rindex(_MARK)]


def with_bookkeeping(
    head: memoryview,
    source: str,
    fetched_at: float,
    etag: str | None,
    last_modified: str | None,
) -> tuple[memoryview, bytes]:
    """
    ``head`` (a stored page up to its bookkeeping) with this bookkeeping,
    closed: where the page came from, when, and its validators.  As two
    chunks, to be written one after the other: a page of megabytes is
    never copied to be closed.
    """
    bookkeeping = orjson.dumps(
        {"source": source, "fetched-at": fetched_at, "etag": etag, "last-modified": last_modified}
    )
    return (head, _MARK + bookkeeping + b"}")


def stored_entry(raw: bytes, name: NormalizedName, filename: str) -> DistFile | None:
    """
    The entry of ``filename`` in a stored page, read alone: found by its
    first key (the stored page is our own compact rendering, each entry
    ``{"filename":...``), so a file's request costs a search of the page's
    bytes, not a parse of its thousands of entries.  An entry that is not
    there, or not usable, is ``None``.

    :raises ValueError: when the page is damaged.
    """
    meta = _bookkeeping(raw)
    # Pages stored before orjson wrote them escaped non-ASCII names.
    for key in (orjson.dumps(filename), json.dumps(filename).encode()):
        start = raw.find(_ENTRY + key + b",")
        if start >= 0:
            break
    else:
        return None
    end = raw.find(_ENTRY, start + 1)
    window = raw[start : end if end > 0 else len(raw)].decode("utf-8", "replace")
    try:
        entry, _ = json.JSONDecoder().raw_decode(window)
    except ValueError:
        return None
    return parse_json_entry(entry, meta["source"], name)


def stored_bookkeeping(path: str) -> dict[str, Any] | None:
    """
    The bookkeeping block of the stored page at ``path``, read from its
    last bytes alone (no need to read, let alone parse, a page of
    megabytes): where it came from, when, its validators.  ``None`` when
    there is no page or it is damaged.  Blocking.
    """
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - _TAIL))
            return _bookkeeping(f.read(_TAIL))
    except (OSError, ValueError):
        return None


def stored_source(path: str) -> str | None:
    """
    The upstream the stored page at ``path`` came from (the browse pages
    show it for dozens of projects at once).  Blocking.
    """
    meta = stored_bookkeeping(path)
    return None if meta is None else str(meta["source"])


def _bookkeeping(raw: bytes) -> dict[str, Any]:
    """
    The bookkeeping block of a stored page.

    :raises ValueError: when it has none, or a damaged one.
    """
    try:
        meta = orjson.loads(raw[len(stored_head(raw)) + len(_MARK) : -1])
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("source"), str):
        raise ValueError("no bookkeeping block")
    return meta


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
        )

    def only(self, keep: Callable[[DistFile], bool], now: float) -> CachedPage:
        """
        A copy listing only the files ``keep`` accepts.
        """
        page = attrs.evolve(self.page, files=tuple(f for f in self.page.files if keep(f)))
        return CachedPage(page, self.source, now, self.etag, self.last_modified)

    def validators(self) -> Validators:
        return Validators(self.source, self.etag, self.last_modified)

    def to_chunks(self, body: bytes | None = None) -> tuple[memoryview, bytes]:
        """
        The stored form, in chunks: the page as PEP 691 JSON with the
        upstream URLs, plus our own bookkeeping under a private key.

        :param body: that JSON, when the caller rendered it already.
        """
        if body is None:
            body = render_project_json(self.page, lambda f: f.url)
        # The rendering is one JSON object: add our key before its last brace
        # rather than parsing and serializing a large page once more.
        head = memoryview(body)[: body.rindex(b"}")]
        return with_bookkeeping(head, self.source, self.fetched_at, self.etag, self.last_modified)

    def to_bytes(self) -> bytes:
        """
        The stored form, whole.
        """
        return b"".join(self.to_chunks())

    @classmethod
    def from_bytes(cls, name: NormalizedName, raw: bytes) -> CachedPage:
        """
        Load a stored page.

        :raises ValueError: when it is damaged.
        """
        meta = _bookkeeping(raw)
        page, _ = parse_project_page(raw, JSON_V1, meta["source"], name)
        return cls(
            page,
            meta["source"],
            float(meta.get("fetched-at") or 0.0),
            meta.get("etag"),
            meta.get("last-modified"),
        )

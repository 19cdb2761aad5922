"""
Property tests of the parsers that read what an upstream sends: whatever
the input, nothing but the documented refusal is raised, and what is kept
is safe (a safe file name, an http(s) URL with a host).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.page import stored_entry
from proxypypi.names import is_safe_filename
from proxypypi.simple.model import DistFile
from proxypypi.simple.parse import (
    PageParseError,
    ProjectListScanner,
    parse_json_entry,
    parse_project_page,
)

NAME: Any = "proto-alpha"
PAGE_URL = "https://mirror.example/simple/proto-alpha/"

#: Quick and the same on every run.
QUICK = settings(derandomize=True, max_examples=100, deadline=None, database=None)

#: Pieces of hostile file names and URLs.
NAMES = st.sampled_from(
    [
        "proto_alpha-1.0-py3-none-any.whl",
        "proto-alpha-1.0.tar.gz",
        "other-1.0.tar.gz",
        "../../etc/passwd",
        "proto_alpha-1.0-py3-none-any.whl\x1b[2J",
        "proto_alpha-1.0.tar.gz/..",
        ".proto_alpha-1.0.tar.gz",
        "proto_alpha-\u00b2.0.tar.gz",
        "",
    ]
) | st.text(max_size=40)
URLS = st.sampled_from(
    [
        "https://files.example/p/proto_alpha-1.0-py3-none-any.whl",
        "/files/proto-alpha-1.0.tar.gz#sha256=" + "a" * 64,
        "../../f/proto_alpha-1.0-py3-none-any.whl",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://[::1/x",
        "http://u:p@h.example:99999/proto-alpha-1.0.tar.gz",
        "//evil.example/proto-alpha-1.0.tar.gz",
        "https://h.example/%2e%2e/proto-alpha-1.0.tar.gz",
        "https://h.example/a\nb/proto-alpha-1.0.tar.gz",
    ]
) | st.text(max_size=60)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
ENTRIES = (
    st.fixed_dictionaries(
        {"filename": NAMES, "url": URLS},
        optional={
            "hashes": JSON_VALUES | st.just({"sha256": "b" * 64}),
            "size": JSON_VALUES,
            "yanked": JSON_VALUES,
            "core-metadata": JSON_VALUES,
            "requires-python": JSON_VALUES,
            "provenance": JSON_VALUES | URLS,
        },
    )
    | JSON_VALUES
)


def check_kept(f: DistFile) -> None:
    """
    The invariants of every file a parser keeps.
    """
    assert is_safe_filename(f.filename), f.filename
    assert f.filename.isprintable(), f.filename
    parts = urlsplit(f.url)
    assert parts.scheme in ("http", "https"), f.url
    assert parts.hostname, f.url


class JsonPropertyTests(SynchronousTestCase):
    @QUICK
    @given(entry=ENTRIES)
    def test_entry(self, entry: object) -> None:
        f = parse_json_entry(entry, PAGE_URL, NAME)
        if f is not None:
            check_kept(f)

    @QUICK
    @given(files=st.lists(ENTRIES, max_size=6), extra=JSON_VALUES, name=NAMES)
    def test_page(self, files: list[object], extra: object, name: str) -> None:
        doc = {"meta": {"api-version": "1.1"}, "name": name, "files": files, "x": extra}
        body = json.dumps(doc).encode()
        for cut in (body, body[: len(body) // 2]):
            try:
                page, _ = parse_project_page(cut, "", PAGE_URL, NAME)
            except PageParseError:
                continue
            for f in page.files:
                check_kept(f)


HTML_PIECES = st.sampled_from(
    [
        "<a href='",
        "'>",
        "</a>",
        "<a>",
        '<base href="',
        '">',
        "<![CDATA[",
        "<!--SERIAL 12-->",
        "<!--",
        "<meta name='pypi:repository-version' content='2.0'>",
        "data-yanked",
        "&amp;",
        "&#0;",
        "\x00",
        "<",
        ">",
    ]
)


class HtmlPropertyTests(SynchronousTestCase):
    @QUICK
    @given(pieces=st.lists(HTML_PIECES | NAMES | URLS, max_size=30), framed=st.booleans())
    def test_page(self, pieces: list[str], framed: bool) -> None:
        body = "".join(pieces).encode("utf-8", "surrogatepass")
        try:
            page, _ = parse_project_page(body, "text/html", PAGE_URL, NAME, framed=framed)
        except PageParseError:
            return
        for f in page.files:
            check_kept(f)

    @QUICK
    @given(body=st.binary(max_size=300), content_type=st.text(max_size=40))
    def test_binary(self, body: bytes, content_type: str) -> None:
        try:
            page, _ = parse_project_page(body, content_type, PAGE_URL, NAME)
        except PageParseError:
            return
        for f in page.files:
            check_kept(f)


class ProjectListPropertyTests(SynchronousTestCase):
    @QUICK
    @given(
        pieces=st.lists(
            st.sampled_from(['<a href="x/">', "</a>", '{"name": "', '"}', ",", "]}", "</html>"])
            | st.text(max_size=20),
            max_size=30,
        ),
        cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
        content_type=st.sampled_from(["", "text/html", "application/vnd.pypi.simple.v1+json"]),
    )
    def test_any_chunking(self, pieces: list[str], cuts: list[int], content_type: str) -> None:
        body = "".join(pieces).encode("utf-8", "surrogatepass")
        scanner = ProjectListScanner(content_type)
        names: list[str] = []
        start = 0
        for cut in sorted(c for c in cuts if c <= len(body)) + [len(body)]:
            names += scanner.feed(body[start:cut])
            start = cut
        names += scanner.close()
        assert all(isinstance(n, str) and n for n in names)
        # However the body is cut into chunks, the names are the same.
        whole = ProjectListScanner(content_type)
        assert whole.feed(body) + whole.close() == names


class StoredEntryPropertyTests(SynchronousTestCase):
    @QUICK
    @given(raw=st.binary(max_size=300), filename=NAMES)
    def test_junk(self, raw: bytes, filename: str) -> None:
        try:
            f = stored_entry(raw, NAME, filename)
        except ValueError:
            return
        if f is not None:
            check_kept(f)

    @QUICK
    @given(entries=st.lists(ENTRIES, max_size=4), filename=NAMES, source=URLS)
    def test_stored_pages(self, entries: list[object], filename: str, source: str) -> None:
        doc = {"name": NAME, "files": entries, "_proxypypi": {"source": source}}
        raw = json.dumps(doc, separators=(",", ":")).encode()
        try:
            f = stored_entry(raw, NAME, filename)
        except ValueError:
            return
        if f is not None:
            check_kept(f)

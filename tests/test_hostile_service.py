"""
Items 14 and 15 end to end: the real service on 127.0.0.1 in front of an
upstream that writes raw answers, ending bodies by closing the connection.
"""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
import treq
from twisted.web.client import ResponseFailed

from tests.support.hostile import JSON_TYPE, WHEEL, serve_raw
from tests.support.proxies import committed, running_proxy

HTML_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n"
ANCHOR = f'<html><body><a href="/files/{WHEEL}#sha256={"0" * 64}">{WHEEL}</a>'.encode()


def framed_json(body: bytes) -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: {JSON_TYPE}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


@pytest_twisted.ensureDeferred
async def test_page_cut_short_without_length_is_not_stored(tmp_path: object) -> None:
    """
    An HTML page without Content-Length whose connection ends before its
    closing tag is refused (502), not stored as a page of fewer files; the
    same page ending with its tag is accepted.
    """
    answers = {"/simple/proto-alpha/": HTML_HEAD + ANCHOR}
    port, base = await serve_raw(answers)
    storage = os.path.join(str(tmp_path), "d")
    try:
        async with running_proxy([base + "simple/"], storage) as running:
            response = await treq.get(running.simple + "proto-alpha/")
            body = await response.content()
            assert response.code == 502, body
            assert b"may be cut short" in body
            assert not os.path.exists(os.path.join(storage, "pages", "proto-alpha.json"))
            answers["/simple/proto-alpha/"] = HTML_HEAD + ANCHOR + b"</body></html>\n"
            response = await treq.get(
                running.simple + "proto-alpha/", headers={"Accept": JSON_TYPE}
            )
            page = json.loads(await response.content())
            assert [f["filename"] for f in page["files"]] == [WHEEL]
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_file_without_length_or_hash_is_not_committed(tmp_path: object) -> None:
    """
    A file whose page gives neither size nor hash, sent without a length
    and ended by the connection, could be any prefix of the file: 502,
    nothing stored.
    """
    page = {
        "meta": {"api-version": "1.0"},
        "name": "proto-alpha",
        "files": [{"filename": WHEEL, "url": f"/files/{WHEEL}", "hashes": {}}],
    }
    answers = {
        "/simple/proto-alpha/": framed_json(json.dumps(page).encode()),
        f"/files/{WHEEL}": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"PK" * 1000,
    }
    port, base = await serve_raw(answers)
    storage = os.path.join(str(tmp_path), "d")
    try:
        async with running_proxy([base + "simple/"], storage) as running:
            response = await treq.get(f"{running.base}files/proto-alpha/{WHEEL}")
            # The bytes stream as they come, so the headers went out: the
            # client sees its download cut (never the last byte), and
            # nothing is stored.
            assert response.code == 200
            with pytest.raises(ResponseFailed):
                await response.content()
            await committed(running)
            assert not os.path.exists(os.path.join(storage, "files", "proto-alpha", WHEEL))
    finally:
        await port.stopListening()

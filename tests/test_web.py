"""
The resource tree, in memory: StubTreq plays the installer, the fake index
(through treq's RequestTraversalAgent) plays the upstream, and a Clock
drives time.  No sockets.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from proxypypi.cache.forms import Form
from proxypypi.simple.negotiate import HTML, JSON_V1
from proxypypi.testing import FakeIndex, Fault, make_sdist, make_wheel
from tests.support.disk import FillableStorage
from tests.support.harness import BASE, ProxyCase
from tests.support.pumping import pump

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


class GzipBomb(Resource):
    """
    An upstream whose every answer is a few kilobytes of gzip that would
    expand to a gigabyte.
    """

    isLeaf = True
    BOMB = gzip.compress(b"<html>" + b" " * (64 * 1024 * 1024))

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html")
        request.setHeader(b"content-encoding", b"gzip")
        return self.BOMB


class WebTests(ProxyCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.index = FakeIndex(self.clock)
        self.alpha = make_wheel("Proto-Alpha", "1.0", payload_size=20_000)
        self.beta = make_wheel("proto_beta", "1.1+local")
        self.gamma = make_sdist("proto-gamma", "2.0")
        for dist in (self.alpha, self.beta, self.gamma):
            self.index.add(dist)
        self.upstream = RequestTraversalAgent(self.index.resource())
        self.make_proxy()

    def header(self, response: Any, name: str) -> str | None:
        values = response.headers.getRawHeaders(name)
        return values[0] if values else None

    def file_requests(self) -> int:
        return self.index.count("/files/")

    # Pages

    def test_project_page_json(self) -> None:
        """pip's Accept gets PEP 691 JSON with local file URLs and caching headers."""
        response, body = self.request("GET", "/simple/proto-alpha/", accept=PIP_ACCEPT)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-type"), JSON_V1)
        self.assertIn("Accept", self.header(response, "vary") or "")
        self.assertEqual(self.header(response, "cache-control"), "max-age=60, public")
        page = json.loads(body)
        self.assertEqual(page["meta"]["api-version"], "1.1")
        (f,) = page["files"]
        self.assertEqual(f["url"], "../../files/proto-alpha/" + self.alpha.filename)
        self.assertEqual(f["hashes"], {"sha256": self.alpha.sha256})
        self.assertEqual(f["core-metadata"], {"sha256": self.alpha.metadata_sha256})
        self.assertEqual(f["size"], len(self.alpha.data))

    def test_project_page_html_and_etag(self) -> None:
        """text/html gets PEP 503 HTML; its ETag answers If-None-Match with 304."""
        response, body = self.request("GET", "/simple/proto-alpha/", accept="text/html")
        self.assertEqual(self.header(response, "content-type"), HTML)
        self.assertIn(b'data-core-metadata="sha256=', body)
        etag = self.header(response, "etag")
        assert etag is not None
        again, body = self.request(
            "GET", "/simple/proto-alpha/", accept="text/html", if_none_match=etag
        )
        self.assertEqual((again.code, body), (304, b""))
        self.assertEqual(self.index.count("/simple/proto-alpha/"), 1)

    def test_not_acceptable(self) -> None:
        """A client that accepts neither format gets 406."""
        response, _ = self.request("GET", "/simple/proto-alpha/", accept="application/json")
        self.assertEqual(response.code, 406)

    def test_unspecific_clients_get_html(self) -> None:
        """
        No Accept, or only ``*/*`` (curl, browsers), gets ``text/html`` for
        pages and the list, as from the public index.
        """
        for path in ("/simple/proto-alpha/", "/simple/"):
            for headers in ({}, {"accept": "*/*"}):
                response, body = self.request("GET", path, **headers)
                self.assertEqual(self.header(response, "content-type"), HTML, (path, headers))
                self.assertTrue(body.startswith(b"<!DOCTYPE html>"))

    def test_format_parameter(self) -> None:
        """``?format=`` chooses the media type whatever Accept says; one not served is 406."""
        escaped = JSON_V1.replace("+", "%2B")
        for path in ("/simple/proto-alpha/", "/simple/"):
            for value in (escaped, JSON_V1):  # "+" unescaped reads as a space
                response, body = self.request("GET", f"{path}?format={value}", accept="text/html")
                self.assertEqual(self.header(response, "content-type"), JSON_V1)
                self.assertIn("meta", json.loads(body))
            response, _ = self.request("GET", f"{path}?format=text/html", accept=PIP_ACCEPT)
            self.assertEqual(self.header(response, "content-type"), HTML)
            response, _ = self.request("GET", f"{path}?format=application/json")
            self.assertEqual(response.code, 406)

    def test_redirects(self) -> None:
        """Non-normalized names and a missing slash redirect to the normalized page."""
        response, _ = self.request("GET", "/simple/Proto_Alpha/")
        self.assertEqual(
            (response.code, self.header(response, "location")), (301, "../proto-alpha/")
        )
        response, _ = self.request("GET", "/simple/proto-alpha")
        self.assertEqual((response.code, self.header(response, "location")), (301, "proto-alpha/"))
        response, _ = self.request("GET", "/simple")
        self.assertEqual((response.code, self.header(response, "location")), (301, "simple/"))

    def test_redirect_keeps_query(self) -> None:
        """A redirect carries the query string along."""
        response, _ = self.request("GET", "/simple/Proto_Alpha/?format=json")
        self.assertEqual(
            (response.code, self.header(response, "location")),
            (301, "../proto-alpha/?format=json"),
        )
        response, _ = self.request("GET", "/simple?x=1&y=2")
        self.assertEqual(
            (response.code, self.header(response, "location")), (301, "simple/?x=1&y=2")
        )

    def test_not_found(self) -> None:
        """Unknown projects are 404; impossible names are 404 without asking upstream."""
        response, body = self.request("GET", "/simple/no-such-thing/")
        self.assertEqual(response.code, 404)
        self.assertIn(b"no-such-thing", body)
        before = len(self.index.requests)
        for path in ("/simple/..%2Fetc/", "/simple/-bad-/", "/nowhere", "/simple/proto-alpha/x"):
            response, _ = self.request("GET", path)
            self.assertEqual(response.code, 404, path)
        self.assertEqual(len(self.index.requests), before)

    def test_wrong_method(self) -> None:
        """Methods a resource does not support get 405."""
        for path in ("/simple/proto-alpha/", "/files/proto-alpha/" + self.alpha.filename):
            response, _ = self.request("POST", path)
            self.assertEqual(response.code, 405, path)

    def test_upstream_error_is_502(self) -> None:
        """An upstream 500 without a cached copy is a 502 with a one-line reason."""
        self.index.fault = Fault(status=500)
        response, body = self.request("GET", "/simple/proto-alpha/")
        self.assertEqual(response.code, 502)
        self.assertIn(b"HTTP 500", body)
        self.assertEqual(len(body.strip().splitlines()), 1)

    def test_project_list(self) -> None:
        """/simple/ lists every upstream project, in HTML and JSON."""
        response, body = self.request("GET", "/simple/", accept="text/html")
        self.assertEqual(response.code, 200)
        self.assertIn(b'href="proto-alpha/"', body)
        response, body = self.request("GET", "/simple/", accept=JSON_V1)
        names = {p["name"] for p in json.loads(body)["projects"]}
        self.assertEqual(names, {"proto-alpha", "proto-beta", "proto-gamma"})
        self.assertEqual(self.index.count("/simple/", "GET"), 1)

    def test_project_list_gzip(self) -> None:
        """
        An upstream that gzips its list is asked to and read as it streams;
        one whose gzip expands like a bomb is refused, the list not stored.
        """
        self.index.gzip = True
        response, body = self.request("GET", "/simple/", accept="text/html")
        self.assertIn(b'href="proto-gamma/"', body)
        self.assertIn("gzip", self.index.requests[-1].accept_encoding or "")
        self.upstream = RequestTraversalAgent(GzipBomb())
        self.make_proxy()
        response, body = self.request("GET", "/simple/", accept="text/html")
        self.assertEqual(response.code, 502)
        self.assertIn(b"expands over 100-fold", body)
        pages = os.listdir(self.proxy.storage.pages_dir)
        self.assertFalse([name for name in pages if name.startswith("_index")], pages)

    def test_project_list_never_ending_or_too_large(self) -> None:
        """
        A list that trickles on forever stops at the time bound, one that
        grows past the size bound stops there; neither is stored, and the
        client is told why.
        """
        self.proxy.project_list.timeout = 5.0
        self.index.throttle = 20  # bytes a second: under the idle timeout
        self.index.chunk_size = 10
        d = self.client.get(BASE + "/simple/", headers={"accept": ["text/html"]})
        pump(self.upstream, self.client, clock=self.clock, advance=0.5, until=d, what="headers")
        # Streamed as it comes: begun with a 200, so ended by cutting it.
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body = self.client.content(response)
        pump(self.upstream, self.client, clock=self.clock, advance=0.5, until=body, what="end")
        self.failureResultOf(body)
        self.assertGreaterEqual(self.clock.seconds(), 5.0)
        self.assertFalse(os.path.exists(self.proxy.project_list.path(Form.HTML)))
        self.index.throttle = None
        self.make_proxy()
        self.proxy.project_list.max_bytes = 100
        response, body = self.request("GET", "/simple/", accept="text/html")
        self.assertEqual(response.code, 502)
        self.assertIn(b"larger than 100 bytes", body)
        pages = os.listdir(self.proxy.storage.pages_dir)
        self.assertFalse([name for name in pages if name.startswith("_index")], pages)

    # Files

    def test_file_download_and_cache(self) -> None:
        """A file is fetched once, hash-checked, stored, and then served from disk."""
        path = "/files/proto-alpha/" + self.alpha.filename
        self.request("GET", "/simple/proto-alpha/")
        response, body = self.request("GET", path)
        self.assertEqual(response.code, 200)
        self.assertEqual(body, self.alpha.data)
        self.assertEqual(self.header(response, "etag"), f'"{self.alpha.sha256}"')
        self.assertEqual(response.length, len(self.alpha.data))
        self.assertIn("immutable", self.header(response, "cache-control") or "")
        stored = self.proxy.storage.file_path("proto-alpha", self.alpha.filename)
        with open(stored, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), self.alpha.sha256)
        response, body = self.request("GET", path)
        self.assertEqual(body, self.alpha.data)
        self.assertEqual(self.file_requests(), 1)

    def test_file_without_page_visit(self) -> None:
        """A file URL works even when the page was never asked for (fetched on demand)."""
        response, body = self.request("GET", "/files/proto-gamma/" + self.gamma.filename)
        self.assertEqual(body, self.gamma.data)

    def test_ranges(self) -> None:
        """Suffix and open ranges give 206; a stale If-Range gives the whole file."""
        path = "/files/proto-alpha/" + self.alpha.filename
        response, body = self.request("GET", path, range="bytes=-100")
        self.assertEqual(response.code, 206)
        self.assertEqual(body, self.alpha.data[-100:])
        response, body = self.request("GET", path, range="bytes=1000-")
        self.assertEqual((response.code, body), (206, self.alpha.data[1000:]))
        response, body = self.request("GET", path, range="bytes=0-9", if_range='"other"')
        self.assertEqual((response.code, body), (200, self.alpha.data))
        response, _ = self.request("GET", path, range=f"bytes={len(self.alpha.data)}-")
        self.assertEqual(response.code, 416)

    def test_head(self) -> None:
        """HEAD gives the file's length and range support without a body."""
        response, body = self.request("HEAD", "/files/proto-alpha/" + self.alpha.filename)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-length"), str(len(self.alpha.data)))
        self.assertEqual(self.header(response, "accept-ranges"), "bytes")
        self.assertEqual(body, b"")

    def test_percent_encoded_filename(self) -> None:
        """pip's %2B for + finds the file."""
        quoted = self.beta.filename.replace("+", "%2B")
        response, body = self.request("GET", "/files/proto-beta/" + quoted)
        self.assertEqual((response.code, body), (200, self.beta.data))

    def test_metadata(self) -> None:
        """The PEP 658 metadata file is served with the hash the page advertised."""
        response, body = self.request("GET", f"/files/proto-alpha/{self.alpha.filename}.metadata")
        self.assertEqual(response.code, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), self.alpha.metadata_sha256)
        response, _ = self.request("GET", f"/files/proto-gamma/{self.gamma.filename}.metadata")
        self.assertEqual(response.code, 404)

    def test_unlisted_and_hostile_file_paths(self) -> None:
        """Files not on the page, traversal and odd paths are 404 without a file fetch."""
        for path in (
            "/files/proto-alpha/proto_alpha-9.9-py3-none-any.whl",
            "/files/proto-alpha/..%2F..%2Fpages%2Fproto-alpha.json",
            "/files/proto-alpha/.hidden",
            "/files/Proto_Alpha/" + self.alpha.filename,
            "/files/proto-alpha",
            "/files/a/b/c",
        ):
            response, _ = self.request("GET", path)
            self.assertEqual(response.code, 404, path)
        self.assertEqual(self.file_requests(), 0)

    def test_corrupt_upstream_never_complete(self) -> None:
        """A corrupt upstream body never reaches a client complete, and is not stored."""
        self.index.fault_for["/files/" + self.alpha.filename] = Fault(corrupt=True)
        d = self.client.get(BASE + "/files/proto-alpha/" + self.alpha.filename)
        self.settle()
        response = self.successResultOf(d)
        body = self.client.content(response)
        self.settle()
        if response.code == 200:
            self.failureResultOf(body)
        else:
            self.assertEqual(response.code, 502)
        self.assertEqual(os.listdir(self.proxy.storage.tmp_dir), [])
        self.assertFalse(self.proxy.storage.has_file("proto-alpha", self.alpha.filename))

    def test_damaged_or_foreign_stored_files(self) -> None:
        """A truncated stored file is fetched again; a file no page lists is never served."""
        path = self.proxy.storage.file_path("proto-alpha", self.alpha.filename)
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(self.alpha.data[:100])
        with open(os.path.join(os.path.dirname(path), "notes.txt"), "wb") as f:
            f.write(b"operator's notes")
        response, body = self.request("GET", "/files/proto-alpha/" + self.alpha.filename)
        self.assertEqual(body, self.alpha.data)
        self.assertEqual(self.file_requests(), 1)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), self.alpha.data)
        response, _ = self.request("GET", "/files/proto-alpha/notes.txt")
        self.assertEqual(response.code, 404)

    def test_disk_full_and_recovery(self) -> None:
        """
        A full disk fails new downloads cleanly, keeps cached files served,
        shows in /health, and clears by itself once writes work again.
        """
        self.make_proxy(storage_class=FillableStorage)
        storage = self.proxy.storage
        assert isinstance(storage, FillableStorage)
        cached_path = "/files/proto-gamma/" + self.gamma.filename
        self.assertEqual(self.request("GET", cached_path)[1], self.gamma.data)
        storage.full = True
        response, body = self.request("GET", "/files/proto-alpha/" + self.alpha.filename)
        self.assertNotEqual(body, self.alpha.data)
        self.assertEqual(os.listdir(storage.tmp_dir), [])
        response, body = self.request("GET", "/health")
        self.assertEqual(response.code, 503)
        self.assertIn("space", json.loads(body)["storage-error"])
        self.assertEqual(self.request("GET", cached_path)[1], self.gamma.data)

        storage.full = False
        self.successResultOf(storage.check_writable())
        response, body = self.request("GET", "/health")
        self.assertEqual(response.code, 200)
        self.assertIsNone(json.loads(body)["storage-error"])
        response, body = self.request("GET", "/files/proto-alpha/" + self.alpha.filename)
        self.assertEqual(body, self.alpha.data)

    def test_health(self) -> None:
        """/health is JSON and 200 while an upstream is usable and storage is writable."""
        response, body = self.request("GET", "/health")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["upstreams"][0]["state"], "healthy")


class GzipTests(SynchronousTestCase):
    def test_accepts_gzip(self) -> None:
        """gzip is used when the client lists it (or *) with a non-zero q."""
        from proxypypi.web.simple import accepts_gzip

        self.assertTrue(accepts_gzip(b"gzip, deflate"))
        self.assertTrue(accepts_gzip(b"deflate, GZIP;q=0.5"))
        self.assertTrue(accepts_gzip(b"*"))
        self.assertFalse(accepts_gzip(b"gzip;q=0"))
        self.assertFalse(accepts_gzip(b"identity"))
        self.assertFalse(accepts_gzip(None))

    def test_gzip_rendering_round_trips(self) -> None:
        """The compressed form decompresses to the plain one, with its own ETag, every time."""
        import gzip

        from proxypypi.cache.forms import Form, MemoryForms
        from proxypypi.simple.model import DistFile, ProjectPage

        files = tuple(DistFile(f"proto_alpha-1.{i}.tar.gz", "") for i in range(50))
        forms = MemoryForms(ProjectPage("proto-alpha", files))  # type: ignore[arg-type]
        plain, packed = forms.get(Form.JSON), forms.get(Form.JSON_GZ)
        self.assertEqual(gzip.decompress(packed.body), plain.body)
        self.assertLess(len(packed.body), len(plain.body))
        self.assertNotEqual(plain.etag, packed.etag)
        again = MemoryForms(ProjectPage("proto-alpha", files))  # type: ignore[arg-type]
        self.assertEqual(again.get(Form.JSON_GZ), packed)

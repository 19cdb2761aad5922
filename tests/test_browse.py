"""
The browse pages (``/browse/``, ``/browse/<name>/``) against known
sequences of requests and known disks, in memory (the harness of
`tests.support.harness`); the same pages in a real browser are in
`tests.test_browser`.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.page import CachedPage
from proxypypi.cache.storage import Storage
from proxypypi.names import normalize
from proxypypi.ops.inventory import ranked, search_key
from proxypypi.simple.model import DistFile, ProjectPage
from proxypypi.testing import make_wheel
from proxypypi.web.browse import PER_PAGE, BrowseResource
from proxypypi.web.markup import iso_moment
from tests.support.auth import basic
from tests.support.disk import HeldRunner
from tests.support.harness import BASE, PIP_ACCEPT, UPSTREAM, MeteredHarness
from tests.support.markup import Page

#: The upload time the upstream gives proto-alpha 2.0 here.
UPLOADED = "2025-01-02T03:04:05.123456Z"


class BrowseCase(MeteredHarness):
    def browse(self, path: str = "", code: int = 200) -> Page:
        """
        A browse page, checked: its status, a page for people (HTML, never
        cached, phone-ready, no script) and well-formed.
        """
        response, body = self.get("/browse/" + path)
        self.assertEqual(response.code, code, body)
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"])
        self.assertEqual(headers.getRawHeaders("cache-control"), ["no-store"])
        page = Page(body.decode("utf-8"))
        self.assertEqual(page.errors, [])
        self.assertEqual(page.stack, [])
        self.assertNotIn("script", page.tags)
        viewport = [m for m in page.elements["meta"] if m.get("name") == "viewport"]
        self.assertEqual(viewport[0]["content"], "width=device-width, initial-scale=1")
        return page

    def fetch_alpha(self) -> None:
        """
        proto-alpha's page, then its 2.0 wheel, as pip fetches them.
        """
        self.index.add(self.upstream_alpha, upload_time=UPLOADED)
        self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)
        response, _ = self.get(self.file_path(self.upstream_alpha))
        self.assertEqual(response.code, 200)

    def store_projects(self, count: int) -> None:
        """
        ``count`` projects with one file each, straight onto the disk.
        """
        for i in range(count):
            directory = os.path.join(self.data, "files", f"pkg-{i:03d}")
            os.makedirs(directory)
            with open(os.path.join(directory, f"pkg_{i:03d}-1.0-py3-none-any.whl"), "wb") as f:
                f.write(b"x" * (i + 1))


class ListingTests(BrowseCase):
    def test_lists_what_is_stored(self) -> None:
        """
        Projects with files, with only a page, and uploaded ones, each
        with its files, size, upstream and whether it is private.
        """
        self.fetch_alpha()
        self.get("/simple/proto-beta/", accept=PIP_ACCEPT)
        self.assertEqual(self.upload_corp().code, 200)
        page = self.browse()
        self.assertEqual(page.value("matching"), 3)
        rows = {row[0]: row[1:] for row in page.cells()}
        self.assertEqual(
            rows["proto-alpha"][:2], ["1", f"{len(self.upstream_alpha.data)} B"]
        )
        self.assertEqual(rows["proto-alpha"][3:], [UPSTREAM, "no"])
        self.assertTrue(rows["proto-alpha"][2].startswith("stored "), rows)
        self.assertEqual(rows["proto-beta"][:2], ["0", "0 B"])
        self.assertEqual(rows["proto-beta"][3:], [UPSTREAM, "no"])
        self.assertEqual(rows["corp-lib"][:2], ["1", f"{len(self.corp.data)} B"])
        self.assertEqual(rows["corp-lib"][3:], ["–", "yes"])
        self.assertIn("proto-alpha/", page.links)
        self.assertIn("../", page.links)

    def test_search(self) -> None:
        """
        The search finds names in any spelling; what was typed is shown
        back, escaped; a search that finds nothing says so.
        """
        self.fetch_alpha()
        self.assertEqual(self.upload_corp().code, 200)
        page = self.browse("?q=PROTO_Alpha")
        self.assertEqual([row[0] for row in page.cells()], ["proto-alpha"])
        self.assertEqual(page.value("matching"), 1)
        (box,) = page.elements["input"]
        self.assertEqual((box["name"], box["value"]), ("q", "PROTO_Alpha"))
        self.assertEqual(page.elements["form"][0]["method"], "get")
        hostile = "<script>alert(1)</script>"
        response, body = self.get("/browse/?q=%3Cscript%3Ealert(1)%3C/script%3E")
        self.assertNotIn(hostile.encode(), body)
        page = Page(body.decode())
        self.assertEqual(page.value("matching"), 0)
        self.assertEqual(page.show("empty"), "Nothing to show here.")
        self.assertEqual(page.elements["input"][0]["value"], hostile)
        self.assertEqual(self.browse("?q=%FF%FEcorp").value("matching"), 0)

    def test_search_order(self) -> None:
        """The name searched for first, then those it starts, then the rest."""
        names = [normalize(n) or "" for n in ("b-proto", "proto-b", "proto", "a-proto", "x")]
        self.assertEqual(ranked(names, "proto"), ["proto", "proto-b", "a-proto", "b-proto"])
        self.assertEqual(ranked(names, ""), ["a-proto", "b-proto", "proto", "proto-b", "x"])
        self.assertEqual(search_key("  Zope.Interface "), "zope-interface")
        self.assertEqual(len(search_key("a" * 5000)), 100)

    def test_pages(self) -> None:
        """
        A long list comes in pages, whose links keep the search; a page
        number that is junk, or past the end, is harmless.
        """
        self.store_projects(2 * PER_PAGE + 20)
        first = self.browse()
        self.assertEqual(len(first.cells()), PER_PAGE)
        self.assertEqual(first.cells()[0][:3], ["pkg-000", "1", "1 B"])
        self.assertEqual(first.show("page"), "page 1 of 3")
        self.assertIn("?page=2", first.links)
        last = self.browse("?page=3")
        self.assertEqual(len(last.cells()), 20)
        self.assertEqual(last.cells()[-1][0], f"pkg-{2 * PER_PAGE + 19:03d}")
        self.assertIn("?page=2", last.links)
        self.assertEqual(self.browse("?page=9").show("empty"), "Nothing to show here.")
        for junk in ("abc", "-1", "99999999999999", "%00"):
            self.assertEqual(self.browse(f"?page={junk}").show("page"), "page 1 of 3")
        searched = self.browse("?q=pkg-0&page=1")
        self.assertEqual(searched.value("matching"), 100)
        self.assertIn("?q=pkg-0&page=2", searched.links)

    def test_last_use_with_eviction(self) -> None:
        """With ``--max-cache-size``, last use is the last download."""
        self.make_proxy(max_cache_size=10**9)
        self.fetch_alpha()
        self.clock.advance(3600)
        self.get(self.file_path(self.upstream_alpha))
        page = self.browse()
        (row,) = page.cells()
        self.assertFalse(row[3].startswith("stored"), row)
        (moment,) = page.elements["time"]
        self.assertEqual(moment["datetime"], "2025-06-15T16:06:40Z")

    def test_sources_of_large_and_damaged_pages(self) -> None:
        """
        The upstream of a page of hundreds of files is read from its end;
        a damaged page shows none, and breaks nothing.
        """
        files = tuple(
            DistFile(f"big-{v}.0.tar.gz", f"http://up.example/{v}", {"sha256": "a" * 64})
            for v in range(600)
        )
        big = CachedPage(ProjectPage(normalize("big") or "big", files), UPSTREAM, 0.0)
        raw = big.to_bytes()
        self.assertGreater(len(raw), 64 * 1024)
        for name, data in (("big", raw), ("broken", raw[:-10]), ("empty", b"")):
            with open(os.path.join(self.data, "pages", f"{name}.json"), "wb") as f:
                f.write(data)
        rows = {row[0]: row for row in self.browse().cells()}
        self.assertEqual(rows["big"][4], UPSTREAM)
        self.assertEqual(rows["broken"][4], "–")
        self.assertEqual(rows["empty"][4], "–")

    def test_one_disk_job_at_a_time(self) -> None:
        """
        The listing reads the disk in the disk threads, one request at a
        time: a second waits for the first.
        """
        held = HeldRunner()
        storage = Storage(self.data, held)
        # The listing alone, at the root.
        client: Any = StubTreq(BrowseResource(attrs.evolve(self.proxy, storage=storage)))
        first = client.get(BASE + "/")
        second = client.get(BASE + "/?q=x")
        client.flush()
        self.assertEqual(len(held.jobs), 1)
        self.assertNoResult(first)
        held.run_all()
        client.flush()
        self.assertEqual(self.successResultOf(first).code, 200)
        self.assertNoResult(second)
        self.assertEqual(len(held.jobs), 1)
        held.run_all()
        client.flush()
        self.assertEqual(self.successResultOf(second).code, 200)

    def test_read_guard(self) -> None:
        """With ``--auth-read``, browsing needs credentials too."""
        self.make_proxy(auth_read=True)
        for path in ("/browse/", "/browse/proto-alpha/"):
            response, _ = self.get(path)
            self.assertEqual(response.code, 401, path)
        response, _ = self.get("/browse/", authorization=basic("alice", "secret"))
        self.assertEqual(response.code, 200)


class ProjectPageTests(BrowseCase):
    def test_stored_release(self) -> None:
        """
        The releases with a stored file, newest first, each file with its
        size, hash and upload time; all releases on asking.
        """
        self.fetch_alpha()
        page = self.browse("proto-alpha/")
        self.assertEqual(page.value("releases"), 1)
        self.assertEqual(page.value("stored-files"), 1)
        self.assertEqual(page.value("stored-bytes"), len(self.upstream_alpha.data))
        alpha = self.upstream_alpha
        (row,) = page.cells()
        self.assertEqual(row[:4], [alpha.filename, "yes", f"{len(alpha.data)} B", alpha.sha256])
        self.assertIn(f"../../files/proto-alpha/{alpha.filename}", page.links)
        (uploaded,) = page.elements["time"][1:]
        self.assertEqual(uploaded["datetime"], "2025-01-02T03:04:05Z")
        self.assertIn(UPSTREAM, "".join(page.text))

        everything = self.browse("proto-alpha/?all=1")
        self.assertEqual(everything.value("releases"), 2)
        rows = everything.cells()
        self.assertEqual([r[1] for r in rows], ["yes", "no"])
        self.assertTrue(rows[1][0].startswith("proto_alpha-1.0"), rows)
        self.assertNotIn("../../files/proto-alpha/" + rows[1][0], everything.links)

    def test_only_what_is_stored(self) -> None:
        """A project nothing is stored of is not found, and not fetched."""
        asked = len(self.index.requests)
        response, body = self.get("/browse/proto-beta/")
        self.assertEqual(response.code, 404)
        self.assertIn(b"nothing of proto-beta is stored here", body)
        self.assertEqual(len(self.index.requests), asked)

    def test_names(self) -> None:
        """Other spellings redirect; what is no project name is not found."""
        self.fetch_alpha()
        for path, location in (
            ("/browse/Proto_Alpha/", "../proto-alpha/"),
            ("/browse/proto-alpha", "proto-alpha/"),
            ("/browse", "browse/"),
        ):
            response, _ = self.get(path)
            self.assertEqual(response.code, 301, path)
            self.assertEqual(response.headers.getRawHeaders("location"), [location])
        for path in ("/browse/-bad-/", "/browse/proto-alpha/more", "/browse/%00/"):
            response, _ = self.get(path)
            self.assertEqual(response.code, 404, path)

    def test_uploaded(self) -> None:
        """An uploaded file shows as such, with its hash and upload time."""
        self.clock.advance(60)
        self.assertEqual(self.upload_corp().code, 200)
        page = self.browse("corp-lib/")
        (row,) = page.cells()
        self.assertEqual(row[0], f"{self.corp.filename} (uploaded here)")
        self.assertEqual(row[3], self.corp.sha256)
        self.assertEqual(page.elements["time"][0]["datetime"], "2025-06-15T15:07:40Z")
        self.assertIn("No upstream page is stored.", "".join(page.text))

    def test_stored_file_the_page_lost(self) -> None:
        """A stored file its page no longer lists is still shown."""
        self.fetch_alpha()
        lost = make_wheel("proto-alpha", "0.5")
        with open(os.path.join(self.data, "files", "proto-alpha", lost.filename), "wb") as f:
            f.write(lost.data)
        page = self.browse("proto-alpha/")
        self.assertEqual(page.value("releases"), 2)
        self.assertEqual(page.cells()[1][0], f"{lost.filename} (not on the stored page)")

    def test_hostile_page_escaped(self) -> None:
        """
        Names, times and URLs from an upstream are shown as text; an
        upstream's password is not shown.
        """
        hostile = "<img src=x onerror=alert(1)>.egg"
        page = ProjectPage(
            normalize("evil") or "evil",
            (DistFile(hostile, "http://up.example/x", upload_time="<b>soon</b>"),),
        )
        cached = CachedPage(page, "http://user:s3cret@up.example/simple/", 0.0)
        with open(os.path.join(self.data, "pages", "evil.json"), "wb") as f:
            f.write(cached.to_bytes())
        _, body = self.get("/browse/evil/?all=1")
        self.assertNotIn(b"<img", body)
        self.assertNotIn(b"<b>", body)
        self.assertNotIn(b"s3cret", body)
        shown = Page(body.decode())
        self.assertEqual(shown.cells()[0][0], hostile)
        self.assertEqual(shown.cells()[0][4], "–")
        _, listing = self.get("/browse/")
        self.assertNotIn(b"s3cret", listing)


class MarkupTests(SynchronousTestCase):
    def test_upload_times(self) -> None:
        """An upstream's upload time is shown when it is one, else a dash."""
        self.assertIn('datetime="2025-01-02T03:04:05Z"', iso_moment("2025-01-02T03:04:05.1Z"))
        for junk in (None, "", "soon", "9" * 100, "2025-13-45T00:00:00Z"):
            self.assertEqual(iso_moment(junk), "–")

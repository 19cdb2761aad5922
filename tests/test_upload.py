"""
Uploads, private pages and the private-file API, in memory.

Uploads are fed as raw bytes to the real site (``ProxySite`` with the body
policy the service installs) over a StringTransport, so the body limits,
``Content-Length`` framing and streaming to disk are the production ones.
Reads go through StubTreq.  The upstream is the fake index (through treq's
RequestTraversalAgent); bcrypt and disk work run synchronously.
"""

from __future__ import annotations

import hashlib
import json
import os
from io import BytesIO
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from proxypypi.cache.storage import Storage
from proxypypi.private.auth import Authenticator
from proxypypi.service.compose import build_proxy, build_site
from proxypypi.simple.negotiate import JSON_V1
from proxypypi.testing import make_sdist, make_wheel
from proxypypi.web.root import RootResource
from tests.support.auth import basic, counting_checkpw
from tests.support.disk import listing, sync_run
from tests.support.harness import BASE, ProxyHarness
from tests.support.uploads import BOUNDARY, multipart, twine_fields
from tests.support.wire import Answer, parse_answer


class UploadTests(ProxyHarness):
    def setUp(self) -> None:
        super().setUp()
        self.wheel = make_wheel(
            "Proto-Alpha", "1.0", requires_python=">=3.8", requires_dist=["proto-beta"]
        )
        self.sdist = make_sdist("proto-alpha", "1.0")

    def test_upload_wheel_and_sdist(self) -> None:
        """
        twine's fields for a wheel and an sdist are stored; the private page
        lists both with hashes, size, upload-time, requires-python and the
        wheel's core metadata, served byte-exact.
        """
        for dist in (self.wheel, self.sdist):
            response = self.upload(dist, fields=twine_fields(dist, "Proto-Alpha"))
            self.assertEqual(response.code, 200, response)
            self.assertIn(dist.sha256, response.body.decode())
        page = self.page("proto-alpha")
        self.assertEqual(page["meta"]["api-version"], "1.1")
        self.assertEqual(page["versions"], ["1.0"])
        wheel, sdist = page["files"]
        self.assertEqual(wheel["filename"], self.wheel.filename)
        self.assertEqual(wheel["hashes"], {"sha256": self.wheel.sha256})
        self.assertEqual(wheel["size"], len(self.wheel.data))
        self.assertEqual(wheel["upload-time"], "2025-06-15T15:06:40.000000Z")
        self.assertEqual(wheel["requires-python"], ">=3.8")
        self.assertEqual(wheel["core-metadata"], {"sha256": self.wheel.metadata_sha256})
        self.assertNotIn("core-metadata", sdist)
        response, body = self.get(f"/files/proto-alpha/{self.wheel.filename}.metadata")
        self.assertEqual((response.code, body), (200, self.wheel.metadata))
        response, body = self.get(f"/files/proto-alpha/{self.sdist.filename}")
        self.assertEqual((response.code, body), (200, self.sdist.data))
        self.assertEqual(response.headers.getRawHeaders("etag"), [f'"{self.sdist.sha256}"'])
        self.assertEqual(os.listdir(self.proxy.storage.tmp_dir), [])

    def test_local_version_file_name(self) -> None:
        """A '+' in a file name works raw and percent-encoded (pip sends %2B)."""
        local = make_wheel("proto-alpha", "1.1+local")
        self.assertEqual(self.upload(local).code, 200)
        for quoted in (local.filename, local.filename.replace("+", "%2B")):
            response, body = self.get(f"/files/proto-alpha/{quoted}")
            self.assertEqual((response.code, body), (200, local.data))

    def test_upload_paths_never_redirect(self) -> None:
        """/, /legacy and /legacy/ all take the upload directly."""
        for path in ("/legacy", "/legacy/", "/"):
            response = self.upload(self.wheel, path=path)
            self.assertEqual(response.code, 200, (path, response))

    def test_private_page_shadows_upstream(self) -> None:
        """
        Once a name has private files, its page lists only them (never the
        upstream's higher version) and no upstream is asked, even for a page
        cached before the upload; upstream file URLs are 404 without a fetch.
        """
        before = self.page("proto-alpha")
        self.assertEqual(len(before["files"]), 2)
        asked = len(self.index.requests)
        self.assertEqual(self.upload(self.wheel).code, 200)
        after = self.page("proto-alpha")
        self.assertEqual([f["filename"] for f in after["files"]], [self.wheel.filename])
        self.clock.advance(3600)  # stale: an upstream page would be refreshed now
        self.assertEqual(self.page("proto-alpha")["versions"], ["1.0"])
        response, _ = self.get(f"/files/proto-alpha/{self.upstream_alpha.filename}")
        self.assertEqual(response.code, 404)
        self.assertEqual(len(self.index.requests), asked)

    def test_project_list_names_private_projects(self) -> None:
        """
        /simple/ lists every project: upstream names, plus private names the
        upstream does not have (once each), in HTML and JSON.
        """
        secret = make_wheel("proto-secret", "1.0")
        self.assertEqual(self.upload(secret).code, 200)
        self.assertEqual(self.upload(self.wheel).code, 200)  # also upstream: not twice
        _, body = self.get("/simple/", accept="text/html")
        self.assertEqual(body.count(b'href="proto-secret/"'), 1)
        self.assertEqual(body.count(b'href="proto-alpha/"'), 1)
        self.assertIn(b'href="proto-beta/"', body)
        self.assertTrue(body.endswith(b"</html>\n"))
        _, body = self.get("/simple/", accept="application/vnd.pypi.simple.v1+json")
        names = [p["name"] for p in json.loads(body)["projects"]]
        self.assertEqual(sorted(names), ["proto-alpha", "proto-beta", "proto-secret"])
        self.assertEqual(self.upload(make_wheel("proto-later", "1.0")).code, 200)
        _, body = self.get("/simple/", accept="application/vnd.pypi.simple.v1+json")
        names = [p["name"] for p in json.loads(body)["projects"]]
        self.assertIn("proto-later", names)
        self.assertEqual(self.index.count("/simple/", "GET") - self.index.count("/simple/p"), 1)

    def test_private_page_etag_changes(self) -> None:
        """Each upload changes the page's ETag; the old one no longer gets 304."""
        self.upload(self.wheel)
        response, _ = self.get("/simple/proto-alpha/", accept=JSON_V1)
        etag = response.headers.getRawHeaders("etag")[0]
        self.assertIn("no-cache", response.headers.getRawHeaders("cache-control")[0])
        self.upload(self.sdist)
        response, _ = self.get("/simple/proto-alpha/", accept=JSON_V1, if_none_match=etag)
        self.assertEqual(response.code, 200)
        self.assertNotEqual(response.headers.getRawHeaders("etag")[0], etag)

    def test_html_page(self) -> None:
        """The private page renders as HTML too, with the PEP 658 attribute."""
        self.upload(self.wheel)
        response, body = self.get("/simple/proto-alpha/", accept="text/html")
        self.assertEqual(response.code, 200)
        self.assertIn(f"sha256={self.wheel.sha256}".encode(), body)
        self.assertIn(b'data-requires-python="&gt;=3.8"', body)
        self.assertIn(f'data-core-metadata="sha256={self.wheel.metadata_sha256}"'.encode(), body)

    def test_identical_reupload_and_conflict(self) -> None:
        """
        The same file again answers 200 (twine's retries); different bytes
        under the same name answer 409 and change nothing.
        """
        self.assertEqual(self.upload(self.wheel).code, 200)
        stored = listing(self.data)
        response = self.upload(self.wheel)
        self.assertEqual(response.code, 200)
        self.assertIn("already here", response.body.decode())
        other = make_wheel("Proto-Alpha", "1.0", summary="something else")
        self.assertNotEqual(other.sha256, self.wheel.sha256)
        self.assertRefused(self.upload(other), 409, "already exists")
        self.assertEqual(listing(self.data), stored)

    def test_overwrite_allowed(self) -> None:
        """With --allow-overwrite a different file replaces the old one."""
        self.make_proxy(allow_overwrite=True)
        self.upload(self.wheel)
        other = make_wheel("Proto-Alpha", "1.0", summary="something else")
        self.assertEqual(self.upload(other).code, 200)
        (f,) = self.page("proto-alpha")["files"]
        self.assertEqual(f["hashes"]["sha256"], other.sha256)
        _, body = self.get(f"/files/proto-alpha/{other.filename}")
        self.assertEqual(body, other.data)

    def test_uploads_survive_restart(self) -> None:
        """A new proxy on the same storage serves what was uploaded."""
        self.upload(self.wheel)
        storage = Storage(self.config.storage, sync_run)
        storage.prepare()
        self.proxy = build_proxy(self.config, self.clock, storage, lambda cfg: self.upstream)
        self.client = StubTreq(RootResource(self.proxy))
        (f,) = self.page("proto-alpha")["files"]
        self.assertEqual(f["hashes"]["sha256"], self.wheel.sha256)

    def test_merge_upstream(self) -> None:
        """
        A project named in --merge-upstream lists its private files first,
        then the upstream's that do not collide; both kinds download.
        """
        self.make_proxy(merge_upstream=("Proto_Alpha",))
        self.upload(self.wheel)
        names = [f["filename"] for f in self.page("proto-alpha")["files"]]
        self.assertEqual(names, [self.wheel.filename, self.upstream_alpha.filename])
        _, body = self.get(f"/files/proto-alpha/{self.upstream_alpha.filename}")
        self.assertEqual(body, self.upstream_alpha.data)
        _, body = self.get(f"/files/proto-alpha/{self.wheel.filename}")
        self.assertEqual(body, self.wheel.data)

    def test_stubtreq_site(self) -> None:
        """
        A site built without the spooling request (here treq's own) still
        takes uploads: the buffered body is parsed in a thread.
        """
        body = multipart(twine_fields(self.wheel), (self.wheel.filename, self.wheel.data))
        d = self.client.post(
            BASE + "/legacy/",
            data=body,
            headers={
                "content-type": [f"multipart/form-data; boundary={BOUNDARY}"],
                "authorization": [basic("alice", "secret")],
            },
        )
        self.settle()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(len(self.page("proto-alpha")["files"]), 1)


class BodyBufferTests(ProxyHarness):
    """
    Where the site buffers request bodies that are not uploads.
    """

    def test_content_file(self) -> None:
        """Small announced bodies stay in memory; large or unannounced ones go to a file."""
        self.assertIsInstance(self.site.getContentFile(0), BytesIO)
        self.assertIsInstance(self.site.getContentFile(99_999), BytesIO)
        for length in (100_000, None):
            f = self.site.getContentFile(length)
            self.addCleanup(f.close)
            self.assertNotIsInstance(f, BytesIO)
            f.write(b"body")
            f.seek(0)
            self.assertEqual(f.read(), b"body")

    def test_small_body_reaches_resource(self) -> None:
        """A small non-form body is buffered and answered like any request."""
        response = self.raw(b"{}", path="/health", method="POST", content_type="application/json")
        self.assertEqual(response.code, 405)


class BadUploadTests(ProxyHarness):
    """
    Every bad upload is a 4xx with a one-line reason and leaves storage as
    it was.
    """

    def setUp(self) -> None:
        super().setUp()
        self.wheel = make_wheel("proto-alpha", "1.0")
        self.before = listing(self.data)

    def tearDown(self) -> None:
        self.assertEqual(listing(self.data), self.before)

    def refused(self, response: Answer, code: int, fragment: str) -> None:
        self.assertRefused(response, code, fragment)

    def test_missing_fields(self) -> None:
        """Each required field, and the file, is required."""
        for field in (":action", "protocol_version", "name", "version", "filetype"):
            fields = twine_fields(self.wheel, **{field: None})
            self.refused(self.upload(self.wheel, fields=fields), 400, field)
        body = multipart(twine_fields(self.wheel), None)
        self.refused(self.raw(body), 400, "content")
        no_digest = twine_fields(self.wheel, sha256_digest=None, blake2_256_digest=None)
        self.refused(self.upload(self.wheel, fields=no_digest), 400, "sha256_digest")

    def test_name_and_version_mismatch(self) -> None:
        """The file name must be the declared project, version and file type."""
        cases = [
            (twine_fields(self.wheel, name="proto-beta"), "is for project proto-alpha"),
            (twine_fields(self.wheel, version="1.1"), "is version 1.0"),
            (twine_fields(self.wheel, filetype="sdist"), "does not match"),
            (twine_fields(self.wheel, name="../etc"), "not a valid project name"),
            (twine_fields(self.wheel, **{":action": "submit"}), "file_upload"),
            (twine_fields(self.wheel, requires_python="~~3"), "not a version specifier"),
        ]
        for fields, fragment in cases:
            self.refused(self.upload(self.wheel, fields=fields), 400, fragment)

    def test_path_separators(self) -> None:
        """File names with separators or '..' are refused, however quoted."""
        fields = twine_fields(self.wheel)
        for filename in (
            "../proto_alpha-1.0-py3-none-any.whl",
            "sub/proto_alpha-1.0-py3-none-any.whl",
            "proto_alpha-1.0-py3-none-any..whl",
        ):
            body = multipart(fields, (filename, self.wheel.data))
            self.refused(self.raw(body), 400, "no path separators")
        body = multipart(
            fields,
            (self.wheel.filename, self.wheel.data),
            disposition='form-data; name="content"; '
            'filename="C:\\\\x\\\\proto_alpha-1.0-py3-none-any.whl"',
        )
        self.refused(self.raw(body), 400, "no path separators")

    def test_not_a_distribution(self) -> None:
        """Other file names, and a .whl that is no wheel, are refused."""
        body = multipart(twine_fields(self.wheel), ("setup.py", self.wheel.data))
        self.refused(self.raw(body), 400, "is not a wheel")
        junk = b"not a zip file at all"
        fields = twine_fields(
            self.wheel,
            sha256_digest=hashlib.sha256(junk).hexdigest(),
            blake2_256_digest=None,
        )
        body = multipart(fields, (self.wheel.filename, junk))
        self.refused(self.raw(body), 400, "not a valid wheel")

    def test_wrong_digest(self) -> None:
        """A sha256 or blake2 digest that does not match the bytes is refused."""
        wrong = "0" * 64
        for field in ("sha256_digest", "blake2_256_digest"):
            fields = twine_fields(self.wheel, **{field: wrong})
            self.refused(self.upload(self.wheel, fields=fields), 400, f"{field} does not match")
        fields = twine_fields(self.wheel, sha256_digest="xyz")
        self.refused(self.upload(self.wheel, fields=fields), 400, "hex digest")

    def test_md5_only(self) -> None:
        """An md5 digest alone is checked, and accepted when right."""
        md5 = hashlib.md5(self.wheel.data).hexdigest()
        base = {"sha256_digest": None, "blake2_256_digest": None}
        fields = twine_fields(self.wheel, **base, md5_digest="0" * 32)
        self.refused(self.upload(self.wheel, fields=fields), 400, "md5_digest does not match")
        fields = twine_fields(self.wheel, **base, md5_digest=md5)
        self.assertEqual(self.upload(self.wheel, fields=fields).code, 200)
        self.before = listing(self.data)  # this one was meant to be stored

    def test_truncated_multipart(self) -> None:
        """A body whose multipart data stops before the last boundary is refused."""
        body = multipart(twine_fields(self.wheel), (self.wheel.filename, self.wheel.data))
        self.refused(self.raw(body[:-50]), 400, "truncated")

    def test_connection_lost_mid_body(self) -> None:
        """A client gone halfway through the body leaves no spool file behind."""
        big = make_wheel("proto-alpha", "1.0", payload_size=20_000)
        body = multipart(twine_fields(big), (big.filename, big.data))
        protocol, transport = self.connect()
        protocol.dataReceived(self.head(len(body)) + body[: len(body) // 2])
        self.assertEqual(len(os.listdir(self.proxy.storage.tmp_dir)), 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(transport.value(), b"")

    def test_forged_content_length(self) -> None:
        """
        A Content-Length shorter than the body cuts it (truncated); a longer
        one just waits, and stores nothing when the client gives up.
        """
        body = multipart(twine_fields(self.wheel), (self.wheel.filename, self.wheel.data))
        self.refused(self.raw(body, length=len(body) - 100), 400, "truncated")
        protocol, transport = self.connect()
        protocol.dataReceived(self.head(len(body) + 1000) + body)
        self.assertEqual(transport.value(), b"")
        protocol.connectionLost(Failure(ConnectionDone()))

    def test_too_large(self) -> None:
        """
        Over --max-upload-size: refused from the Content-Length before any
        byte of the body, or as soon as a chunked body or the file part
        grows past it; the connection is closed either way.
        """
        self.make_proxy(max_upload_size=20_000)
        self.before = listing(self.data)
        big = make_wheel("proto-alpha", "1.0", payload_size=30_000)
        body = multipart(twine_fields(big), (big.filename, big.data))
        protocol, transport = self.connect()
        protocol.dataReceived(
            self.head(10 * 1024 * 1024, auth=None, extra="Expect: 100-continue\r\n")
        )
        response = parse_answer(transport.value())
        assert response is not None
        self.assertFalse(transport.value().startswith(b"HTTP/1.1 100"))
        self.refused(response, 413, "--max-upload-size")
        self.assertTrue(transport.disconnecting)
        for kwargs in ({"chunked": True}, {}):
            response = self.raw(body, **kwargs)  # type: ignore[arg-type]
            self.refused(response, 413, "--max-upload-size")
        self.assertEqual(os.listdir(self.proxy.storage.tmp_dir), [])

    def test_not_multipart(self) -> None:
        """A body of another type is refused, and a large one is not read."""
        self.refused(self.raw(b'{"a": 1}', content_type="application/json"), 400, "multipart")
        self.refused(self.raw(b"x" * 10, content_type=None), 400, "multipart")
        self.refused(
            self.raw(b"", content_type="text/plain", length=10 * 1024 * 1024), 413, "too large"
        )
        self.refused(self.raw(b"--x--\r\n", content_type="multipart/form-data"), 400, "boundary")

    def test_garbage_multipart(self) -> None:
        """Broken multipart framing is refused."""
        body = b"--" + BOUNDARY.encode() + b"\r\nno headers here\r\n\r\nx\r\n"
        self.refused(self.raw(body), 400, "malformed multipart")

    def test_no_or_wrong_credentials(self) -> None:
        """
        No credentials, a wrong password, an unknown user and a malformed
        header all get the same 401 with a Basic challenge.
        """
        answers = set()
        for header in (None, "Basic alice:wrong", "Basic mallory:secret", "Basic !!!", "Bearer x"):
            response = self.upload(self.wheel, auth=header)
            self.refused(response, 401, "credentials")
            self.assertEqual(
                response.headers["www-authenticate"], 'Basic realm="proxypypi", charset="UTF-8"'
            )
            answers.add(response.body)
        self.assertEqual(len(answers), 1)

    def test_wrong_credentials_stop_spooling(self) -> None:
        """
        Credentials are checked as soon as the headers are in: with wrong
        ones, nothing of the body reaches the disk, and the refusal costs
        one bcrypt, not two.
        """
        # The same proxy, with a checker that counts its bcrypt verifications.
        calls: list[bytes] = []
        counted = Authenticator.from_htpasswd(
            self.auth_file, sync_run, self.clock, verify=counting_checkpw(calls)
        )
        self.site = build_site(attrs.evolve(self.proxy, auth=counted))
        big = make_wheel("proto-alpha", "1.0", payload_size=20_000)
        body = multipart(twine_fields(big), (big.filename, big.data))
        protocol, transport = self.connect()
        protocol.dataReceived(
            self.head(len(body), auth="Basic alice:wrong") + body[: len(body) // 2]
        )
        self.assertEqual(os.listdir(self.proxy.storage.tmp_dir), [])
        protocol.dataReceived(body[len(body) // 2 :])
        response = parse_answer(transport.value())
        assert response is not None
        self.refused(response, 401, "credentials")
        self.assertEqual(len(calls), 1)

    def test_uploads_disabled(self) -> None:
        """Without --auth-file uploads are refused, saying how to enable them."""
        self.make_proxy(auth_file=None)
        self.before = listing(self.data)
        self.refused(self.upload(self.wheel), 403, "--auth-file")


class PrivateApiTests(ProxyHarness):
    """
    ``/api/private/...``: yank, unyank, delete, release.
    """

    def setUp(self) -> None:
        super().setUp()
        self.wheel = make_wheel("proto-alpha", "1.0")
        self.sdist = make_sdist("proto-alpha", "1.0")
        for dist in (self.wheel, self.sdist):
            self.assertEqual(self.upload(dist).code, 200)

    def api(self, method: str, path: str, body: bytes = b"", **kwargs: Any) -> Answer:
        kwargs.setdefault("content_type", "application/json" if body else None)
        return self.raw(body, method=method, path="/api/private/" + path, **kwargs)

    def test_yank_and_unyank(self) -> None:
        """
        A yank with a reason shows on both page formats and changes the
        ETag; unyank takes it back.  The file stays installable.
        """
        response, _ = self.get("/simple/proto-alpha/", accept=JSON_V1)
        etag = response.headers.getRawHeaders("etag")[0]
        response = self.api("POST", f"proto-alpha/{self.wheel.filename}/yank", b'{"reason": "bad"}')
        self.assertEqual(response.code, 200, response)
        self.assertEqual(json.loads(response.body)["yanked"], "bad")
        wheel, sdist = self.page("proto-alpha")["files"]
        self.assertEqual((wheel["yanked"], sdist["yanked"]), ("bad", False))
        response, body = self.get("/simple/proto-alpha/", accept="text/html", if_none_match=etag)
        self.assertEqual(response.code, 200)
        self.assertIn(b'data-yanked="bad"', body)
        response, body = self.get(f"/files/proto-alpha/{self.wheel.filename}")
        self.assertEqual(body, self.wheel.data)
        self.api("POST", f"proto-alpha/{self.sdist.filename}/yank")
        self.assertIs(self.page("proto-alpha")["files"][1]["yanked"], True)
        self.api("POST", f"proto-alpha/{self.wheel.filename}/unyank")
        self.assertIs(self.page("proto-alpha")["files"][0]["yanked"], False)

    def test_delete_and_release(self) -> None:
        """
        Deleting removes a file and its metadata; the name stays private
        (no upstream files appear) until released, and release needs the
        project to be empty.
        """
        self.assertRefused(self.api("DELETE", "proto-alpha"), 409, "delete them first")
        for dist in (self.wheel, self.sdist):
            response = self.api("DELETE", f"proto-alpha/{dist.filename}")
            self.assertEqual(response.code, 200, response)
        self.assertEqual(self.page("proto-alpha")["files"], [])
        response, _ = self.get(f"/files/proto-alpha/{self.wheel.filename}")
        self.assertEqual(response.code, 404)
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.data, "private", "proto-alpha"))), [".page.json"]
        )
        self.assertEqual(self.api("DELETE", "proto-alpha").code, 200)
        self.assertEqual(len(self.page("proto-alpha")["files"]), 2)  # the upstream's again
        self.assertFalse(os.path.exists(os.path.join(self.data, "private", "proto-alpha")))

    def test_list_files(self) -> None:
        """GET on a project lists its files with who uploaded them."""
        response = self.api("GET", "proto-alpha")
        files = json.loads(response.body)["files"]
        self.assertEqual([f["uploaded-by"] for f in files], ["alice", "alice"])

    def test_refusals(self) -> None:
        """Credentials are required; unknown files, paths and bodies are refused."""
        path = f"proto-alpha/{self.wheel.filename}/yank"
        self.assertRefused(self.api("POST", path, auth=None), 401, "credentials")
        self.assertRefused(self.api("POST", path, auth="Basic bob:wrong"), 401, "credentials")
        self.assertRefused(self.api("POST", "proto-alpha/nope.whl/yank"), 404, "not a file")
        self.assertRefused(self.api("POST", path, b"[1"), 400, "JSON")
        self.assertRefused(self.api("POST", "Proto_Alpha/x/yank"), 404, "normalized")
        self.assertRefused(self.api("GET", "other-project"), 404, "not a private project")
        self.assertEqual(self.api("PATCH", path).code, 405)
        self.make_proxy(auth_file=None)
        self.assertRefused(self.api("POST", path), 403, "--auth-file")


class AuthReadTests(ProxyHarness):
    """
    ``--auth-read``: every read needs a valid user, except ``/health``.
    """

    settings = {"auth_read": True}

    def test_reads_need_credentials(self) -> None:
        """Pages, files and the root are 401 without credentials; /health is open."""
        for path in ("/simple/proto-alpha/", "/files/proto-alpha/x.whl", "/", "/simple/"):
            response, body = self.get(path)
            self.assertEqual(response.code, 401, path)
            self.assertIn(b"credentials", body)
            self.assertTrue(response.headers.getRawHeaders("www-authenticate"))
        response, _ = self.get("/simple/proto-alpha/", authorization=basic("bob", "nope"))
        self.assertEqual(response.code, 401)
        response, _ = self.get("/health")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.index.count("/simple/"), 0)

    def test_reads_with_credentials(self) -> None:
        """With a valid user everything works, and responses are private to caches."""
        auth = basic("bob", "hunter2")
        response, body = self.get("/simple/proto-alpha/", accept=JSON_V1, authorization=auth)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["max-age=60, private"])
        filename = json.loads(body)["files"][0]["filename"]
        response, body = self.get(f"/files/proto-alpha/{filename}", authorization=auth)
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("cache-control")[0].startswith("private"))
        response, _ = self.get("/simple/proto-alpha", authorization=auth)
        self.assertEqual(response.code, 301)

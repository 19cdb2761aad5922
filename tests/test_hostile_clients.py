"""
Attacks by clients (issue 14, "Clients"), each replayed against the
production site in memory: the answer is a clear refusal, never a 500, a
traceback or a dropped connection.
"""

from __future__ import annotations

from proxypypi.service.compose import build_site
from proxypypi.testing import make_wheel
from tests.support.disk import UnwritableSpool
from tests.support.harness import PIP_ACCEPT, ProxyHarness


class MalformedRequestTests(ProxyHarness):
    def test_range_of_thousands_of_digits(self) -> None:
        """
        ``Range: bytes=<5000 digits>-`` on a file is unsatisfiable (416),
        and an end of 5000 digits is clamped (206); neither is a 500.
        """
        self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)
        path = f"/files/proto-alpha/{self.upstream_alpha.filename}"
        size = len(self.upstream_alpha.data)
        response, _ = self.get(path, range="bytes=" + "9" * 5000 + "-")
        self.assertEqual(response.code, 416)
        self.assertEqual(response.headers.getRawHeaders("content-range"), [f"bytes */{size}"])
        response, body = self.get(path, range="bytes=1-" + "9" * 5000)
        self.assertEqual((response.code, body), (206, self.upstream_alpha.data[1:]))

    def test_project_name_too_long_to_store(self) -> None:
        """
        Names of 201 to 255 bytes (valid, but too long for a stored page's
        file name) are 404 at once, without asking the upstream.
        """
        for length in (201, 251, 255):
            response, body = self.get(f"/simple/{'a' * length}/", accept=PIP_ACCEPT)
            self.assertEqual(response.code, 404, body)
            response, _ = self.get(f"/files/{'a' * length}/a-1.0.tar.gz")
            self.assertEqual(response.code, 404)
        self.assertEqual(self.index.count("/simple/"), 0)

    def test_head_on_upload_url(self) -> None:
        """
        HEAD (and GET) on the upload URLs are 405 naming the one method
        allowed; HEAD where GET works is still answered.
        """
        for path in ("/legacy/", "/legacy"):
            for method in ("HEAD", "GET", "PUT"):
                response, _ = self.request(method, path)
                self.assertEqual(response.code, 405, (method, path))
                self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])
        response, _ = self.request("HEAD", "/simple/proto-alpha/")
        self.assertEqual(response.code, 200)


class ReadOnlyStorageTests(ProxyHarness):
    def test_upload_to_read_only_storage(self) -> None:
        """
        When the spool directory cannot be written (nor anything in it
        removed), an upload gets 507 naming the reason, not an empty reply.
        """
        self.make_proxy(UnwritableSpool)
        storage = self.proxy.storage
        assert isinstance(storage, UnwritableSpool)
        storage.broken = True
        self.site = build_site(self.proxy)  # whose uploads spool in the broken tmp/
        response = self.upload(make_wheel("corp-lib", "1.0"))
        self.assertRefused(response, 507, "cannot store the upload here")
        self.assertFalse(self.proxy.private.is_private("corp-lib"))

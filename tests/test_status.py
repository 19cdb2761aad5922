"""
The status page (``GET /``), the address it advertises, and the start-up
configuration block, against known sequences of requests (the in-memory
harness of `tests.support.harness`).
"""

from __future__ import annotations

import os

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from proxypypi import __version__
from proxypypi.config.model import Config, UpstreamConfig
from proxypypi.config.urls import ConfigError
from proxypypi.service.describe import log_configuration
from proxypypi.sizes import human_bytes
from proxypypi.testing import Fault
from proxypypi.web.address import is_trusted
from proxypypi.web.status import human_duration
from tests.support.harness import PIP_ACCEPT, UPSTREAM, MeteredHarness
from tests.support.markup import Page


class StatusPageTests(MeteredHarness):
    def status(self, **headers: str) -> Page:
        response, body = self.get("/", **headers)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"]
        )
        page = Page(body.decode("utf-8"))
        self.assertEqual(page.errors, [])
        self.assertEqual(page.stack, [])
        self.assertNotIn("script", page.tags)
        return page

    def test_figures(self) -> None:
        """Every figure on the page matches a known sequence of requests."""
        self.clock.advance(3725)
        self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)  # page miss
        self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)  # page hit
        _, body = self.get(self.file_path(self.upstream_alpha))  # file miss
        self.get(self.file_path(self.upstream_alpha))  # file hit
        self.assertEqual(self.upload_corp().code, 200)
        self.get("/simple/corp-lib/", accept=PIP_ACCEPT)  # private
        self.get("/nowhere")
        page = self.status()

        self.assertEqual(page.show("version"), __version__)
        self.assertEqual(page.value("uptime"), 3725)
        self.assertEqual(page.show("uptime"), "1 h 2 min")
        # The upstream.
        self.assertEqual(page.show("upstream-0-state"), "healthy")
        self.assertEqual(page.value("upstream-0-requests"), 2)
        self.assertEqual(page.value("upstream-0-errors"), 0)
        self.assertEqual(page.value("upstream-0-error-rate"), 0)
        self.assertEqual(
            page.value("upstream-0-latency"), self.proxy.pool.members()[0].health.latency
        )
        self.assertIn(UPSTREAM, "".join(page.text))
        self.assertEqual(page.value("upstream-0-bytes"), self.upstream_site.sent)
        self.assertEqual(page.value("bytes-fetched"), self.upstream_site.sent)
        # The cache: 1 page hit, 1 page miss, 1 file hit, 1 file miss.
        self.assertEqual(page.value("cache-page-hit"), 1)
        self.assertEqual(page.value("cache-page-miss"), 1)
        self.assertEqual(page.value("cache-page-private"), 1)
        self.assertEqual(page.value("cache-file-hit"), 1)
        self.assertEqual(page.value("cache-file-miss"), 1)
        self.assertEqual(page.value("cache-file-join"), 0)
        self.assertEqual(page.value("hit-ratio"), 0.5)
        self.assertEqual(page.show("hit-ratio"), "50.0%")
        self.assertEqual(page.value("hit-ratio-file"), 0.5)
        file_bytes = len(self.upstream_alpha.data)
        self.assertEqual(page.value("cache-file-hit-bytes"), file_bytes)
        page_hit = page.value("cache-page-hit-bytes")
        self.assertGreater(page_hit, 0)
        self.assertEqual(page.value("bytes-from-cache"), file_bytes + page_hit)
        self.assertEqual(page.value("bytes-saved"), file_bytes + page_hit)
        # Requests (the status request itself is not counted yet).
        self.assertEqual(page.value("requests-total"), 7)
        self.assertEqual(page.value("requests-project_page"), 3)
        self.assertEqual(page.value("requests-file"), 2)
        self.assertEqual(page.value("requests-upload"), 1)
        self.assertEqual(page.value("requests-other"), 1)
        self.assertEqual(page.value("sent-file"), 2 * file_bytes)
        self.assertEqual(
            page.value("sent-total"),
            sum(page.value(f"sent-{r}") for r in ("project_page", "file", "upload", "other")),
        )
        # Storage.
        self.assertEqual(page.value("storage-files"), 1)
        self.assertEqual(page.value("storage-bytes"), file_bytes)
        self.assertEqual(page.show("storage-bytes"), human_bytes(file_bytes))
        self.assertEqual(page.value("private-files"), 1)
        self.assertEqual(page.value("private-bytes"), len(self.corp.data))
        self.assertGreater(page.value("disk-free"), 0)
        self.assertGreaterEqual(page.value("disk-total"), page.value("disk-free"))
        self.assertEqual(page.value("evicted-files"), 0)
        # Private projects and downloads.
        self.assertEqual(page.value("private"), 1)
        self.assertIn("corp-lib", "".join(page.text))
        self.assertEqual(page.show("downloads"), "No download running.")
        # The next page counts the first.
        self.assertEqual(self.status().value("requests-status"), 1)

    def test_downloads_with_progress(self) -> None:
        """A download in flight is listed with its progress."""
        d = self.slow_download(3)
        response, body = self.get("/")
        page = Page(body.decode())
        self.assertEqual(page.value("downloads"), 1)
        (download,) = self.proxy.downloads.in_flight()
        written, size = download.progress()
        self.assertIn(f'<progress value="{written}" max="{size}"></progress>', body.decode())
        self.assertIn(self.upstream_alpha.filename, "".join(page.text))
        self.finish_downloads()
        self.body_of(d)

    def test_use_this_index_first(self) -> None:
        """
        What a newcomer needs leads the page, before any figure; the page
        links to the browse pages, and its tables label their cells for
        a phone's layout.
        """
        _, body = self.get("/")
        text = body.decode()
        headings = [h.split("</h2>")[0] for h in text.split("<h2>")[1:]]
        self.assertEqual(headings[0], "Use this index")
        self.assertIn("Upstreams", headings[1:])
        self.assertIn('id="index-url"', text.split("<h2>")[1])
        page = Page(text)
        self.assertIn("browse/", page.links)
        self.assertIn('data-label="upstream"', text)

    def test_upstream_down(self) -> None:
        """A member taken out of rotation shows as down, with its error rate."""
        self.index.fault = Fault(status=500)
        for name in ("a", "b", "c"):
            self.get(f"/simple/proto-{name}/")
        page = self.status()
        self.assertEqual(page.show("upstream-0-state"), "down")
        self.assertEqual(page.value("upstream-0-errors"), 3)
        self.assertEqual(page.value("upstream-0-error-rate"), 1.0)
        self.assertEqual(page.value("requests-project_page"), 3)

    # The address in the snippets

    def test_real_address_from_host(self) -> None:
        """The snippets use the Host the client used, with pip's trusted-host over http."""
        page = self.status(host="pypi.internal.example:8080")
        self.assertEqual(page.show("index-url"), "http://pypi.internal.example:8080/simple/")
        self.assertEqual(
            page.show("pip-conf"),
            "[global]\nindex-url = http://pypi.internal.example:8080/simple/\n"
            "trusted-host = pypi.internal.example:8080",
        )
        self.assertIn(
            "PIP_INDEX_URL=http://pypi.internal.example:8080/simple/", page.show("pip-env")
        )
        self.assertIn("UV_DEFAULT_INDEX=http://pypi.internal.example:8080/simple/", page.show("uv"))
        self.assertIn(
            "twine upload --repository-url http://pypi.internal.example:8080/", page.show("upload")
        )

    def test_forwarded_headers_from_trusted_proxy(self) -> None:
        """A trusted proxy's X-Forwarded-Proto and -Host make the address (last value wins)."""
        self.make_proxy(trusted_proxies=("127.0.0.0/8",))
        page = self.status(
            host="127.0.0.1:3141",
            x_forwarded_proto="https",
            x_forwarded_host="evil.example, proxy.example",
        )
        self.assertEqual(page.show("index-url"), "https://proxy.example/simple/")
        self.assertNotIn("trusted-host", page.show("pip-conf"))

    def test_forwarded_headers_from_untrusted_peer(self) -> None:
        """Anyone else's X-Forwarded-* headers are ignored."""
        for trusted in ((), ("10.0.0.0/8", "::1")):
            self.make_proxy(trusted_proxies=trusted)
            page = self.status(
                host="proxy.example:3141",
                x_forwarded_proto="https",
                x_forwarded_host="evil.example",
            )
            self.assertEqual(page.show("index-url"), "http://proxy.example:3141/simple/")

    def test_hostile_host_is_not_reflected(self) -> None:
        """A Host that is not a host name is not used; nothing from it lands unescaped."""
        response, body = self.get("/", host='proxy.example"><script>alert(1)</script>')
        text = body.decode()
        self.assertNotIn("<script", text)
        self.assertNotIn("alert(1)", text)
        page = Page(text)
        self.assertEqual(page.errors, [])
        # The local address of the connection instead.
        self.assertEqual(page.show("index-url"), "http://127.0.0.1/simple/")


class TrustTests(SynchronousTestCase):
    def test_is_trusted(self) -> None:
        """Addresses, networks, IPv4-mapped IPv6 and unix sockets are matched."""
        v4 = IPv4Address("TCP", "10.1.2.3", 5000)
        self.assertTrue(is_trusted(v4, ("10.0.0.0/8",)))
        self.assertTrue(is_trusted(v4, ("10.1.2.3",)))
        self.assertFalse(is_trusted(v4, ("10.1.2.4", "::1")))
        self.assertFalse(is_trusted(v4, ()))
        self.assertTrue(is_trusted(IPv6Address("TCP", "::ffff:10.1.2.3", 5000), ("10.1.2.3",)))
        self.assertTrue(is_trusted(IPv6Address("TCP", "::1", 5000), ("::1",)))
        self.assertFalse(is_trusted(IPv6Address("TCP", "::1", 5000), ("127.0.0.1",)))
        self.assertTrue(is_trusted(UNIXAddress(b"/run/p.sock"), ("unix",)))
        self.assertFalse(is_trusted(UNIXAddress(b"/run/p.sock"), ("127.0.0.1",)))

    def test_bad_trusted_proxy_refused(self) -> None:
        """A --trusted-proxy that is no address or network stops the start."""
        with self.assertRaises(ConfigError) as e:
            Config(upstreams=((UpstreamConfig(UPSTREAM),),), trusted_proxies=("proxy.example",))
        self.assertIn("proxy.example", str(e.exception))

    def test_human_figures(self) -> None:
        """Sizes and uptimes read naturally."""
        self.assertEqual(human_bytes(512), "512 B")
        self.assertEqual(human_bytes(1536), "1.5 KiB")
        self.assertEqual(human_bytes(5 * 1024**3), "5.0 GiB")
        self.assertEqual(human_duration(42), "42 s")
        self.assertEqual(human_duration(3 * 86400 + 7200), "3 d 2 h")


class StartupLogTests(SynchronousTestCase):
    def test_effective_configuration(self) -> None:
        """The start-up block states upstreams, storage, limits, switches and endpoints."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        config = Config(
            upstreams=(
                (
                    UpstreamConfig("https://a.mirror.example/simple/", weight=3),
                    UpstreamConfig("https://bob:s3cret@b.mirror.example/simple/"),
                ),
                (UpstreamConfig("https://corp.example/simple/", first_byte_timeout=4),),
            ),
            listen=("tcp:3141", "ssl:3443:privateKey=k.pem:certKey=c.pem"),
            storage="data",
            max_cache_size=50 * 1024**3,
            trusted_proxies=("10.0.0.0/8",),
        )
        log_configuration(config)
        text = "\n".join(e["log_format"].format(**e) for e in events)
        for expected in (
            "upstreams [https://a.mirror.example/simple/ (weight 3)",
            "upstream group 1: https://a.mirror.example/simple/ weight 3; timeouts: "
            "connect 5s, first byte 10s, idle 10s",
            "upstream group 2: https://corp.example/simple/ weight 1; timeouts: connect 5s, "
            "first byte 4s",
            f"storage: data ({os.path.abspath('data')})",
            "page TTL 600s, negative TTL 60s, max cache size 50 GiB, max upload size 1 GiB",
            "offline: no; uploads: off",
            "trusted proxies: 10.0.0.0/8",
            "listen endpoint: tcp:3141",
            "listen endpoint: ssl:3443:privateKey=k.pem:certKey=c.pem",
        ):
            self.assertIn(expected, text)
        self.assertNotIn("s3cret", text)
        self.assertIn("https://bob:***@b.mirror.example/simple/", text)

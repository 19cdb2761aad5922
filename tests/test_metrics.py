"""
``/metrics`` against a known sequence of requests, in memory.

The proxy runs behind its production site (`ProxySite`, which counts every
finished request), reached through treq's in-memory agent; the upstream is
the fake index behind a site that sums the body bytes it sends; a Clock
drives time; disk work runs synchronously.  Each figure scraped (with the
Prometheus text parser) is compared with what the test did.
"""

from __future__ import annotations

import gzip
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from proxypypi import __version__
from proxypypi.cache.pagememory import PageMemory
from proxypypi.config.urls import display_url
from proxypypi.ops.logs import message
from proxypypi.ops.metrics import Histogram, route_of
from proxypypi.testing import Fault, make_wheel
from tests.support.harness import PIP_ACCEPT, UPSTREAM, MeteredHarness, Samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: Samples, name: str, **labels: str) -> float:
    """
    The sum of every sample of ``name`` whose labels include ``labels``.
    """
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


class MetricsTests(MeteredHarness):
    def run_sequence(self) -> dict[str, Any]:
        """
        The known sequence; returns what the client saw.
        """
        seen: dict[str, Any] = {"page": {}, "file": {}, "sent": {}}

        def count(kind: str, result: str, body: bytes) -> None:
            hits, size = seen[kind].get(result, (0, 0))
            seen[kind][result] = (hits + 1, size + len(body))

        def sent(route: str, body: bytes) -> None:
            seen["sent"][route] = seen["sent"].get(route, 0) + len(body)

        # A page fetched slowly (0.2 s), then from memory, then revalidated.
        self.index.latency = 0.2
        d = self.send("/simple/proto-alpha/", accept=PIP_ACCEPT)
        self.settle()
        self.clock.advance(0.2)
        response, body = self.body_of(d)
        self.index.latency = 0.0
        count("page", "miss", body)
        response, body = self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)
        count("page", "hit", body)
        etag = response.headers.getRawHeaders("etag")[0]
        response, body = self.get("/simple/proto-alpha/", accept=PIP_ACCEPT, if_none_match=etag)
        self.assertEqual(response.code, 304)
        count("page", "hit", body)
        # Past the TTL: served stale, refreshed in the background.
        self.clock.advance(self.config.page_ttl)
        response, body = self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)
        count("page", "stale", body)
        # A file: fetched, then stored.
        for result in ("miss", "hit"):
            response, body = self.get(self.file_path(self.upstream_alpha))
            self.assertEqual(body, self.upstream_alpha.data)
            count("file", result, body)
        # Two clients for one file at once: one download, joined.
        response, body = self.get("/simple/proto-beta/", accept=PIP_ACCEPT)
        count("page", "miss", body)
        beta = self.index.count("/files/")
        self.index.latency = 1.0
        first = self.send(self.file_path(self.beta))
        second = self.send(self.file_path(self.beta))
        self.assertEqual(len(self.proxy.downloads.in_flight()), 1)
        self.clock.advance(1.0)
        self.index.latency = 0.0
        for result, d in (("miss", first), ("join", second)):
            response, body = self.body_of(d)
            self.assertEqual(response.code, 200)
            count("file", result, body)
        self.assertEqual(self.index.count("/files/"), beta + 1)
        # Errors and other routes.
        for path, code in (("/simple/no-such/", 404), ("/nowhere", 404), ("/health", 200)):
            response, body = self.get(path)
            self.assertEqual(response.code, code)
            sent(route_of(b"GET", path.encode()), body)
        # Uploads: one accepted, one refused; then the private project.
        for password, code in (("secret", 200), ("wrong", 401)):
            r = self.upload_corp(password)
            self.assertEqual(r.code, code)
            sent("upload", r.body)
        response, body = self.get("/simple/corp-lib/", accept=PIP_ACCEPT)
        count("page", "private", body)
        response, body = self.get(self.file_path(self.corp))
        count("file", "private", body)
        for kind, route in (("page", "project_page"), ("file", "file")):
            for _, size in seen[kind].values():
                sent(route, b"x" * size)
        return seen

    def test_counters_add_up(self) -> None:
        """Every counter of /metrics matches the requests made, route by route."""
        seen = self.run_sequence()
        s = self.scrape()
        # Requests by route and status; the scrape itself is not in its own output.
        expected = {
            ("project_page", "200"): 5,
            ("project_page", "304"): 1,
            ("project_page", "404"): 1,
            ("file", "200"): 5,
            ("other", "404"): 1,
            ("health", "200"): 1,
            ("upload", "200"): 1,
            ("upload", "401"): 1,
        }
        for (route, code), n in expected.items():
            self.assertEqual(
                value(s, "proxypypi_requests_total", route=route, code=code), n, (route, code)
            )
        self.assertEqual(total(s, "proxypypi_requests_total"), sum(expected.values()))
        self.assertEqual(total(s, "proxypypi_requests_aborted_total"), 0)
        # Bytes sent, by route, as the clients received them.
        for route, n in seen["sent"].items():
            self.assertEqual(value(s, "proxypypi_sent_bytes_total", route=route), n, route)
        # Cache results and their bytes.
        for kind in ("page", "file"):
            for result, (hits, size) in seen[kind].items():
                labels = {"kind": kind, "result": result}
                responses = value(s, "proxypypi_cache_responses_total", **labels)
                self.assertEqual(responses, hits, labels)
                sent = value(s, "proxypypi_cache_sent_bytes_total", **labels)
                self.assertEqual(sent, size, labels)
        self.assertEqual(total(s, "proxypypi_cache_responses_total"), 11)
        # Response times: one page took 0.2 s, the two joined file requests
        # 1 s, everything else no time.
        for route, count, seconds, buckets in (
            ("project_page", 7, 0.2, (("0.001", 6), ("0.1", 6), ("0.25", 7), ("+Inf", 7))),
            ("file", 5, 2.0, (("0.001", 3), ("0.5", 3), ("1.0", 5), ("+Inf", 5))),
        ):
            labels = {"route": route}
            self.assertEqual(value(s, "proxypypi_request_duration_seconds_count", **labels), count)
            duration = value(s, "proxypypi_request_duration_seconds_sum", **labels)
            self.assertAlmostEqual(duration, seconds, places=4)
            for le, n in buckets:
                bucket = value(s, "proxypypi_request_duration_seconds_bucket", le=le, **labels)
                self.assertEqual(bucket, n, (route, le))
        # Uploads.
        self.assertEqual(value(s, "proxypypi_uploads_total", result="accepted"), 1)
        self.assertEqual(value(s, "proxypypi_uploads_total", result="rejected"), 1)
        # The upstream: every request it saw, every byte it sent.
        up = {"upstream": UPSTREAM}
        self.assertEqual(value(s, "proxypypi_upstream_requests_total", **up), 6)
        self.assertEqual(len(self.index.requests), 6)
        self.assertEqual(value(s, "proxypypi_upstream_errors_total", **up), 0)
        self.assertEqual(
            value(s, "proxypypi_upstream_received_bytes_total", **up), self.upstream_site.sent
        )
        self.assertEqual(value(s, "proxypypi_upstream_response_seconds_count", **up), 6)
        # The slow page (0.2 s) and the slow file (1 s).
        self.assertAlmostEqual(
            value(s, "proxypypi_upstream_response_seconds_sum", **up), 1.2, places=4
        )
        self.assertEqual(value(s, "proxypypi_upstream_state", state="healthy", **up), 1)
        self.assertEqual(total(s, "proxypypi_upstream_state", **up), 1)
        self.assertEqual(value(s, "proxypypi_upstream_in_flight", **up), 0)
        self.assertEqual(value(s, "proxypypi_upstream_error_ratio", **up), 0)
        health = self.proxy.pool.members()[0].health
        assert health.latency is not None
        self.assertEqual(value(s, "proxypypi_upstream_latency_seconds", **up), health.latency)
        # Storage: the two upstream files and the upload.
        files = [self.upstream_alpha, self.beta]
        self.assertEqual(value(s, "proxypypi_storage_files", area="files"), 2)
        self.assertEqual(
            value(s, "proxypypi_storage_bytes", area="files"), sum(len(f.data) for f in files)
        )
        self.assertEqual(value(s, "proxypypi_storage_files", area="private"), 1)
        self.assertEqual(value(s, "proxypypi_storage_bytes", area="private"), len(self.corp.data))
        self.assertEqual(value(s, "proxypypi_private_projects"), 1)
        self.assertEqual(value(s, "proxypypi_downloads_in_flight"), 0)
        self.assertEqual(value(s, "proxypypi_evictions_total"), 0)
        self.assertGreater(value(s, "proxypypi_storage_free_bytes"), 0)
        self.assertEqual(value(s, "proxypypi_start_time_seconds"), self.proxy.started_at)
        self.assertEqual(value(s, "proxypypi_build_info", version=__version__), 1)
        # The scrape counted itself once it was done.
        again = self.scrape()
        self.assertEqual(value(again, "proxypypi_requests_total", route="metrics", code="200"), 1)

    def test_page_read_from_disk_is_a_hit(self) -> None:
        """After a restart, a page read back from disk is a hit, not an upstream miss."""
        self.get("/simple/proto-beta/")
        # As after a restart: the page is on disk, nothing in memory.
        self.proxy.pages.memory = PageMemory()
        self.clock.advance(1)
        self.get("/simple/proto-beta/")
        s = self.scrape()
        self.assertEqual(value(s, "proxypypi_cache_responses_total", kind="page", result="hit"), 1)
        # Only the first request, before the restart, fetched the page.
        self.assertEqual(value(s, "proxypypi_cache_responses_total", kind="page", result="miss"), 1)

    def test_downloads_in_flight(self) -> None:
        """A download under way is counted with the bytes it has so far."""
        d = self.slow_download(1)
        s = self.scrape()
        self.assertEqual(value(s, "proxypypi_downloads_in_flight"), 1)
        (download,) = self.proxy.downloads.in_flight()
        written = download.progress()[0]
        self.assertGreater(written, 0)
        self.assertEqual(value(s, "proxypypi_downloads_in_flight_bytes"), written)
        self.finish_downloads()
        self.body_of(d)
        self.assertEqual(value(self.scrape(), "proxypypi_downloads_in_flight"), 0)

    def test_aborted_requests(self) -> None:
        """A client that leaves mid-download is counted as aborted, with what it got."""
        d = self.slow_download(3)
        response = self.successResultOf(d)
        received: list[bytes] = []

        class Leaver(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)
                self.transport.stopProducing()

        response.deliverBody(Leaver())
        self.settle()
        s = self.scrape()
        self.assertEqual(value(s, "proxypypi_requests_aborted_total", route="file"), 1)
        self.assertEqual(value(s, "proxypypi_requests_total", route="file", code="200"), 1)
        self.assertEqual(
            value(s, "proxypypi_sent_bytes_total", route="file"), len(b"".join(received))
        )
        # The download goes on for the next client.
        self.finish_downloads()
        response, body = self.get(self.file_path(self.upstream_alpha))
        self.assertEqual(body, self.upstream_alpha.data)

    def test_project_list_is_its_own_kind(self) -> None:
        """
        ``/simple/`` counts under the kind ``list``, not as a file: the file
        hit ratio and the bytes saved leave it out.
        """
        sizes = [len(self.get("/simple/", accept="text/html")[1]) for _ in range(2)]
        s = self.scrape()
        for result, size in zip(("miss", "hit"), sizes, strict=True):
            labels = {"kind": "list", "result": result}
            self.assertEqual(value(s, "proxypypi_cache_responses_total", **labels), 1)
            self.assertEqual(value(s, "proxypypi_cache_sent_bytes_total", **labels), size)
        self.assertEqual(total(s, "proxypypi_cache_responses_total", kind="file"), 0)
        metrics = self.proxy.metrics
        self.assertIsNone(metrics.hit_ratio("file"))
        self.assertIsNone(metrics.hit_ratio())
        self.assertEqual(metrics.cache_sent("hit", "miss"), 0)

    def test_client_leaving_before_the_answer(self) -> None:
        """
        A client that leaves while the project list is still awaited is
        logged and counted as cut short, not as a success.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.index.fault = Fault(hang=True)
        d = self.send("/simple/")
        self.settle()
        d.cancel()
        self.failureResultOf(d)
        self.settle()
        self.assertEqual(value(self.scrape(), "proxypypi_requests_aborted_total",
                               route="simple_index"), 1)  # fmt: skip
        (access,) = [e for e in events if e.get("path") == "/simple/"]
        self.assertFalse(access["completed"])
        self.assertTrue(message(access).endswith(" cut short"), message(access))
        self.assertEqual(message(access), formatEvent(access))

    def test_upstream_errors_and_state(self) -> None:
        """Upstream 5xx answers count as errors; three in a row take the member down."""
        self.index.fault = Fault(status=500)
        for name in ("proto-alpha", "proto-beta", "proto-gamma"):
            response, _ = self.get(f"/simple/{name}/")
            self.assertEqual(response.code, 502)
        s = self.scrape()
        up = {"upstream": UPSTREAM}
        self.assertEqual(value(s, "proxypypi_upstream_requests_total", **up), 3)
        self.assertEqual(value(s, "proxypypi_upstream_errors_total", **up), 3)
        self.assertEqual(value(s, "proxypypi_upstream_state", state="down", **up), 1)
        self.assertEqual(value(s, "proxypypi_upstream_state", state="healthy", **up), 0)
        self.assertEqual(value(s, "proxypypi_upstream_error_ratio", **up), 1.0)
        self.assertEqual(value(s, "proxypypi_requests_total", route="project_page", code="502"), 3)
        # No page was served: no cache result.
        self.assertEqual(total(s, "proxypypi_cache_responses_total"), 0)

    def test_broken_body_is_an_upstream_error(self) -> None:
        """A file body cut off mid-way counts as one error of its upstream."""
        self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)
        self.index.fault_for["/files/" + self.upstream_alpha.filename] = Fault(
            drop_after=300, times=1
        )
        response, body = self.get(self.file_path(self.upstream_alpha))
        self.assertEqual(body, self.upstream_alpha.data)  # resumed with Range
        s = self.scrape()
        up = {"upstream": UPSTREAM}
        self.assertEqual(value(s, "proxypypi_upstream_requests_total", **up), 3)
        self.assertEqual(value(s, "proxypypi_upstream_errors_total", **up), 1)
        # The 300 bytes of the broken response are not in the upstream's
        # tally: a site counts only responses that finish.
        self.assertEqual(
            value(s, "proxypypi_upstream_received_bytes_total", **up),
            self.upstream_site.sent + 300,
        )

    def test_gzip_and_openmetrics(self) -> None:
        """Scrapers that ask get gzip and OpenMetrics; only GET and HEAD are answered."""
        response, body = self.get(
            "/metrics",
            accept="application/openmetrics-text; version=1.0.0",
            accept_encoding="gzip",
        )
        text = gzip.decompress(body).decode()
        self.assertIn(
            "application/openmetrics-text", response.headers.getRawHeaders("content-type")[0]
        )
        self.assertTrue(text.rstrip().endswith("# EOF"))
        response, _ = self.get("/metrics", method="POST")
        self.assertEqual(response.code, 405)

    def test_registries_are_per_service(self) -> None:
        """Two proxies in one process keep their own figures."""
        self.get("/health")
        first = self.proxy
        self.make_proxy()
        self.assertIsNot(self.proxy.metrics, first.metrics)
        s = self.scrape()
        self.assertEqual(total(s, "proxypypi_requests_total", route="health"), 0)


class EvictionMetricsTests(MeteredHarness):
    settings = {"max_cache_size": 30_000}

    def setUp(self) -> None:
        super().setUp()
        self.big = [make_wheel(f"proto-big{i}", "1.0", payload_size=20_000) for i in range(2)]
        for dist in self.big:
            self.index.add(dist)

    def test_evictions_and_limit(self) -> None:
        """Files evicted to stay under the limit are counted; the size is the running total."""
        for dist in self.big:
            response, body = self.get(self.file_path(dist))
            self.assertEqual(body, dist.data)
        s = self.scrape()
        self.assertEqual(value(s, "proxypypi_storage_limit_bytes"), 30_000)
        self.assertEqual(value(s, "proxypypi_evictions_total"), 1)
        self.assertEqual(value(s, "proxypypi_evicted_bytes_total"), len(self.big[0].data))
        self.assertEqual(value(s, "proxypypi_storage_files", area="files"), 1)
        self.assertEqual(value(s, "proxypypi_storage_bytes", area="files"), len(self.big[1].data))


class PieceTests(SynchronousTestCase):
    def test_routes(self) -> None:
        """Requests are counted under a fixed set of routes, never a project name."""
        cases = {
            (b"GET", b"/simple/"): "simple_index",
            (b"GET", b"/simple"): "simple_index",
            (b"GET", b"/simple/requests/"): "project_page",
            (b"GET", b"/files/a/a-1.0-py3-none-any.whl"): "file",
            (b"GET", b"/files/a/a-1.0-py3-none-any.whl.metadata"): "metadata",
            (b"POST", b"/"): "upload",
            (b"POST", b"/legacy/"): "upload",
            (b"GET", b"/"): "status",
            (b"DELETE", b"/api/private/x"): "api",
            (b"GET", b"/health"): "health",
            (b"GET", b"/metrics"): "metrics",
            (b"GET", b"/favicon.ico"): "other",
        }
        for (method, path), route in cases.items():
            self.assertEqual(route_of(method, path), route, path)

    def test_histogram(self) -> None:
        """Buckets are cumulative with +Inf last; a value on a bound falls in it."""
        h = Histogram((0.1, 1.0))
        for v in (0.05, 0.1, 0.5, 7.0):
            h.observe(v)
        self.assertEqual(h.buckets(), [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)])
        self.assertAlmostEqual(h.total, 7.65)

    def test_display_url(self) -> None:
        """Upstream credentials never reach a label or the status page."""
        self.assertEqual(
            display_url("https://bob:s3cret@mirror.example/simple/"),
            "https://bob:***@mirror.example/simple/",
        )
        self.assertEqual(display_url(UPSTREAM), UPSTREAM)

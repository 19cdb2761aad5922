# -*- test-case-name: tests.test_metrics -*-
"""
``/metrics``: every figure of `proxypypi.ops.metrics` in the Prometheus text
format, read at scrape time by one collector in a registry of the
service's own.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import attrs
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from proxypypi import __version__
from proxypypi.config.urls import display_url
from proxypypi.ops.metrics import RESULTS_BY_KIND, Metrics, UpstreamMeter
from proxypypi.upstream.health import State
from proxypypi.web.errors import error
from proxypypi.web.proxy import Proxy


@attrs.define(eq=False)
class ProxyCollector:
    """
    Every ``proxypypi_*`` metric of one service, read at scrape time.
    """

    proxy: Proxy

    def collect(self) -> Iterator[Metric]:
        proxy = self.proxy
        m = proxy.all_metrics()
        info = GaugeMetricFamily(
            "proxypypi_build_info", "Version of the running proxypypi.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "proxypypi_start_time_seconds",
            "When the service started, in seconds since the epoch.",
            value=proxy.started_at,
        )
        yield from self._requests(m)
        yield from self._cache(m)
        yield from self._upstreams(proxy, m)
        yield from self._downloads(proxy)
        yield from self._storage(proxy, m)
        yield from self._policy(proxy)

    def _requests(self, m: Metrics) -> Iterator[Metric]:
        yield _counter(
            "proxypypi_requests",
            "Requests answered, by route and status code.",
            ["route", "code"],
            {(route, str(code)): n for (route, code), n in m.requests.items()},
        )
        yield _counter(
            "proxypypi_requests_aborted",
            "Requests whose client went away before the response ended, by route.",
            ["route"],
            {(route,): n for route, n in m.aborted.items()},
        )
        durations = HistogramMetricFamily(
            "proxypypi_request_duration_seconds",
            "Time from request to the end of the response, by route.",
            labels=["route"],
        )
        for route, h in sorted(m.durations.items()):
            durations.add_metric([route], h.buckets(), h.total)
        yield durations
        yield _counter(
            "proxypypi_sent_bytes",
            "Response body bytes sent to clients, by route.",
            ["route"],
            {(route,): n for route, n in m.sent.items()},
        )
        yield _counter(
            "proxypypi_uploads",
            "Upload requests (POST / or /legacy/), accepted (2xx) or rejected.",
            ["result"],
            {(result,): n for result, n in m.uploads.items()},
        )

    def _cache(self, m: Metrics) -> Iterator[Metric]:
        responses = CounterMetricFamily(
            "proxypypi_cache_responses",
            "Project page, file and project list responses by cache result: hit, stale (served "
            "while refreshed), miss (fetched for this request), join (attached to a "
            "download in flight), private.",
            labels=["kind", "result"],
        )
        sent = CounterMetricFamily(
            "proxypypi_cache_sent_bytes",
            "Body bytes of project page, file and project list responses, by cache result.",
            labels=["kind", "result"],
        )
        for kind, results in RESULTS_BY_KIND.items():
            for result in results:
                responses.add_metric([kind, result], m.cache.get((kind, result), 0))
                sent.add_metric([kind, result], m.cache_bytes.get((kind, result), 0))
        yield responses
        yield sent

    def _upstreams(self, proxy: Proxy, m: Metrics) -> Iterator[Metric]:
        members = proxy.pool.members()
        requests = CounterMetricFamily(
            "proxypypi_upstream_requests",
            "Requests sent to each upstream member (probes included).",
            labels=["upstream"],
        )
        errors = CounterMetricFamily(
            "proxypypi_upstream_errors",
            "Upstream requests that got no response, a 5xx, or a body that broke off.",
            labels=["upstream"],
        )
        received = CounterMetricFamily(
            "proxypypi_upstream_received_bytes",
            "Body bytes received from each upstream member.",
            labels=["upstream"],
        )
        latency = HistogramMetricFamily(
            "proxypypi_upstream_response_seconds",
            "Time from request to response headers, per upstream member.",
            labels=["upstream"],
        )
        state = GaugeMetricFamily(
            "proxypypi_upstream_state",
            "Health state of each upstream member (1 for the current state).",
            labels=["upstream", "state"],
        )
        error_ratio = GaugeMetricFamily(
            "proxypypi_upstream_error_ratio",
            "Share of failed requests to each member over the last minute.",
            labels=["upstream"],
        )
        average = GaugeMetricFamily(
            "proxypypi_upstream_latency_seconds",
            "Moving average of the time to the first byte, per member.",
            labels=["upstream"],
        )
        in_flight = GaugeMetricFamily(
            "proxypypi_upstream_in_flight",
            "Requests to each member in flight now.",
            labels=["upstream"],
        )
        for member in members:
            label = [display_url(member.url)]
            meter = m.upstreams.get(member.url) or UpstreamMeter(member.url)
            requests.add_metric(label, meter.requests)
            errors.add_metric(label, meter.errors)
            received.add_metric(label, meter.received)
            latency.add_metric(label, meter.latency.buckets(), meter.latency.total)
            health = member.health
            current = health.state
            for s in State:
                state.add_metric([label[0], s.value], 1 if s is current else 0)
            error_ratio.add_metric(label, health.error_rate())
            if health.latency is not None:
                average.add_metric(label, health.latency)
            in_flight.add_metric(label, health.outstanding)
        yield from (requests, errors, received, latency, state, error_ratio, average, in_flight)

    def _downloads(self, proxy: Proxy) -> Iterator[Metric]:
        downloads = proxy.all_downloads()
        yield GaugeMetricFamily(
            "proxypypi_downloads_in_flight",
            "Upstream file downloads running now.",
            value=len(downloads),
        )
        yield GaugeMetricFamily(
            "proxypypi_downloads_in_flight_bytes",
            "Bytes written so far by the downloads running now.",
            value=sum(written for _, written, _ in downloads),
        )

    def _storage(self, proxy: Proxy, m: Metrics) -> Iterator[Metric]:
        figures = proxy.storage_figures()
        size = GaugeMetricFamily(
            "proxypypi_storage_bytes",
            "Bytes of stored files: upstream files (files) and uploads (private).",
            labels=["area"],
        )
        count = GaugeMetricFamily(
            "proxypypi_storage_files",
            "Stored files: upstream files (files) and uploads (private).",
            labels=["area"],
        )
        if figures.bytes is not None and figures.files is not None:
            size.add_metric(["files"], figures.bytes)
            count.add_metric(["files"], figures.files)
        size.add_metric(["private"], figures.private_bytes)
        count.add_metric(["private"], figures.private_files)
        yield size
        yield count
        if figures.limit is not None:
            yield GaugeMetricFamily(
                "proxypypi_storage_limit_bytes",
                "The cache size limit (--max-cache-size).",
                value=figures.limit,
            )
        if figures.disk_free is not None and figures.disk_total is not None:
            yield GaugeMetricFamily(
                "proxypypi_storage_free_bytes",
                "Bytes free on the file system holding the storage.",
                value=figures.disk_free,
            )
            yield GaugeMetricFamily(
                "proxypypi_storage_capacity_bytes",
                "Size of the file system holding the storage.",
                value=figures.disk_total,
            )
        yield CounterMetricFamily(
            "proxypypi_evictions",
            "Files evicted to keep the cache under its limit.",
            value=figures.evicted_files,
        )
        yield CounterMetricFamily(
            "proxypypi_evicted_bytes",
            "Bytes evicted to keep the cache under its limit.",
            value=figures.evicted_bytes,
        )
        yield GaugeMetricFamily(
            "proxypypi_private_projects",
            "Private (uploaded) projects.",
            value=len(proxy.private.names()),
        )


    def _policy(self, proxy: Proxy) -> Iterator[Metric]:
        ledger = proxy.policy.ledger
        withheld = GaugeMetricFamily(
            "proxypypi_policy_withheld_files",
            "Files the policy holds back now (reporting only: would), on the pages in use, "
            "by reason: cooldown, deny, allow-list, quarantine.",
            labels=["reason"],
        )
        for reason, n in ledger.by_reason().items():
            withheld.add_metric([reason], n)
        yield withheld
        yield _counter(
            "proxypypi_policy_refused_requests",
            "File requests refused by the policy (reporting only: that would be), by reason.",
            ["reason"],
            {(reason,): n for reason, n in ledger.refused.items()},
        )
        rules = proxy.policy.rules
        yield GaugeMetricFamily(
            "proxypypi_policy_report_only",
            "1 when the policy only reports what it would withhold (--policy-report-only).",
            value=1 if rules.report_only else 0,
        )
        count = GaugeMetricFamily(
            "proxypypi_policy_rules", "Rules in force, by list.", labels=["list"]
        )
        count.add_metric(["deny"], len(rules.deny.rules) if rules.deny else 0)
        count.add_metric(["allow"], len(rules.allow.rules) if rules.allow else 0)
        yield count


def registry_for(proxy: Proxy) -> CollectorRegistry:
    """
    A registry of ``proxy``'s own: its `ProxyCollector` and the process
    figures (memory, open file descriptors, CPU).  Never the global
    default registry, which would mix several services in one process.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(proxy))
    ProcessCollector(registry=registry)
    return registry


class MetricsResource(Resource):
    """
    ``/metrics``: the registry in the Prometheus text format (or
    OpenMetrics, when asked for), gzip-compressed for scrapers that accept
    it, as prometheus-client's own exposition does (its experimental
    ``name[]`` filter is not offered).

    Rendered on the reactor thread rather than with prometheus-client's
    Twisted ``MetricsResource``: that one is a ``WSGIResource`` on the
    global reactor's thread pool, so the collector would read the
    service's live state (dictionaries and deques the reactor thread keeps
    changing) from another thread, and it cannot be given the service's
    own reactor.  A scrape takes about a millisecond, so the thread would
    buy nothing.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render(self, request: IRequest) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return error(request, 405, "use GET")
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        body: bytes = encoder(self.registry)
        encoding = request.getHeader(b"accept-encoding")
        if gzip_accepted(encoding.decode("latin-1") if encoding else ""):
            body = gzip.compress(body, 6)
            request.setHeader(b"content-encoding", b"gzip")
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


def _counter(
    name: str, documentation: str, labels: list[str], values: dict[tuple[str, ...], float]
) -> CounterMetricFamily:
    """
    A counter family with one sample per label tuple, in a stable order.
    """
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric(list(key), n)
    return family

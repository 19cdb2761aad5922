# -*- test-case-name: tests.test_web,tests.test_resilience -*-
"""
``/health``: whether this proxy can serve, for monitoring; and
``/health/ready``, whether it can serve what it stores, for load
balancers.
"""

from __future__ import annotations

import json
import os

from twisted.web.iweb import IRequest

from proxypypi.web.errors import Page
from proxypypi.web.proxy import Proxy


class HealthResource(Page):
    """
    ``/health``: JSON for load balancers and monitoring; 200 while the
    proxy can serve (some upstream group has a member in rotation, and the
    storage is writable: the last write, or the periodic probe write,
    worked), 503 otherwise.

    Each upstream is listed with its group (rank, from 1), weight, health
    state (``healthy``, ``suspect``, ``down``, ``probing``), error rate over
    the last minute, latency to the first byte (moving average, ms),
    requests in flight, consecutive failures, the last error, and when the
    next probe is due.
    """

    isLeaf = True

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render_GET(self, request: IRequest) -> bytes:
        if request.postpath == [b"ready"]:
            return self._ready(request)
        pool = self.proxy.pool
        storage = self.proxy.storage
        writable = os.access(storage.tmp_dir, os.W_OK) and storage.write_error is None
        usable = pool.usable()
        ok = writable and usable
        body = json.dumps(
            {
                "status": "ok" if ok else "degraded",
                "storage-writable": writable,
                "storage-error": storage.write_error,
                "storage-free-bytes": storage.free_bytes,
                "upstreams-usable": usable,
                "upstreams": pool.health_report(),
                "downloads-in-flight": len(self.proxy.all_downloads()),
            },
            indent=1,
        ).encode()
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return body

    def _ready(self, request: IRequest) -> bytes:
        """
        ``/health/ready``, for a load balancer choosing among hosts: 200
        while this host can serve what it stores (its storage is readable),
        whatever its upstreams do.  Taking every host out because the
        upstream is down would stop the cached files too: that is what
        ``/health``'s 503 says, and why a balancer should not use it.
        """
        ready = os.access(self.proxy.storage.files_dir, os.R_OK | os.X_OK)
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return b"ready\n" if ready else b"storage not readable\n"

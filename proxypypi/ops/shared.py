# -*- test-case-name: tests.test_workers -*-
"""
The figures of the whole service when worker processes share it:
``/metrics`` and the status page tell the truth whichever worker answers.

Each worker writes its counters (`proxypypi.ops.metrics.Metrics`) and its
downloads in flight to ``DATA/run/worker-<n>.json`` every second; the
worker that answers adds the others' files to its own live counters.  A
worker started again carries on from its file, so the service's counters
never go back (Prometheus would read that as a reset); the supervisor
empties ``DATA/run/`` when the service starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import attrs

from proxypypi.cache.storage import FileKey
from proxypypi.ops.metrics import DURATION_BUCKETS, Histogram, Metrics

#: A download in flight: its file, bytes written so far, and size if known.
InFlight = tuple[FileKey, int, int | None]


def snapshot(metrics: Metrics) -> dict[str, Any]:
    """
    The counters of ``metrics`` as JSON values.
    """
    return {
        "requests": [[route, code, n] for (route, code), n in metrics.requests.items()],
        "aborted": metrics.aborted,
        "sent": metrics.sent,
        "durations": {r: _histogram(h) for r, h in metrics.durations.items()},
        "cache": [[k, r, n] for (k, r), n in metrics.cache.items()],
        "cache_bytes": [[k, r, n] for (k, r), n in metrics.cache_bytes.items()],
        "uploads": metrics.uploads,
        "upstreams": {
            url: [m.requests, m.errors, m.received, _histogram(m.latency)]
            for url, m in metrics.upstreams.items()
        },
    }


def add(into: Metrics, snap: dict[str, Any]) -> None:
    """
    Add the counters of a snapshot to ``into``.
    """
    for route, code, n in snap["requests"]:
        into.requests[(route, code)] = into.requests.get((route, code), 0) + n
    for target, source in ((into.aborted, snap["aborted"]), (into.sent, snap["sent"])):
        for key, n in source.items():
            target[key] = target.get(key, 0) + n
    for key, n in snap["uploads"].items():
        into.uploads[key] = into.uploads.get(key, 0) + n
    for route, h in snap["durations"].items():
        _add_histogram(into.durations.setdefault(route, Histogram(DURATION_BUCKETS)), h)
    for target2, rows in ((into.cache, snap["cache"]), (into.cache_bytes, snap["cache_bytes"])):
        for kind, result, n in rows:
            target2[(kind, result)] = target2.get((kind, result), 0) + n
    for url, (requests, errors, received, latency) in snap["upstreams"].items():
        meter = into.meter(url)
        meter.requests += requests
        meter.errors += errors
        meter.received += received
        _add_histogram(meter.latency, latency)


def _histogram(h: Histogram) -> list[Any]:
    return [h.counts, h.total, h.count]


def _add_histogram(into: Histogram, snap: list[Any]) -> None:
    counts, total, count = snap
    if len(counts) == len(into.counts):
        into.counts = [a + b for a, b in zip(into.counts, counts, strict=True)]
        into.total += total
        into.count += count


@attrs.define
class SharedFigures:
    """
    This worker's part in the service's figures, and the others'.

    :ivar downloads: this worker's own downloads in flight.
    """

    directory: str
    index: int
    metrics: Metrics
    downloads: Callable[[], list[InFlight]]

    def _path(self, index: int) -> str:
        return os.path.join(self.directory, f"worker-{index}.json")

    def restore(self) -> None:
        """
        Carry on from this worker's last figures (it was started again).
        """
        snap = _read(self._path(self.index))
        if snap is not None:
            add(self.metrics, snap["metrics"])

    def write(self) -> None:
        """
        Publish this worker's figures (a small file, replaced whole).
        """
        os.makedirs(self.directory, exist_ok=True)
        record = {
            "metrics": snapshot(self.metrics),
            "downloads": [[k.project, k.filename, w, t] for k, w, t in self.downloads()],
        }
        path = self._path(self.index)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)

    def _others(self) -> list[dict[str, Any]]:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        own = os.path.basename(self._path(self.index))
        found = []
        for name in names:
            if name.startswith("worker-") and name.endswith(".json") and name != own:
                snap = _read(os.path.join(self.directory, name))
                if snap is not None:
                    found.append(snap)
        return found

    def combined(self) -> Metrics:
        """
        The counters of the whole service: this worker's, live, plus the
        others' as last published.
        """
        total = Metrics()
        add(total, snapshot(self.metrics))
        for snap in self._others():
            add(total, snap["metrics"])
        return total

    def all_downloads(self) -> list[InFlight]:
        found = list(self.downloads())
        for snap in self._others():
            found += [(FileKey(p, f), w, t) for p, f, w, t in snap["downloads"]]
        return found


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            snap = json.load(f)
    except (OSError, ValueError):
        return None
    return snap if isinstance(snap, dict) and "metrics" in snap else None

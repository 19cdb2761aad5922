"""
The benchmark's clients: a small asyncio HTTP/1.1 client that times the
first byte and the last and can hash the body; ``bench/drain.py``
processes for bulk throughput; wrk for request rates; and a real
``pip download``.

Every call is bounded in time; the body bytes are discarded (or hashed).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs

#: Bytes in a megabyte, as the tables print them.
MB = 1_000_000

#: The media types an installer asks a project page for.
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html"
#: The Accept-Encoding pip and uv send for index pages.
PIP_ENCODING = "gzip, deflate"


class ClientError(Exception):
    """
    A request failed or returned something unexpected.
    """


@attrs.frozen
class Fetch:
    """
    One timed HTTP exchange; times in seconds from just before connecting.

    :ivar first_byte: when the first byte of the response (status line)
        arrived: the classic time to first byte.
    :ivar first_body_byte: when the first byte of the body arrived, or
        ``None`` for an empty body.
    :ivar total: when the last byte arrived.
    :ivar sha256: hex digest of the body, when asked for.
    """

    status: int
    first_byte: float
    first_body_byte: float | None
    total: float
    size: int
    sha256: str | None
    body: bytes | None = attrs.field(default=None, repr=False)


async def _fetch(
    url: str, accept: str | None, digest: bool, keep: bool, encoding: str = "identity"
) -> Fetch:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "User-Agent: proxypypi-bench",
        f"Accept-Encoding: {encoding}",
        "Connection: close",
    ]
    if accept is not None:
        lines.append(f"Accept: {accept}")
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        buf = b""
        first_byte: float | None = None
        while b"\r\n\r\n" not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                raise ClientError(f"{url}: connection closed before the headers")
            if first_byte is None:
                first_byte = time.perf_counter() - start
            buf += chunk
        assert first_byte is not None
        head, _, body = buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"]) if "content-length" in headers else None
        hasher = hashlib.sha256() if digest else None
        kept = [body] if keep else []
        size = len(body)
        first_body = time.perf_counter() - start if body else None
        if hasher is not None:
            hasher.update(body)
        while length is None or size < length:
            chunk = await reader.read(1 << 18)
            if not chunk:
                break
            if first_body is None:
                first_body = time.perf_counter() - start
            size += len(chunk)
            if hasher is not None:
                hasher.update(chunk)
            if keep:
                kept.append(chunk)
        total = time.perf_counter() - start
        if length is not None and size != length:
            raise ClientError(f"{url}: got {size} of {length} bytes")
        return Fetch(
            status,
            first_byte,
            first_body,
            total,
            size,
            hasher.hexdigest() if hasher is not None else None,
            b"".join(kept) if keep else None,
        )
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def fetch(
    url: str,
    *,
    accept: str | None = None,
    digest: bool = False,
    keep: bool = False,
    encoding: str = "identity",
    timeout: float = 120.0,
) -> Fetch:
    """
    GET ``url`` (a loopback ``http://`` URL) once, timed.

    :param digest: compute the body's sha256.
    :param keep: keep the body (for small responses only), as sent: a
        gzip-encoded body stays compressed.
    :param encoding: the ``Accept-Encoding`` to send.
    :raises ClientError: on a broken or short response.
    :raises TimeoutError: after ``timeout`` seconds.
    """
    return asyncio.run(asyncio.wait_for(_fetch(url, accept, digest, keep, encoding), timeout))


def fetch_each(
    urls: Sequence[str],
    clients: int,
    *,
    accept: str,
    encoding: str,
    timeout: float = 300.0,
) -> tuple[dict[str, Fetch], float]:
    """
    GET every URL of ``urls`` once, ``clients`` at a time (each client
    takes the next URL as soon as it is done), keeping the bodies.

    :returns: each URL's fetch (times from its own start), and the wall
        time of the whole set.
    :raises ClientError: if any of them fails.
    """

    async def run() -> tuple[dict[str, Fetch], float]:
        queue = list(reversed(urls))
        done: dict[str, Fetch] = {}

        async def client() -> None:
            while queue:
                url = queue.pop()
                done[url] = await _fetch(url, accept, False, True, encoding)

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), timeout)
        return done, time.perf_counter() - start

    return asyncio.run(run())


def fetch_many(
    url: str, clients: int, *, digest: bool = True, timeout: float = 300.0
) -> list[Fetch]:
    """
    ``clients`` concurrent GETs of ``url``, started together.

    :raises ClientError: if any of them fails.
    """

    async def run() -> list[Fetch]:
        tasks = [_fetch(url, None, digest, False) for _ in range(clients)]
        return list(await asyncio.wait_for(asyncio.gather(*tasks), timeout))

    return asyncio.run(run())


@attrs.frozen
class DrainRun:
    """
    ``clients`` concurrent `bench/drain.py <drain>` processes, each
    fetching one URL ``repeat`` times in a row.

    :ivar starts: each client's first connect, ``time.monotonic()``.
    :ivar ends: each client's last byte, ``time.monotonic()``.
    """

    clients: int
    repeat: int
    sizes: tuple[int, ...]
    starts: tuple[float, ...]
    ends: tuple[float, ...]

    @property
    def wall(self) -> float:
        """
        Seconds from the first client's start to the last client's end.
        """
        return max(self.ends) - min(self.starts)

    @property
    def aggregate_mbps(self) -> float:
        """
        Throughput of all clients together, MB/s.
        """
        return sum(self.sizes) / self.wall / MB


_DRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "drain.py")


def drain_many(
    url: str, clients: int, *, repeat: int, expect_size: int, timeout: float = 300.0
) -> DrainRun:
    """
    Run ``clients`` throughput clients (``bench/drain.py``, one process
    each, so the client side is not one GIL) against ``url``, started
    together at a common instant after all processes are up.

    :raises ClientError: if any client fails, or gets a status other than
        200 or other than ``expect_size`` bytes per GET.
    """
    start_at = time.monotonic() + 0.5 + 0.04 * clients
    argv = [sys.executable, _DRAIN, url, "--repeat", str(repeat), "--start-at", str(start_at)]
    argv += ["--timeout", str(timeout)]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(clients)
    ]
    outputs: list[tuple[bytes, bytes]] = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout * repeat + 60))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    sizes, starts, ends = [], [], []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise ClientError(f"client of {url} failed: {err.decode()[-300:]}")
        result = json.loads(out)
        if set(result["status"]) != {200} or result["bytes"] != expect_size * repeat:
            raise ClientError(f"client of {url}: {result}")
        sizes.append(result["bytes"])
        starts.append(result["start"])
        ends.append(result["end"])
    return DrainRun(clients, repeat, tuple(sizes), tuple(starts), tuple(ends))


@attrs.frozen
class WrkRun:
    """
    The parts of wrk's report the benchmark uses.
    """

    requests_per_second: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    bad_responses: int
    socket_errors: int
    requests: int
    output: str = attrs.field(repr=False)


def _ms(value: str, unit: str) -> float:
    return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit], 3)


def wrk(
    url: str,
    *,
    accept: str,
    threads: int,
    connections: int,
    duration: int,
    encoding: str | None = None,
) -> WrkRun:
    """
    Run ``wrk`` against ``url`` with an ``Accept`` header (keep-alive), and
    an ``Accept-Encoding`` header when ``encoding`` is given.

    :raises ClientError: when wrk fails or prints no rate.
    """
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-H",
        f"Accept: {accept}",
        *(["-H", f"Accept-Encoding: {encoding}"] if encoding else []),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, timeout=duration + 60, text=True)
    out = done.stdout + done.stderr
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if done.returncode != 0 or rate is None:
        raise ClientError(f"wrk failed ({done.returncode}): {out[-500:]}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    total = re.search(r"(\d+) requests in ", out)
    return WrkRun(
        float(rate.group(1)),
        _ms(*p50.groups()) if p50 else None,
        _ms(*p99.groups()) if p99 else None,
        int(bad.group(1)) if bad else 0,
        sum(int(x) for x in errors.groups()) if errors else 0,
        int(total.group(1)) if total else 0,
        out,
    )


def page_load(
    args: Any, accept: str, encoding: str | None, threads: int | None = None
) -> Callable[[str], WrkRun]:
    """
    `wrk` as the page scenarios run it: the run's connections and
    duration (``--wrk-*``), its threads unless ``threads`` says otherwise.
    """
    return functools.partial(
        wrk,
        accept=accept,
        threads=args.wrk_threads if threads is None else threads,
        connections=args.wrk_connections,
        duration=args.wrk_duration,
        encoding=encoding,
    )


def clean_pip_env(home: str) -> dict[str, str]:
    """
    An environment in which pip ignores this machine's settings and caches.
    """
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "PIP_KEYRING_PROVIDER": "disabled",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def pip_download(
    index: str,
    requirements: Sequence[str],
    dest: str,
    env: Mapping[str, str],
    *,
    timeout: float = 600.0,
) -> float:
    """
    Run a real ``pip download --no-cache-dir`` into ``dest``; return its
    wall time in seconds.

    :raises ClientError: when pip fails.
    """
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-cache-dir",
        "--progress-bar",
        "off",
        "-q",
        "-i",
        index,
        "-d",
        dest,
        *requirements,
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, env=dict(env), capture_output=True, timeout=timeout, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise ClientError(f"pip download failed ({done.returncode}): {' / '.join(lines[-2:])}")
    return elapsed


def uv_install(uv: str, index: str, root: str, work: str) -> float:
    """
    ``uv pip install --target`` of the install set, cold uv cache; seconds.

    :raises ClientError: when uv fails.
    """
    target = tempfile.mkdtemp(dir=work, prefix="uv-target-")
    cache = tempfile.mkdtemp(dir=work, prefix="uv-cache-")
    env = {**clean_pip_env(work), "UV_NO_CONFIG": "1", "UV_CACHE_DIR": cache}
    started = time.monotonic()
    done = subprocess.run(
        [uv, "pip", "install", "--python", sys.executable, "--target", target,
         "--index-url", index, "-q", root],
        env=env, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    shutil.rmtree(target)
    shutil.rmtree(cache)
    if done.returncode != 0:
        raise ClientError(f"uv failed: {done.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def median(values: Sequence[float]) -> float:
    """
    The median (the benchmark's summary of repeated trials).
    """
    return float(statistics.median(values))

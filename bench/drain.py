"""
A throughput client: GET one loopback URL ``--repeat`` times in a row, each
on a new connection, discarding the body with ``recv_into`` a 1 MiB buffer
(cheaper per byte than curl's 16 KiB writes to ``/dev/null``), and print
one JSON line: bytes received, the first and last byte's
``time.monotonic()`` (comparable across processes on Linux), the status
codes.

Several of these run side by side for the concurrent-client scenarios;
``--start-at`` (a ``time.monotonic()`` value) lines their starts up.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

_BUFFER = 1 << 20


def get(url: str, buf: memoryview, timeout: float) -> tuple[int, int]:
    """
    One GET; returns (status, body bytes).

    :raises OSError: on a connection error or a short body.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: proxypypi-bench\r\n"
        "Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request.encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(buf)
            if not n:
                raise OSError("connection closed before the headers")
            head += bytes(buf[:n])
        header, _, body = head.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        size = len(body)
        while length is None or size < length:
            n = sock.recv_into(buf)
            if not n:
                break
            size += n
        if length is not None and size != length:
            raise OSError(f"short body: {size} of {length} bytes")
        return status, size


def main(argv: Sequence[str]) -> int:
    """
    Parse arguments, wait for the start time, fetch, report.
    """
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("url")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--start-at", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    buf = memoryview(bytearray(_BUFFER))
    delay = args.start_at - time.monotonic()
    if 0 < delay < 60:
        time.sleep(delay)
    start = time.monotonic()
    statuses, total = [], 0
    for _ in range(max(1, min(args.repeat, 1000))):
        status, size = get(args.url, buf, args.timeout)
        statuses.append(status)
        total += size
    end = time.monotonic()
    sys.stdout.write(json.dumps({"bytes": total, "start": start, "end": end, "status": statuses}))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

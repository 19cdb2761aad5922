"""
What the proxy is measured against, each on 127.0.0.1: Debian's nginx
serving the same bytes from disk; the twisted.web floor (``bench/floor.py``)
serving them from memory with nothing else to do; and Twisted's own
``twistd web``, whose idle memory is the floor of any twistd web service.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import attrs

from bench import REPO, BenchError
from bench.processes import Processes, read_line
from bench.rss import rss_mib
from bench.services import LISTENING, twistd_argv
from bench.tools import require

_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{
        application/octet-stream whl;
        text/html html;
        application/vnd.pypi.simple.v1+json json;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        index {index};
        gzip_static on;
    }}
}}
"""


@attrs.define
class Nginx:
    """
    A running nginx serving ``root`` on a loopback port.
    """

    proc: subprocess.Popen[bytes]
    port: int
    root: str

    @property
    def base(self) -> str:
        """
        ``http://127.0.0.1:PORT/``.
        """
        return f"http://127.0.0.1:{self.port}/"


def start_nginx(
    procs: Processes,
    workdir: str,
    root: str,
    port: int,
    workers: str,
    timeout: float = 20.0,
    index: str = "index.html",
) -> Nginx:
    """
    Start Debian's nginx in the foreground with a generated configuration
    (sendfile on, no access log) serving ``root`` on ``127.0.0.1:port``,
    ``index`` (nginx's directive) for directory URLs.

    :raises BenchError: if it does not accept connections in time.
    """
    prefix = os.path.join(workdir, "nginx")
    os.makedirs(prefix, exist_ok=True)
    # Workers run as an unprivileged user when nginx starts as root.
    for path in (workdir, prefix, root):
        os.chmod(path, 0o755)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            _NGINX_CONF.format(workers=workers, prefix=prefix, port=port, root=root, index=index)
        )
    nginx = require("nginx")
    log = open(os.path.join(prefix, "stderr.log"), "wb")
    proc = procs.start([nginx, "-p", prefix, "-c", conf], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                pass
            return Nginx(proc, port, root)
        except urllib.error.HTTPError:
            return Nginx(proc, port, root)  # any HTTP answer means it is up
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    procs.stop(proc)
    raise BenchError(f"nginx did not start; see {prefix}/error.log and {prefix}/stderr.log")


@attrs.define
class Floor:
    """
    A running ``bench/floor.py``: bare twisted.web answering from memory.
    """

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        """
        ``http://127.0.0.1:PORT/``.
        """
        return f"http://127.0.0.1:{self.port}/"


def start_floor(procs: Processes, root: str, timeout: float = 30.0) -> Floor:
    """
    Start ``bench/floor.py`` serving the files of ``root``.

    :raises BenchError: if it does not announce its port in time.
    """
    proc = procs.start(
        [sys.executable, os.path.join(REPO, "bench", "floor.py"), "--root", root],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    found = LISTENING.search(read_line(proc, proc.stdout, timeout))
    if found is None:
        procs.stop(proc)
        raise BenchError("bench/floor.py did not start")
    return Floor(proc, int(found.group(1)))


def twistd_web_idle_rss(procs: Processes, workdir: str, settle: float = 1.0) -> float | None:
    """
    The idle RSS of Twisted's own web server (``twistd -n web``, serving
    an empty directory), in MiB: the memory floor of any twistd service
    with a web server on this interpreter.
    """
    empty = os.path.join(workdir, "twistd-web-root")
    os.makedirs(empty, exist_ok=True)
    log_path = os.path.join(workdir, "twistd-web.log")
    with open(log_path, "wb") as log:
        argv = [*twistd_argv(), "-n", "--pidfile=", "web", "--listen", "tcp:0:interface=127.0.0.1"]
        proc = procs.start([*argv, "--path", empty], cwd=workdir, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            with open(log_path, "rb") as f:
                if b"Starting factory" in f.read():
                    break
            time.sleep(0.05)
        time.sleep(settle)
        return rss_mib(proc.pid) if proc.poll() is None else None
    finally:
        procs.stop(proc)


def free_port() -> int:
    """
    A loopback port that was free a moment ago (for nginx, which cannot
    report an ephemeral port back).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""
Processes the benchmark starts and measures: the fake upstream, the proxy
(a real ``twistd``), nginx, and a sampler of the proxy's memory.

Every process is started in its own session (so its whole process group
can be signalled), registered with a `Processes` that terminates them all
on exit, and waited for with a time limit.  Everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import IO, Any

import attrs

#: The repository root (this file is ``<root>/bench/harness.py``).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


class BenchError(Exception):
    """
    The benchmark cannot go on (a process did not start, a tool is missing).
    """


# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------


def ensure_tools(apt_packages: Mapping[str, str]) -> None:
    """
    Install missing command-line tools with apt (``{command: package}``),
    running ``apt-get update`` once first; needs root.

    :raises BenchError: when a tool is missing and cannot be installed.
    """
    missing = sorted({pkg for cmd, pkg in apt_packages.items() if find_tool(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(f"missing {', '.join(missing)}; install them (apt-get install -y ...)")
    print(f"installing {', '.join(missing)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        subprocess.run(argv, check=True, env=env, timeout=600, stdout=subprocess.DEVNULL)
    still = [cmd for cmd in apt_packages if find_tool(cmd) is None]
    if still:
        raise BenchError(f"still missing after apt-get install: {', '.join(still)}")


def find_tool(command: str) -> str | None:
    """
    The path of ``command``, also looking in the sbin directories that a
    non-login shell may leave off ``PATH`` (Debian puts nginx there).
    """
    found = shutil.which(command)
    if found is not None:
        return found
    for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = os.path.join(directory, command)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_python_deps() -> None:
    """
    Make sure this interpreter can run the proxy and the fake upstream;
    install the project (editable, as the README says) into the current
    environment if not.
    """
    probe = "import twisted, treq, attrs, packaging, OpenSSL, service_identity"
    env = {**os.environ, "PYTHONPATH": REPO}
    if subprocess.run([sys.executable, "-c", probe], env=env, timeout=60).returncode == 0:
        return
    print("installing the project's dependencies into this environment ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-e", REPO]
        + ["--config-settings", "editable_mode=compat"],
        check=True,
        timeout=900,
    )


def twistd_argv() -> list[str]:
    """
    How to run ``twistd`` with this interpreter.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; run()"]


# ---------------------------------------------------------------------------
# Process registry
# ---------------------------------------------------------------------------


@attrs.define
class Processes:
    """
    Every process the benchmark started; `stop_all` ends them (whole
    process groups: TERM, then KILL).
    """

    running: list[subprocess.Popen[bytes]] = attrs.field(factory=list)

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = None,
    ) -> subprocess.Popen[bytes]:
        """
        Start ``argv`` in a new session and remember it.
        """
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """
        Terminate ``proc``'s process group and reap it.
        """
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        # Children that outlived their leader (nginx workers, say).
        _signal_group(proc.pid, signal.SIGKILL)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        """
        Terminate every process still registered, newest first.
        """
        for proc in list(reversed(self.running)):
            try:
                self.stop(proc)
            except Exception as e:  # keep cleaning up the others
                print(f"warning: could not stop pid {proc.pid}: {e}", file=sys.stderr)


def _die_with_parent() -> None:
    """
    In the child, before exec: ask Linux to send SIGTERM when the benchmark
    dies, even by SIGKILL, so nothing it started outlives it.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


_PR_SET_PDEATHSIG = 1


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------
# The fake upstream
# ---------------------------------------------------------------------------


@attrs.define
class Upstream:
    """
    The running fake upstream (``bench/upstream.py``) and its manifest.
    """

    proc: subprocess.Popen[bytes]
    manifest: dict[str, Any]

    @property
    def base(self) -> str:
        """
        ``http://127.0.0.1:PORT/``.
        """
        return str(self.manifest["base"])

    @property
    def simple(self) -> str:
        """
        The upstream's simple index URL.
        """
        return self.base + "simple/"

    def control(
        self,
        *,
        latency: float | None = None,
        throttle: int | None = None,
        chunk: int | None = None,
        reset: bool = False,
    ) -> dict[str, Any]:
        """
        Change the fake's knobs (``throttle`` 0 = unthrottled) and/or clear
        its request log.
        """
        query = []
        if latency is not None:
            query.append(f"latency={latency}")
        if throttle is not None:
            query.append(f"throttle={throttle}")
        if chunk is not None:
            query.append(f"chunk={chunk}")
        if reset:
            query.append("reset=1")
        req = urllib.request.Request(self.base + "_control?" + "&".join(query), method="POST")
        with urllib.request.urlopen(req, timeout=10) as response:
            return dict(json.load(response))

    def requests(self) -> list[tuple[str, str, str | None]]:
        """
        The requests the fake received since the last reset.
        """
        with urllib.request.urlopen(self.base + "_stats", timeout=10) as response:
            rows = json.load(response)["requests"]
        return [(m, p, r) for m, p, r in rows]

    def file_fetches(self, filename: str) -> int:
        """
        How many times the file was requested (GET) since the last reset.
        """
        path = "/files/" + filename
        return sum(1 for m, p, _ in self.requests() if m == "GET" and p == path)


def start_upstream(
    procs: Processes, workdir: str, args: Sequence[str], timeout: float = 180.0
) -> Upstream:
    """
    Start ``bench/upstream.py`` and wait for its manifest line.

    :raises BenchError: if it does not announce itself within ``timeout``.
    """
    log = open(os.path.join(workdir, "upstream.log"), "wb")
    proc = procs.start(
        [sys.executable, os.path.join(REPO, "bench", "upstream.py"), *args],
        env={**os.environ, "PYTHONPATH": REPO},
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    line = _read_line(proc, proc.stdout, timeout)
    log.close()
    if not line:
        raise BenchError(f"the fake upstream did not start; see {log.name}")
    return Upstream(proc, json.loads(line))


def _read_line(proc: subprocess.Popen[bytes], stream: IO[bytes], timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stream.fileno()
    while b"\n" not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
        elif proc.poll() is not None:
            break
    return buf.split(b"\n", 1)[0] if b"\n" in buf else b""


# ---------------------------------------------------------------------------
# The proxy
# ---------------------------------------------------------------------------


@attrs.define
class Proxy:
    """
    One running ``twistd proxypypi``.
    """

    proc: subprocess.Popen[bytes]
    port: int
    storage: str
    log_path: str

    @property
    def base(self) -> str:
        """
        ``http://127.0.0.1:PORT/``.
        """
        return f"http://127.0.0.1:{self.port}/"

    @property
    def simple(self) -> str:
        """
        The proxy's simple index URL.
        """
        return self.base + "simple/"

    @property
    def pid(self) -> int:
        """
        The twistd process id (the process to measure).
        """
        return self.proc.pid


def start_proxy(
    procs: Processes,
    workdir: str,
    name: str,
    upstream: str,
    timeout: float = 60.0,
    fresh: bool = True,
    extra: Sequence[str] = (),
) -> Proxy:
    """
    Start ``twistd -n proxypypi`` with the storage directory ``workdir/name``
    (emptied first when ``fresh``) on an ephemeral loopback port; wait for
    its "listening on" line.

    :raises BenchError: if it exits or does not listen within ``timeout``.
    """
    storage = os.path.join(workdir, name)
    if fresh and os.path.exists(storage):
        shutil.rmtree(storage)
    log_path = os.path.join(workdir, f"{name}.log")
    log = open(log_path, "wb" if fresh else "ab")
    since = log.tell()  # a reused log holds earlier runs' lines
    argv = [
        *twistd_argv(),
        "-n",
        "--pidfile=",
        "proxypypi",
        "--upstream",
        upstream,
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--storage",
        storage,
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": REPO, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = procs.start(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "rb") as f:
            f.seek(since)
            found = _LISTENING.search(f.read())
        if found:
            return Proxy(proc, int(found.group(1)), storage, log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    procs.stop(proc)
    with open(log_path, "rb") as f:
        tail = f.read()[-2000:].decode("utf-8", "replace")
    raise BenchError(f"the proxy did not start (see {log_path}):\n{tail}")


# ---------------------------------------------------------------------------
# nginx
# ---------------------------------------------------------------------------

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
    procs: Processes, workdir: str, root: str, port: int, workers: str, timeout: float = 20.0
) -> Nginx:
    """
    Start Debian's nginx in the foreground with a generated configuration
    (sendfile on, no access log) serving ``root`` on ``127.0.0.1:port``.

    :raises BenchError: if it does not accept connections in time.
    """
    prefix = os.path.join(workdir, "nginx")
    os.makedirs(prefix, exist_ok=True)
    # Workers run as an unprivileged user when nginx starts as root.
    for path in (workdir, prefix, root):
        os.chmod(path, 0o755)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(_NGINX_CONF.format(workers=workers, prefix=prefix, port=port, root=root))
    nginx = find_tool("nginx")
    if nginx is None:
        raise BenchError("nginx is not installed")
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
    found = _LISTENING.search(_read_line(proc, proc.stdout, timeout))
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
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib(pid: int) -> float | None:
    """
    The current resident set size of ``pid``, in MiB.
    """
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib / 1024


@attrs.define
class RssMonitor:
    """
    Peak RSS of one process over a stretch of time: resets the kernel's
    high-water mark (``/proc/PID/clear_refs``, value 5) at the start and
    reads ``VmHWM`` at the end, and also samples ``VmRSS`` every
    ``interval`` seconds in a thread (the fallback when the reset is not
    permitted).  Use as a context manager; read `peak_mib` afterwards.
    """

    pid: int
    interval: float = 0.02
    peak_mib: float = 0.0
    _sampled_kib: int = 0
    _hwm_reset: bool = False
    _stop: threading.Event = attrs.field(factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssMonitor:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            kib = _status_kib(self.pid, "VmRSS")
            if kib is None:
                return
            self._sampled_kib = max(self._sampled_kib, kib)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        peak = self._sampled_kib
        if self._hwm_reset:
            peak = max(peak, _status_kib(self.pid, "VmHWM") or 0)
        self.peak_mib = peak / 1024

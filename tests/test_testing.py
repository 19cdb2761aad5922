"""
Tests for `proxypypi.testing`: the builders make real, installable
distributions, and `FakeIndex` behaves like an upstream index, including
when told to misbehave.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import BytesHeaderParser
from typing import Any

from packaging.utils import parse_sdist_filename, parse_wheel_filename
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed
from twisted.web.server import Site

from proxypypi.testing import FakeIndex, Fault, make_sdist, make_wheel, serve
from proxypypi.testing.index import HTML_TYPE, JSON_TYPE
from tests.support.pumping import pump

BASE = "http://mirror.example"
WHEEL_PATH = "/files/proto_alpha-1.0-py3-none-any.whl"


class BuilderTests(SynchronousTestCase):
    """
    `make_wheel` and `make_sdist`.
    """

    def test_wheel(self) -> None:
        """
        The wheel is named per the spec, its RECORD hashes every member
        correctly, its METADATA is the `Dist.metadata`, and rebuilding it
        gives identical bytes; the payload is stored, not compressed.
        """
        dist = make_wheel(
            "Proto.Alpha",
            "1.0",
            requires_python=">=3.8",
            requires_dist=["dep>=1", "other"],
            payload_size=50_000,
        )
        name, version, _, tags = parse_wheel_filename(dist.filename)
        self.assertEqual((name, str(version)), ("proto-alpha", "1.0"))
        self.assertEqual({str(t) for t in tags}, {"py3-none-any"})
        self.assertEqual((dist.project, dist.version), ("proto-alpha", "1.0"))
        self.assertGreater(len(dist.data), 50_000)
        self.assertEqual(
            dist,
            make_wheel(
                "Proto.Alpha",
                "1.0",
                requires_python=">=3.8",
                requires_dist=["dep>=1", "other"],
                payload_size=50_000,
            ),
        )
        self.assertEqual(dist.sha256, hashlib.sha256(dist.data).hexdigest())
        assert dist.metadata is not None
        self.assertEqual(dist.metadata_sha256, hashlib.sha256(dist.metadata).hexdigest())

        with zipfile.ZipFile(io.BytesIO(dist.data)) as zf:
            info = "proto_alpha-1.0.dist-info"
            self.assertEqual(zf.read(f"{info}/METADATA"), dist.metadata)
            self.assertIn(b'__version__ = "1.0"', zf.read("proto_alpha/__init__.py"))
            record = zf.read(f"{info}/RECORD").decode().splitlines()
            hashed = {}
            for line in record:
                path, digest, size = line.rsplit(",", 2)
                hashed[path] = (digest, size)
            self.assertEqual(set(hashed), set(zf.namelist()))
            self.assertEqual(hashed.pop(f"{info}/RECORD"), ("", ""))
            for path, (digest, size) in hashed.items():
                data = zf.read(path)
                raw = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                self.assertEqual((digest, size), ("sha256=" + raw.decode(), str(len(data))))
            payload = zf.getinfo("proto_alpha/_payload.bin")
            self.assertEqual(payload.compress_type, zipfile.ZIP_STORED)
            self.assertEqual(payload.file_size, 50_000)
            self.assertIn(b"Root-Is-Purelib: true", zf.read(f"{info}/WHEEL"))

        meta = BytesHeaderParser().parsebytes(dist.metadata)
        self.assertEqual(meta["Metadata-Version"], "2.1")
        self.assertEqual((meta["Name"], meta["Version"]), ("Proto.Alpha", "1.0"))
        self.assertEqual(meta["Requires-Python"], ">=3.8")
        self.assertEqual(meta.get_all("Requires-Dist"), ["dep>=1", "other"])

    def test_sdist(self) -> None:
        """
        The sdist is named per the spec, is reproducible, and carries
        PKG-INFO and a pyproject.toml naming the in-tree backend.
        """
        dist = make_sdist("Proto_Beta", "2.0", requires_python=">=3.9")
        self.assertEqual(dist.filename, "proto_beta-2.0.tar.gz")
        name, version = parse_sdist_filename(dist.filename)
        self.assertEqual((name, str(version)), ("proto-beta", "2.0"))
        self.assertIsNone(dist.metadata)
        self.assertIsNone(dist.metadata_sha256)
        self.assertEqual(dist, make_sdist("Proto_Beta", "2.0", requires_python=">=3.9"))
        with tarfile.open(fileobj=io.BytesIO(dist.data)) as tf:
            names = tf.getnames()
            self.assertEqual(
                sorted(names),
                [
                    f"proto_beta-2.0/{n}"
                    for n in ("PKG-INFO", "_backend.py", "proto_beta/__init__.py", "pyproject.toml")
                ],
            )
            pkg_info = tf.extractfile("proto_beta-2.0/PKG-INFO")
            pyproject = tf.extractfile("proto_beta-2.0/pyproject.toml")
            assert pkg_info is not None and pyproject is not None
            meta = BytesHeaderParser().parsebytes(pkg_info.read())
            build = tomllib.loads(pyproject.read().decode())["build-system"]
        self.assertEqual((meta["Name"], meta["Version"]), ("Proto_Beta", "2.0"))
        self.assertEqual(meta["Requires-Python"], ">=3.9")
        self.assertEqual(
            build, {"requires": [], "build-backend": "_backend", "backend-path": ["."]}
        )

    def test_pip_installs_both(self) -> None:
        """
        pip installs the wheel and builds and installs the sdist, offline and
        with build isolation.
        """
        wheel = make_wheel("proto-alpha", "1.0", requires_python=">=3")
        sdist = make_sdist("proto-beta", "2.0")
        tmp = self.mktemp()
        os.makedirs(tmp)
        paths = []
        for dist in (wheel, sdist):
            path = os.path.join(tmp, dist.filename)
            with open(path, "wb") as f:
                f.write(dist.data)
            paths.append(path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
        target = os.path.join(tmp, "target")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--target",
                target,
                *paths,
            ],
            env=env,
            check=True,
            timeout=120,
        )
        for module, version in (("proto_alpha", "1.0"), ("proto_beta", "2.0")):
            with open(os.path.join(target, module, "__init__.py")) as f:
                self.assertIn(version, f.read())
            self.assertTrue(os.path.isdir(os.path.join(target, f"{module}-{version}.dist-info")))


class _Reader(Protocol):
    """
    Collects a response body and lets the test hang up mid-way.
    """

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.done.callback(None)


class FakeIndexTests(SynchronousTestCase):
    """
    `FakeIndex` over an in-memory HTTP connection.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.index = FakeIndex(self.clock)
        self.wheel = make_wheel("Proto.Alpha", "1.0", requires_python=">=3.8", payload_size=40_000)
        self.sdist = make_sdist("proto-alpha", "0.9")
        self.index.add(self.wheel, upload_time="2025-01-02T03:04:05.000000Z")
        self.index.add(self.sdist, yanked="broken <build>")
        self.stub: Any = StubTreq(self.index.resource())

    def request(self, path: str, method: str = "GET", **headers: str) -> Any:
        d = self.stub.request(
            method, BASE + path, headers=headers, allow_redirects=False, unbuffered=True
        )
        self.stub.flush()
        return self.successResultOf(d)

    def get(self, path: str, **headers: str) -> tuple[Any, bytes]:
        response = self.request(path, **headers)
        d = self.stub.content(response)
        self.stub.flush()
        return response, self.successResultOf(d)

    def reader(self, response: Any) -> _Reader:
        reader = _Reader()
        response.deliverBody(reader)
        self.stub.flush()
        return reader

    def raw(self, path: str, method: str = "GET") -> StringTransport:
        """
        Drive the resource over a StringTransport, which, unlike the
        in-memory pump, tells an abort from a clean close.
        """
        site = Site(self.index.resource(), reactor=self.clock)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return transport

    def test_json_page(self) -> None:
        """
        A client listing the JSON type gets a PEP 691/700 page with hashes,
        sizes, core-metadata, yanked reason and relative URLs.
        """
        response, body = self.get("/simple/proto-alpha/", Accept=f"{JSON_TYPE}, text/html;q=0.1")
        self.assertEqual(response.headers.getRawHeaders("content-type"), [JSON_TYPE])
        self.assertEqual(response.headers.getRawHeaders("vary"), ["Accept"])
        self.assertEqual(response.headers.getRawHeaders("x-pypi-last-serial"), ["2"])
        page = json.loads(body)
        self.assertEqual(page["meta"], {"api-version": "1.1", "_last-serial": 2})
        self.assertEqual((page["name"], page["versions"]), ("proto-alpha", ["0.9", "1.0"]))
        wheel, sdist = page["files"]
        self.assertEqual(
            wheel,
            {
                "filename": self.wheel.filename,
                "url": "../../files/" + self.wheel.filename,
                "hashes": {"sha256": self.wheel.sha256},
                "requires-python": ">=3.8",
                "yanked": False,
                "core-metadata": {"sha256": self.wheel.metadata_sha256},
                "data-dist-info-metadata": {"sha256": self.wheel.metadata_sha256},
                "size": len(self.wheel.data),
                "upload-time": "2025-01-02T03:04:05.000000Z",
            },
        )
        self.assertEqual(
            (sdist["yanked"], sdist["core-metadata"], sdist["requires-python"]),
            ("broken <build>", False, None),
        )

    def test_html_page(self) -> None:
        """
        Without JSON in Accept the page is PEP 503 HTML with escaped
        attributes; ``absolute_urls`` uses the Host header.
        """
        self.index.absolute_urls = True
        response, body = self.get("/simple/proto-alpha/", Accept="text/html, */*;q=0.1")
        self.assertEqual(response.headers.getRawHeaders("content-type"), [HTML_TYPE])
        text = body.decode()
        self.assertIn('<meta name="pypi:repository-version" content="1.1">', text)
        m = self.wheel.metadata_sha256
        self.assertIn(
            f'<a href="http://mirror.example/files/{self.wheel.filename}#sha256={self.wheel.sha256}"'
            f' data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256={m}"'
            f' data-core-metadata="sha256={m}">{self.wheel.filename}</a>',
            text,
        )
        self.assertIn('data-yanked="broken &lt;build&gt;">proto_alpha-0.9.tar.gz</a>', text)

    def test_format_knobs(self) -> None:
        """
        An HTML-only fake answers HTML even to JSON clients; without
        ``include_size`` the JSON page claims 1.0 and lists no size; q=0
        refuses JSON.
        """
        _, body = self.get("/simple/proto-alpha/", Accept=f"{JSON_TYPE};q=0, text/html")
        self.assertTrue(body.startswith(b"<!DOCTYPE html>"))
        self.index.include_size = False
        _, body = self.get("/simple/proto-alpha/", Accept=JSON_TYPE)
        page = json.loads(body)
        self.assertEqual(page["meta"]["api-version"], "1.0")
        self.assertNotIn("size", page["files"][0])
        self.index.formats = {"html"}
        response, _ = self.get("/simple/proto-alpha/", Accept=JSON_TYPE)
        self.assertEqual(response.headers.getRawHeaders("content-type"), [HTML_TYPE])

    def test_project_list(self) -> None:
        """
        ``/simple/`` lists every project in either format.
        """
        self.index.add(make_wheel("zeta", "1"))
        _, body = self.get("/simple/", Accept=JSON_TYPE)
        self.assertEqual(json.loads(body)["projects"], [{"name": "proto-alpha"}, {"name": "zeta"}])
        _, body = self.get("/simple/")
        self.assertIn(b'<a href="zeta/">zeta</a>', body)

    def test_redirects_and_not_found(self) -> None:
        """
        A missing slash or a non-normalized name redirects; unknown projects
        and files, and metadata that is not offered, are 404; other methods
        are 405.
        """
        for path, location in [
            ("/simple", "/simple/"),
            ("/simple/proto-alpha", "/simple/proto-alpha/"),
            ("/simple/Proto_Alpha/", "/simple/proto-alpha/"),
        ]:
            response = self.request(path)
            self.assertEqual(response.code, 301)
            self.assertEqual(response.headers.getRawHeaders("location"), [location])
        for path in [
            "/simple/nope/",
            "/files/nope.whl",
            "/files/proto_alpha-0.9.tar.gz.metadata",
            "/elsewhere",
        ]:
            self.assertEqual(self.request(path).code, 404, path)
        self.assertEqual(self.request(WHEEL_PATH, "POST").code, 405)

    def test_etag_and_serial(self) -> None:
        """
        Pages answer a matching If-None-Match with 304; each change bumps the
        serial and changes the ETag; a removed project is 404.
        """
        response, _ = self.get("/simple/proto-alpha/")
        [etag] = response.headers.getRawHeaders("etag")
        response, body = self.get("/simple/proto-alpha/", **{"If-None-Match": etag})
        self.assertEqual((response.code, body), (304, b""))
        self.index.remove("Proto.Alpha", self.sdist.filename)
        response, body = self.get("/simple/proto-alpha/", **{"If-None-Match": etag})
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("x-pypi-last-serial"), ["3"])
        self.assertNotIn(b"0.9", body)
        self.assertEqual(self.request("/files/" + self.sdist.filename).code, 404)
        self.index.remove("proto-alpha")
        self.assertEqual(self.request("/simple/proto-alpha/").code, 404)
        self.assertEqual(self.index.serial, 4)

    def test_files_and_ranges(self) -> None:
        """
        Files carry Content-Length and Accept-Ranges; single ranges get 206,
        unsatisfiable ones 416, and a stale If-Range the whole file; the
        .metadata file is the exact METADATA; HEAD sends no body.
        """
        data = self.wheel.data
        size = len(data)
        response, body = self.get(WHEEL_PATH)
        self.assertEqual((response.code, body, response.length), (200, data, size))
        self.assertEqual(response.headers.getRawHeaders("accept-ranges"), ["bytes"])
        for header, start, stop in [
            ("bytes=10-19", 10, 20),
            (f"bytes={size - 5}-", size - 5, size),
            ("bytes=-7", size - 7, size),
            (f"bytes=5-{size + 100}", 5, size),
        ]:
            response, body = self.get(WHEEL_PATH, Range=header)
            self.assertEqual((response.code, body), (206, data[start:stop]), header)
            self.assertEqual(
                response.headers.getRawHeaders("content-range"),
                [f"bytes {start}-{stop - 1}/{size}"],
            )
        response, _ = self.get(WHEEL_PATH, Range=f"bytes={size}-")
        self.assertEqual(response.code, 416)
        self.assertEqual(response.headers.getRawHeaders("content-range"), [f"bytes */{size}"])
        response, body = self.get(WHEEL_PATH, Range="bytes=0-1", **{"If-Range": '"other"'})
        self.assertEqual((response.code, body), (200, data))
        _, body = self.get(WHEEL_PATH + ".metadata")
        self.assertEqual(body, self.wheel.metadata)
        head, _, body = self.raw(WHEEL_PATH, "HEAD").value().partition(b"\r\n\r\n")
        self.assertIn(f"Content-Length: {size}".encode(), head)
        self.assertEqual(body, b"")

    def test_requests_recorded(self) -> None:
        """
        Every request is recorded with its decoded path and headers of
        interest; ``count`` filters by prefix and method.
        """
        self.get("/files/proto_alpha-1.0%2Bx.whl", Range="bytes=0-1", **{"User-Agent": "ua/1"})
        self.request(WHEEL_PATH, "HEAD")
        self.get("/simple/proto-alpha/", Accept=JSON_TYPE)
        first = self.index.requests[0]
        self.assertEqual((first.method, first.path), ("GET", "/files/proto_alpha-1.0+x.whl"))
        self.assertEqual((first.range, first.user_agent), ("bytes=0-1", "ua/1"))
        self.assertEqual(self.index.requests[2].accept, JSON_TYPE)
        self.assertEqual(self.index.count("/files/"), 2)
        self.assertEqual(self.index.count("/files/", "HEAD"), 1)

    def test_status_fault(self) -> None:
        """
        A status fault answers that status for ``times`` requests; a per-path
        fault wins over the default one, which then takes over.
        """
        self.index.fault = Fault(status=500)
        self.index.fault_for[WHEEL_PATH] = Fault(status=503, times=2)
        codes = [self.request(WHEEL_PATH).code for _ in range(3)]
        self.assertEqual(codes, [503, 503, 500])
        self.index.fault = None
        self.assertEqual(self.request(WHEEL_PATH).code, 200)

    def test_latency(self) -> None:
        """
        Headers come only after ``latency`` seconds of reactor time.
        """
        self.index.latency = 2.0
        d = self.stub.get(BASE + WHEEL_PATH)
        self.stub.flush()
        self.clock.advance(1.9)
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_disconnect_cancels_latency(self) -> None:
        """
        A client hanging up during the latency leaves no delayed call.
        """
        self.index.latency = 5.0
        d = self.stub.get(BASE + WHEEL_PATH)
        self.stub.flush()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d.cancel()
        self.stub.flush()
        self.failureResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_throttle(self) -> None:
        """
        A throttled body arrives one chunk per ``chunk_size / throttle``
        seconds; hanging up cancels the rest.
        """
        self.index.throttle = 10_000
        self.index.chunk_size = 10_000
        reader = self.reader(self.request(WHEEL_PATH))
        self.assertEqual(len(reader.data), 10_000)
        self.clock.advance(1)
        self.stub.flush()
        self.assertEqual(len(reader.data), 20_000)
        # The bound is the claim: three more seconds bring the last chunks.
        pump(
            self.stub,
            clock=self.clock,
            advance=1,
            until=lambda: reader.data == self.wheel.data,
            what="the rest of the body",
            rounds=3,
        )
        self.assertEqual(reader.data, self.wheel.data)
        self.successResultOf(reader.done)

        reader = self.reader(self.request(WHEEL_PATH))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        transport: Any = reader.transport
        transport.stopProducing()
        self.stub.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drop_and_truncate(self) -> None:
        """
        ``drop_after`` aborts and ``truncate`` closes cleanly, each after that
        many body bytes; the client sees a failed response either way.
        """
        for fault, aborted in [(Fault(drop_after=100), True), (Fault(truncate=100), False)]:
            self.index.fault = fault
            transport = self.raw(WHEEL_PATH)
            head, _, body = transport.value().partition(b"\r\n\r\n")
            self.assertIn(f"Content-Length: {len(self.wheel.data)}".encode(), head)
            self.assertEqual(body, self.wheel.data[:100])
            self.assertTrue(transport.disconnecting)
            self.assertEqual(transport.disconnected, aborted)
            reader = self.reader(self.request(WHEEL_PATH))
            self.assertEqual(reader.data, self.wheel.data[:100])
            self.successResultOf(reader.done)
            assert reader.reason is not None
            reader.reason.trap(ResponseFailed)

    def test_stall(self) -> None:
        """
        ``stall_after`` sends that many bytes, then nothing, forever.
        """
        self.index.fault = Fault(stall_after=100)
        reader = self.reader(self.request(WHEEL_PATH))
        self.clock.advance(3600)
        self.stub.flush()
        self.assertEqual(reader.data, self.wheel.data[:100])
        self.assertNoResult(reader.done)

    def test_corrupt(self) -> None:
        """
        ``corrupt`` changes exactly one byte and keeps the length.
        """
        self.index.fault = Fault(corrupt=True)
        _, body = self.get(WHEEL_PATH)
        self.assertEqual(len(body), len(self.wheel.data))
        diffs = [i for i, (a, b) in enumerate(zip(body, self.wheel.data, strict=True)) if a != b]
        self.assertEqual(diffs, [len(body) // 2])

    def test_hang(self) -> None:
        """
        ``hang`` never answers, whatever the clock says.
        """
        self.index.fault = Fault(hang=True, times=1)
        d = self.stub.get(BASE + WHEEL_PATH)
        self.stub.flush()
        self.clock.advance(3600)
        self.stub.flush()
        self.assertNoResult(d)
        self.assertEqual(self.request(WHEEL_PATH).code, 200)

    def test_serve(self) -> None:
        """
        `serve` listens on loopback, on an ephemeral port.
        """
        reactor = MemoryReactor()
        port, url = self.successResultOf(ensureDeferred(serve(reactor, self.index.resource())))
        [(number, _, _, interface)] = reactor.tcpServers
        self.assertEqual((number, interface), (0, "127.0.0.1"))
        host: Any = port.getHost()
        self.assertEqual(url, f"http://127.0.0.1:{host.port}/")

# -*- test-case-name: tests.test_testing -*-
"""
Test doubles shared by the test suite and the benchmark.

Two things live here:

- Distribution builders (`make_wheel`, `make_sdist`) that produce small,
  real, installable files with byte-for-byte deterministic contents, so
  hashes can be asserted and the same file can be rebuilt anywhere without
  touching a network or a build tool.
- `FakeIndex`, an in-memory upstream package index served by
  ``twisted.web``.  It speaks both serializations of the simple repository
  API and can be told to misbehave (latency, throttling, error statuses,
  dropped, stalled, truncated or corrupted bodies, hangs), because those
  are exactly the upstream behaviours the proxy must survive.

All timing goes through an injected reactor so unit tests can drive the
fake with a `twisted.internet.task.Clock`; the global reactor is never
imported.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import io
import json
import random
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from email.parser import BytesHeaderParser
from typing import cast
from urllib.parse import quote, unquote_to_bytes

import attrs
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from proxypypi.names import METADATA_SUFFIX, parse_dist_filename

__all__ = [
    "Dist",
    "FakeIndex",
    "Fault",
    "RecordedRequest",
    "make_sdist",
    "make_wheel",
    "serve",
]

#: Timestamp stamped on every archive member, so rebuilt files are identical.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_TAR_MTIME = 315532800  # 1980-01-01T00:00:00Z

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html; charset=utf-8"
_JSON_ACCEPTED = {JSON_TYPE, "application/vnd.pypi.simple.latest+json"}


# ---------------------------------------------------------------------------
# Distribution builders
# ---------------------------------------------------------------------------


@attrs.frozen
class Dist:
    """
    One built distribution file, held in memory.

    :ivar filename: the file name an index lists it under.
    :ivar data: the file's bytes.
    :ivar metadata: the exact ``.dist-info/METADATA`` bytes of a wheel (what
        a PEP 658 ``.metadata`` file must contain); ``None`` for sdists, for
        which the reference index offers no core metadata either.
    """

    filename: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    metadata: bytes | None = attrs.field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        """
        Hex sha256 of the file, as an index advertises it.
        """
        return hashlib.sha256(self.data).hexdigest()

    @property
    def metadata_sha256(self) -> str | None:
        """
        Hex sha256 of the core-metadata file, or ``None`` without one.
        """
        if self.metadata is None:
            return None
        return hashlib.sha256(self.metadata).hexdigest()

    @property
    def project(self) -> NormalizedName:
        """
        The normalized project name the file name declares.
        """
        return parse_dist_filename(self.filename).project

    @property
    def version(self) -> str:
        """
        The (normalized) version the file name declares.
        """
        return str(parse_dist_filename(self.filename).version)


def _dist_name(name: str) -> str:
    """
    The name as it appears in file and directory names: normalized, with
    underscores (binary distribution format and sdist specs).
    """
    return canonicalize_name(name).replace("-", "_")


def _core_metadata(
    name: str,
    version: str,
    summary: str,
    requires_python: str | None,
    requires_dist: Sequence[str],
) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines.append(f"Summary: {summary}")
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {req}" for req in requires_dist)
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


_WHEEL_FILE = b"Wheel-Version: 1.0\nGenerator: proxypypi.testing\nRoot-Is-Purelib: true\n" + (
    b"Tag: py3-none-any\n"
)


def make_wheel(
    name: str,
    version: str,
    *,
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    payload_size: int = 0,
    summary: str = "test package",
) -> Dist:
    """
    Build a pure-python wheel that pip and uv can install.

    The wheel holds ``<name>/__init__.py`` (with ``__version__``), and, when
    ``payload_size`` is positive, ``<name>/_payload.bin``: that many
    pseudo-random bytes seeded from the name and version, stored without
    compression, so the wheel really is about that big on the wire (for
    benchmarks and streaming tests) while staying reproducible.

    :param version: used verbatim in the file name and metadata, so callers
        can exercise unusual but valid spellings (``1.0+local``).
    """
    dist = _dist_name(name)
    info = f"{dist}-{version}.dist-info"
    metadata = _core_metadata(name, version, summary, requires_python, requires_dist)
    members: list[tuple[str, bytes, int]] = [
        (f"{dist}/__init__.py", f'__version__ = "{version}"\n'.encode(), zipfile.ZIP_DEFLATED),
    ]
    if payload_size > 0:
        payload = random.Random(f"{dist}-{version}").randbytes(payload_size)
        members.append((f"{dist}/_payload.bin", payload, zipfile.ZIP_STORED))
    members.append((f"{info}/METADATA", metadata, zipfile.ZIP_DEFLATED))
    members.append((f"{info}/WHEEL", _WHEEL_FILE, zipfile.ZIP_DEFLATED))
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data, _ in members)
    record += f"{info}/RECORD,,\n"
    members.append((f"{info}/RECORD", record.encode(), zipfile.ZIP_DEFLATED))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data, compression in members:
            zi = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
            zi.external_attr = 0o644 << 16
            zi.create_system = 3
            zi.compress_type = compression
            zf.writestr(zi, data)
    return Dist(f"{dist}-{version}-py3-none-any.whl", buf.getvalue(), metadata)


#: The in-tree PEP 517 backend shipped inside every sdist.  It needs nothing
#: but the standard library, so pip and uv can build the sdist offline and
#: with build isolation (``requires = []``).  It rebuilds the wheel from
#: ``PKG-INFO`` and the package directory.
_BACKEND = '''\
"""Tiny dependency-free PEP 517 backend for proxypypi test sdists."""
import base64, hashlib, os, re, tarfile, zipfile
from email.parser import Parser


def _meta():
    with open("PKG-INFO", encoding="utf-8") as f:
        text = f.read()
    msg = Parser().parsestr(text, headersonly=True)
    name = re.sub(r"[-_.]+", "_", msg["Name"]).lower()
    return text, name, msg["Version"]


def _info(text, name, version):
    wheel = "Wheel-Version: 1.0\\nGenerator: _backend\\nRoot-Is-Purelib: true\\n"
    wheel += "Tag: py3-none-any\\n"
    d = "%s-%s.dist-info" % (name, version)
    return d, {d + "/METADATA": text.encode(), d + "/WHEEL": wheel.encode()}


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_sdist = get_requires_for_build_wheel


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d, files = _info(*_meta())
    os.makedirs(os.path.join(metadata_directory, d), exist_ok=True)
    for path, data in files.items():
        with open(os.path.join(metadata_directory, path), "wb") as f:
            f.write(data)
    return d


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    text, name, version = _meta()
    d, info = _info(text, name, version)
    files = {}
    for root, dirs, names in os.walk(name):
        dirs.sort()
        for n in sorted(names):
            with open(os.path.join(root, n), "rb") as f:
                files[os.path.join(root, n).replace(os.sep, "/")] = f.read()
    files.update(info)
    record = ""
    for path, data in files.items():
        h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += "%s,sha256=%s,%d\\n" % (path, h, len(data))
    files[d + "/RECORD"] = (record + d + "/RECORD,,\\n").encode()
    filename = "%s-%s-py3-none-any.whl" % (name, version)
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    _, name, version = _meta()
    base = "%s-%s" % (name, version)
    with tarfile.open(os.path.join(sdist_directory, base + ".tar.gz"), "w:gz") as tf:
        for n in ("PKG-INFO", "pyproject.toml", "_backend.py", name):
            tf.add(n, base + "/" + n)
    return base + ".tar.gz"
'''

_PYPROJECT = """\
[build-system]
requires = []
build-backend = "_backend"
backend-path = ["."]
"""


def make_sdist(name: str, version: str, *, requires_python: str | None = None) -> Dist:
    """
    Build ``<name>-<version>.tar.gz``: ``PKG-INFO``, the package module and
    a ``pyproject.toml`` pointing at an in-tree, dependency-free backend, so
    installers can build it with no network and no setuptools.
    """
    dist = _dist_name(name)
    base = f"{dist}-{version}"
    pkg_info = _core_metadata(name, version, "test package", requires_python, ())
    members = [
        ("PKG-INFO", pkg_info),
        ("pyproject.toml", _PYPROJECT.encode()),
        ("_backend.py", _BACKEND.encode()),
        (f"{dist}/__init__.py", f'__version__ = "{version}"\n'.encode()),
    ]
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for path, data in members:
                ti = tarfile.TarInfo(f"{base}/{path}")
                ti.size = len(data)
                ti.mtime = _TAR_MTIME
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(data))
    return Dist(f"{base}.tar.gz", buf.getvalue(), None)


# ---------------------------------------------------------------------------
# The fake upstream index
# ---------------------------------------------------------------------------


@attrs.define
class Fault:
    """
    A misbehaviour to inject into responses.

    Body faults (``drop_after``, ``stall_after``, ``corrupt``, ``truncate``)
    apply to whatever body would have been sent, including the short body
    of an injected ``status``.

    :ivar status: answer with this HTTP status and a short text body.
    :ivar times: how many more requests this fault applies to (decremented
        per request); ``None`` means forever.  An exhausted fault is ignored.
    :ivar drop_after: abort the connection (TCP reset) after this many body
        bytes: what a crashing upstream or a middlebox looks like.  Over a
        real socket the reset discards bytes still buffered, so the client
        may get fewer (exact in memory, or when throttled).
    :ivar stall_after: send this many body bytes, then nothing, ever, while
        keeping the connection open: exercises read timeouts.
    :ivar corrupt: flip one byte in the middle of the body (same length), so
        only a hash check can notice.
    :ivar truncate: send only this many body bytes, then close the
        connection cleanly (FIN), short of the promised ``Content-Length``.
    :ivar hang: never answer at all, not even headers.
    """

    status: int | None = None
    times: int | None = None
    drop_after: int | None = None
    stall_after: int | None = None
    corrupt: bool = False
    truncate: int | None = None
    hang: bool = False


@attrs.frozen
class RecordedRequest:
    """
    What the fake index saw of one request; ``path`` is percent-decoded.
    """

    method: str
    path: str
    range: str | None = None
    accept: str | None = None
    if_none_match: str | None = None
    if_range: str | None = None
    user_agent: str | None = None


@attrs.frozen
class _Listed:
    """
    One file as the fake index lists it.
    """

    dist: Dist
    yanked: bool | str
    upload_time: str | None
    requires_python: str | None
    offer_metadata: bool


@attrs.define
class _Project:
    name: NormalizedName
    files: dict[str, _Listed] = attrs.field(factory=dict)
    last_serial: int = 0


@attrs.frozen
class _Response:
    code: int
    headers: dict[str, str]
    body: bytes = b""


def _text(code: int, message: str, **headers: str) -> _Response:
    return _Response(
        code, {"Content-Type": "text/plain; charset=utf-8", **headers}, message.encode() + b"\n"
    )


class _Unsatisfiable(Exception):
    pass


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """
    The half-open byte span a single-range ``Range`` header asks for, or
    ``None`` when the header should be ignored (malformed, or several
    ranges, which the fake does not serve).

    :raises _Unsatisfiable: for a well-formed range outside the file.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0 or size == 0:
            raise _Unsatisfiable()
        return max(0, size - n), size
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _Unsatisfiable()
    return start, min(int(last) + 1, size) if last else size


def _etag_matches(header: str, etag: str) -> bool:
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return "*" in candidates or etag in candidates


def _wants_json(accept: str | None) -> bool:
    """
    Whether the client lists the JSON serialization with a non-zero q.
    """
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in _JSON_ACCEPTED:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


@attrs.define(eq=False)
class FakeIndex:
    """
    An in-memory upstream index with failure injection.

    Files are added as `Dist` values and served under ``/files/``; project
    pages under ``/simple/<normalized>/`` list them in the JSON (PEP 691,
    api-version 1.1) or HTML (PEP 503) form, chosen by ``Accept``.

    Everything below is a knob a test may set at any time:

    :ivar formats: the serializations the fake speaks (``"json"``,
        ``"html"``); when only one is supported it is answered whatever the
        client asks, as old or minimal indexes do.
    :ivar include_size: list ``size`` in JSON (and claim api-version 1.1;
        without it the page claims 1.0).
    :ivar absolute_urls: list files as ``http://<Host>/files/...`` rather
        than ``../../files/...``.
    :ivar latency: seconds before the response headers of every request.
    :ivar throttle: body bytes per second, sent in ``chunk_size`` chunks.
    :ivar fault: the default `Fault` for every request.
    :ivar fault_for: per-path faults (keyed by decoded request path, such as
        ``/files/x-1.0-py3-none-any.whl``); they win over ``fault``.
    :ivar requests: every request received, in order.
    :ivar serial: the global change serial; each `add` or `remove`
        increments it and stamps the project's ``last-serial`` with it.
    """

    reactor: IReactorTime
    formats: set[str] = attrs.field(factory=lambda: {"json", "html"})
    include_size: bool = True
    absolute_urls: bool = False
    latency: float = 0.0
    throttle: int | None = None
    chunk_size: int = 16 * 1024
    fault: Fault | None = None
    fault_for: dict[str, Fault] = attrs.field(factory=dict)
    requests: list[RecordedRequest] = attrs.field(factory=list)
    serial: int = 0
    _projects: dict[NormalizedName, _Project] = attrs.field(factory=dict, init=False)

    # -- content ------------------------------------------------------------

    def add(
        self,
        dist: Dist,
        *,
        yanked: bool | str = False,
        upload_time: str | None = None,
        requires_python: str | None = None,
        offer_metadata: bool = True,
    ) -> None:
        """
        List ``dist`` on its project's page (creating the project), or
        replace the listing of a file with the same name (to yank it, say).

        :param upload_time: PEP 700 ``upload-time``; omitted when ``None``.
        :param requires_python: defaults to the wheel's own
            ``Requires-Python``, as the reference index derives it.
        :param offer_metadata: advertise and serve the PEP 658 ``.metadata``
            file (only possible for wheels).
        """
        if requires_python is None and dist.metadata is not None:
            headers = BytesHeaderParser().parsebytes(dist.metadata)
            requires_python = headers.get("Requires-Python")
        project = self._projects.setdefault(dist.project, _Project(dist.project))
        project.files[dist.filename] = _Listed(
            dist,
            yanked,
            upload_time,
            requires_python,
            offer_metadata and dist.metadata is not None,
        )
        self._bump(project)

    def remove(self, project: str, filename: str | None = None) -> None:
        """
        Stop listing and serving one file, or (``filename`` ``None``) the
        whole project, which then answers 404.

        :raises KeyError: if there is no such project or file.
        """
        name = canonicalize_name(project)
        if filename is None:
            del self._projects[name]
            self.serial += 1
            return
        del self._projects[name].files[filename]
        self._bump(self._projects[name])

    def count(self, path_prefix: str, method: str | None = None) -> int:
        """
        How many recorded requests had a path starting with ``path_prefix``
        (and the given ``method``, if any).
        """
        return sum(
            1
            for r in self.requests
            if r.path.startswith(path_prefix) and (method is None or r.method == method)
        )

    def resource(self) -> IResource:
        """
        The root resource: mount it at ``/`` (pages are at ``/simple/``).
        """
        return _IndexResource(self)

    def _bump(self, project: _Project) -> None:
        self.serial += 1
        project.last_serial = self.serial

    def _find(self, filename: str) -> _Listed | None:
        for project in self._projects.values():
            listed = project.files.get(filename)
            if listed is not None:
                return listed
        return None

    def _take_fault(self, path: str) -> Fault | None:
        for fault in (self.fault_for.get(path), self.fault):
            if fault is None or fault.times == 0:
                continue
            if fault.times is not None:
                fault.times -= 1
            return fault
        return None

    # -- rendering ----------------------------------------------------------

    def _route(self, request: server.Request, path: str) -> _Response:
        if path == "/simple":
            return _text(301, "moved", Location="/simple/")
        if path == "/simple/":
            return self._page(request, None)
        if path.startswith("/simple/"):
            name, slash, rest = path[len("/simple/") :].partition("/")
            if rest or not name:
                return _text(404, "not found")
            normalized = canonicalize_name(name)
            if normalized != name or not slash:
                return _text(301, "moved", Location=f"/simple/{normalized}/")
            project = self._projects.get(normalized)
            if project is None:
                return _text(404, "no such project")
            return self._page(request, project)
        if path.startswith("/files/"):
            filename = path[len("/files/") :]
            listed = self._find(filename)
            if listed is not None:
                return _file(request, listed.dist.data, listed.dist.sha256)
            if filename.endswith(METADATA_SUFFIX):
                listed = self._find(filename.removesuffix(METADATA_SUFFIX))
                if listed is not None and listed.offer_metadata:
                    metadata = listed.dist.metadata or b""
                    return _file(request, metadata, hashlib.sha256(metadata).hexdigest())
        return _text(404, "not found")

    def _page(self, request: server.Request, project: _Project | None) -> _Response:
        json_wanted = _wants_json(request.getHeader("accept"))
        as_json = "json" in self.formats and (json_wanted or "html" not in self.formats)
        serial = self.serial if project is None else project.last_serial
        if project is None:
            body = self._list_json(serial) if as_json else self._list_html(serial)
        elif as_json:
            body = self._project_json(request, project)
        else:
            body = self._project_html(request, project)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {
            "Content-Type": JSON_TYPE if as_json else HTML_TYPE,
            "Vary": "Accept",
            "ETag": etag,
            "Cache-Control": "max-age=600, public",
            "X-PyPI-Last-Serial": str(serial),
        }
        inm = request.getHeader("if-none-match")
        if inm is not None and _etag_matches(inm, etag):
            return _Response(304, headers)
        return _Response(200, headers, body)

    def _meta(self, serial: int) -> dict[str, object]:
        return {"api-version": "1.1" if self.include_size else "1.0", "_last-serial": serial}

    def _list_json(self, serial: int) -> bytes:
        projects = [{"name": name} for name in sorted(self._projects)]
        return json.dumps({"meta": self._meta(serial), "projects": projects}).encode()

    def _list_html(self, serial: int) -> bytes:
        links = "".join(f'    <a href="{n}/">{n}</a><br />\n' for n in sorted(self._projects))
        return _html_doc("Simple index", links, serial)

    def _file_url(self, request: server.Request, filename: str) -> str:
        quoted = quote(filename, safe="+!")
        if self.absolute_urls:
            host = request.getHeader("host") or f"127.0.0.1:{request.getHost().port}"
            return f"http://{host}/files/{quoted}"
        return f"../../files/{quoted}"

    def _versions(self, project: _Project) -> list[str]:
        versions = {Version(f.dist.version) for f in project.files.values()}
        return [str(v) for v in sorted(versions)]

    def _project_json(self, request: server.Request, project: _Project) -> bytes:
        files = []
        for f in project.files.values():
            entry: dict[str, object] = {
                "filename": f.dist.filename,
                "url": self._file_url(request, f.dist.filename),
                "hashes": {"sha256": f.dist.sha256},
                "requires-python": f.requires_python,
                "yanked": f.yanked,
            }
            core: object = {"sha256": f.dist.metadata_sha256} if f.offer_metadata else False
            entry["core-metadata"] = core
            entry["data-dist-info-metadata"] = core
            if self.include_size:
                entry["size"] = len(f.dist.data)
            if f.upload_time is not None:
                entry["upload-time"] = f.upload_time
            files.append(entry)
        page = {
            "meta": self._meta(project.last_serial),
            "name": project.name,
            "versions": self._versions(project),
            "files": files,
        }
        return json.dumps(page).encode()

    def _project_html(self, request: server.Request, project: _Project) -> bytes:
        links = []
        for f in project.files.values():
            attrs_ = [
                f'href="{html.escape(self._file_url(request, f.dist.filename))}'
                f'#sha256={f.dist.sha256}"'
            ]
            if f.requires_python is not None:
                attrs_.append(f'data-requires-python="{html.escape(f.requires_python)}"')
            if f.yanked is not False:
                reason = f.yanked if isinstance(f.yanked, str) else ""
                attrs_.append(f'data-yanked="{html.escape(reason)}"')
            if f.offer_metadata:
                value = f"sha256={f.dist.metadata_sha256}"
                attrs_.append(f'data-dist-info-metadata="{value}"')
                attrs_.append(f'data-core-metadata="{value}"')
            text = html.escape(f.dist.filename)
            links.append(f"    <a {' '.join(attrs_)}>{text}</a><br />\n")
        return _html_doc(f"Links for {project.name}", "".join(links), project.last_serial)


def _html_doc(title: str, links: str, serial: int) -> bytes:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>{title}</title>\n  </head>\n  <body>\n"
        f"    <h1>{title}</h1>\n{links}  </body>\n</html>\n<!--SERIAL {serial}-->\n"
    ).encode()


def _file(request: server.Request, data: bytes, sha256: str) -> _Response:
    """
    A file response, honouring a single ``Range`` (and ``If-Range``).
    """
    etag = f'"{sha256}"'
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "max-age=365000000, immutable, public",
    }
    range_header = request.getHeader("range")
    if_range = request.getHeader("if-range")
    if range_header is None or (if_range is not None and if_range != etag):
        return _Response(200, headers, data)
    try:
        span = _parse_range(range_header, len(data))
    except _Unsatisfiable:
        return _text(416, "range not satisfiable", **{"Content-Range": f"bytes */{len(data)}"})
    if span is None:
        return _Response(200, headers, data)
    start, stop = span
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
    return _Response(206, headers, data[start:stop])


@implementer(IPushProducer)
@attrs.define(eq=False)
class _Exchange:
    """
    One request in flight: its delayed work, its body, and whether the
    client is still there.  Registered as the request's push producer while
    a body is being sent, so a slow client pauses the fake instead of
    filling memory.

    :ivar ending: what to do once ``limit`` bytes are out: ``"finish"``,
        ``"abort"`` (reset), ``"lose"`` (clean close, short body) or
        ``"stall"`` (nothing).
    """

    request: server.Request
    reactor: IReactorTime
    throttle: int | None
    chunk_size: int
    gone: bool = False
    done: bool = False
    paused: bool = False
    pending: IDelayedCall | None = None
    data: bytes = b""
    offset: int = 0
    limit: int = 0
    ending: str = "finish"
    _pumping: bool = False

    def later(self, delay: float, work: Callable[[], None]) -> None:
        """
        Run ``work`` after ``delay`` seconds unless the client goes away.
        """

        def run() -> None:
            self.pending = None
            if not self.gone:
                work()

        self.pending = self.reactor.callLater(delay, run)

    def lost(self, reason: Failure | None) -> None:
        """
        The client disconnected: cancel whatever was scheduled.
        """
        self.gone = True
        if self.pending is not None and self.pending.active():
            self.pending.cancel()
        self.pending = None

    def send(self, data: bytes, limit: int, ending: str) -> None:
        self.data, self.limit, self.ending = data, min(limit, len(data)), ending
        self.request.registerProducer(self, True)
        # Flush the headers now, so a fault at byte 0 still sends them.
        self.request.write(b"")
        self._pump()

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while not (self.gone or self.done or self.paused or self.pending):
                if self.offset >= self.limit:
                    self._end()
                    return
                stop = min(self.limit, self.offset + self.chunk_size)
                chunk = self.data[self.offset : stop]
                self.offset = stop
                self.request.write(chunk)
                if self.throttle:
                    self.later(len(chunk) / self.throttle, self._pump)
        finally:
            self._pumping = False

    def _end(self) -> None:
        self.done = True
        if self.ending == "stall":
            return
        self.request.unregisterProducer()
        if self.ending == "abort":
            # A reset, not a FIN: abortConnection is on ITCPTransport only.
            cast(ITCPTransport, self.request.transport).abortConnection()
        elif self.ending == "lose":
            self.request.loseConnection()
        else:
            self.request.finish()

    # IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:
        self.lost(None)


class _IndexResource(Resource):
    """
    The fake index's single leaf resource: it sees every path, so faults,
    latency and recording apply uniformly.
    """

    isLeaf = True

    def __init__(self, index: FakeIndex) -> None:
        super().__init__()
        self._index = index

    def render(self, request: server.Request) -> int:
        index = self._index
        path = unquote_to_bytes(request.path).decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace")
        index.requests.append(
            RecordedRequest(
                method,
                path,
                range=request.getHeader("range"),
                accept=request.getHeader("accept"),
                if_none_match=request.getHeader("if-none-match"),
                if_range=request.getHeader("if-range"),
                user_agent=request.getHeader("user-agent"),
            )
        )
        fault = index._take_fault(path)
        exchange = _Exchange(request, index.reactor, index.throttle, index.chunk_size)
        request.notifyFinish().addErrback(exchange.lost)
        if fault is not None and fault.hang:
            return server.NOT_DONE_YET
        if index.latency > 0:
            exchange.later(index.latency, lambda: self._respond(exchange, path, method, fault))
        else:
            self._respond(exchange, path, method, fault)
        return server.NOT_DONE_YET

    def _respond(self, exchange: _Exchange, path: str, method: str, fault: Fault | None) -> None:
        request = exchange.request
        if method not in ("GET", "HEAD"):
            response = _text(405, "method not allowed", Allow="GET, HEAD")
        elif fault is not None and fault.status is not None:
            response = _text(fault.status, f"injected fault: {fault.status}")
        else:
            response = self._index._route(request, path)
        request.setResponseCode(response.code)
        for name, value in response.headers.items():
            request.setHeader(name, value)
        body = response.body
        if response.code != 304:
            request.setHeader("Content-Length", str(len(body)))
        if method == "HEAD" or response.code == 304:
            body = b""
        limit, ending = len(body), "finish"
        if fault is not None:
            if fault.corrupt and body:
                middle = len(body) // 2
                body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
            for count, how in (
                (fault.drop_after, "abort"),
                (fault.stall_after, "stall"),
                (fault.truncate, "lose"),
            ):
                if count is not None and count < len(body):
                    limit, ending = count, how
                    break
        exchange.send(body, limit, ending)


async def serve(reactor: IReactorTCP, resource: IResource) -> tuple[IListeningPort, str]:
    """
    Serve ``resource`` on an ephemeral loopback port.

    :return: the listening port (stop it with ``stopListening``) and the
        base URL, ``http://127.0.0.1:<port>/``.
    """
    site = server.Site(resource, reactor=reactor)
    site.noisy = False
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    return port, f"http://127.0.0.1:{port.getHost().port}/"

# -*- test-case-name: tests.test_testing -*-
"""
Distribution builders: small, real, installable wheels and sdists with
byte-for-byte deterministic contents, so hashes can be asserted and the
same file can be rebuilt anywhere without a network or a build tool.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import random
import tarfile
import zipfile
from collections.abc import Sequence

import attrs
from packaging.utils import NormalizedName, canonicalize_name

from proxypypi.names import parse_dist_filename

#: Timestamp stamped on every archive member, so rebuilt files are identical.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_TAR_MTIME = 315532800  # 1980-01-01T00:00:00Z


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


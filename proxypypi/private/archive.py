# -*- test-case-name: tests.test_upload -*-
"""
Inspection of an uploaded file, blocking and in a thread: its digests
checked against what the client sent, and a wheel's METADATA taken out.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import zipfile
from email.parser import BytesHeaderParser
from typing import Any

import attrs

from proxypypi.cache.storage import (
    PARTIAL_SUFFIX,
    write_synced,
)
from proxypypi.private.model import DigestMismatch, Upload, UploadRejected

#: The largest wheel METADATA extracted.
MAX_METADATA = 16 * 1024 * 1024

_READ_CHUNK = 1024 * 1024



@attrs.frozen
class Inspected:
    """
    What reading the whole uploaded file established.

    :ivar metadata_path: a spool file holding the wheel's METADATA.
    """

    sha256: str
    size: int
    requires_python: str | None
    metadata_path: str | None = None
    metadata_sha256: str | None = None


def wheel_metadata(path: str, filename: str) -> bytes:
    """
    The exact bytes of a wheel's ``<name>-<version>.dist-info/METADATA``.

    :raises UploadRejected: when the file is not a wheel with one.
    """
    stem = filename[: -len(".whl")].split("-")
    expected = f"{stem[0]}-{stem[1]}.dist-info/METADATA"
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if expected not in names:
                found = [
                    n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
                ]
                if len(found) != 1:
                    raise UploadRejected(400, f"{filename!r} is not a valid wheel: no {expected}")
                expected = found[0]
            info = zf.getinfo(expected)
            if info.file_size > MAX_METADATA:
                raise UploadRejected(400, f"{filename!r}: METADATA is too large")
            with zf.open(info) as member:
                data = member.read(MAX_METADATA + 1)
    except UploadRejected:
        raise
    except Exception as e:
        raise UploadRejected(400, f"{filename!r} is not a valid wheel ({e})") from None
    if len(data) > MAX_METADATA:
        raise UploadRejected(400, f"{filename!r}: METADATA is too large")
    return data


def _write_spool(spool_dir: str, data: bytes) -> str:
    path = os.path.join(spool_dir, f"upload-{secrets.token_hex(12)}.metadata{PARTIAL_SUFFIX}")
    write_synced(path, data, exclusive=True)
    return path


def inspect_upload(upload: Upload, spool_dir: str) -> Inspected:
    """
    Hash the spooled file, compare every digest the client sent, and take
    a wheel's METADATA out.  Also fsyncs the spool file, so that renaming
    it into place later makes it durable.  Blocking: runs in a thread.

    :raises UploadRejected: when a digest does not match or a wheel is not
        one.
    """
    hashers: dict[str, Any] = {"sha256": hashlib.sha256()}
    if "blake2_256" in upload.digests:
        hashers["blake2_256"] = hashlib.blake2b(digest_size=32)
    if "md5" in upload.digests:
        hashers["md5"] = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(upload.spool_path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            size += len(chunk)
            for h in hashers.values():
                h.update(chunk)
        os.fsync(f.fileno())
    for algorithm, sent in upload.digests.items():
        actual = hashers[algorithm].hexdigest()
        if actual != sent:
            raise DigestMismatch(algorithm, actual)
    requires_python = upload.requires_python
    if upload.kind != "wheel":
        return Inspected(hashers["sha256"].hexdigest(), size, requires_python)
    metadata = wheel_metadata(upload.spool_path, upload.filename)
    if requires_python is None:
        requires_python = BytesHeaderParser().parsebytes(metadata).get("Requires-Python")
        requires_python = requires_python.strip() if requires_python else None
    return Inspected(
        hashers["sha256"].hexdigest(),
        size,
        requires_python or None,
        _write_spool(spool_dir, metadata),
        hashlib.sha256(metadata).hexdigest(),
    )



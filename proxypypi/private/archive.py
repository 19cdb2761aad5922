# -*- test-case-name: tests.test_upload -*-
"""
Inspection of an uploaded file, blocking and in a thread: its digests
checked against what the client sent, and a wheel's METADATA taken out.

A wheel must describe the project and version its file name (and the
form) declare: its ``.dist-info`` directory is named for them, and its
METADATA's ``Name`` and ``Version`` say the same, as the public index
requires.  Otherwise a user allowed to upload ``corp-lib`` could serve
METADATA that says ``Name: requests`` to every installer.  Its table of
contents is bounded before ``zipfile`` reads it
(`proxypypi.cache.ziplimits`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from email.parser import BytesHeaderParser
from typing import Any

import attrs
from packaging.version import InvalidVersion, Version

from proxypypi.cache.coremetadata import WheelMetadataError, read_wheel_metadata
from proxypypi.cache.storage import (
    PARTIAL_SUFFIX,
    write_synced,
)
from proxypypi.names import normalize
from proxypypi.private.model import DigestMismatch, Upload, UploadRejected

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


def _is_dist_info_of(member: str, upload: Upload) -> bool:
    """
    Whether ``member`` is the METADATA of a ``.dist-info`` directory named
    for the upload's project and version (spelled any way they normalize
    alike: ``Corp_Lib-1.0.0`` for ``corp-lib`` 1.0).
    """
    directory, slash, rest = member.partition("/")
    if not slash or rest != "METADATA" or not directory.endswith(".dist-info"):
        return False
    name, dash, version = directory[: -len(".dist-info")].rpartition("-")
    if not dash or normalize(name) != upload.project:
        return False
    try:
        return Version(version) == upload.version
    except InvalidVersion:
        return False


def _check_metadata(data: bytes, upload: Upload) -> None:
    """
    METADATA must name the project and version the file name does.

    :raises UploadRejected: saying what it names instead.
    """
    headers = BytesHeaderParser().parsebytes(data)
    name, version = str(headers.get("Name", "")).strip(), str(headers.get("Version", "")).strip()
    if normalize(name) != upload.project:
        raise UploadRejected(
            400,
            f"{upload.filename!r}: its METADATA says Name: {name or '(none)'}, but the file "
            f"is for {upload.project}; build the wheel from that project",
        )
    try:
        same = Version(version) == upload.version
    except InvalidVersion:
        same = False
    if not same:
        raise UploadRejected(
            400,
            f"{upload.filename!r}: its METADATA says Version: {version or '(none)'}, but the "
            f"file is version {upload.version}",
        )


def wheel_metadata(path: str, upload: Upload) -> bytes:
    """
    The exact bytes of a wheel's ``<name>-<version>.dist-info/METADATA``,
    once checked to be the upload's.

    :raises UploadRejected: when the file is not a wheel of the upload's
        project and version with one.
    """
    expected = f"{upload.project}-{upload.version}.dist-info/METADATA"
    try:
        data = read_wheel_metadata(
            path, upload.filename, lambda n: _is_dist_info_of(n, upload), expected
        )
    except WheelMetadataError as e:
        raise UploadRejected(400, str(e)) from None
    _check_metadata(data, upload)
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
    metadata = wheel_metadata(upload.spool_path, upload)
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



# -*- test-case-name: tests.test_upload -*-
"""
The legacy upload protocol's form, as twine and ``uv publish`` fill it in:
cheap checks of every field, before anything is hashed or stored, turned
into the plain `proxypypi.private.model.Upload` the private store takes.
"""

from __future__ import annotations

from collections.abc import Mapping

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from proxypypi.names import InvalidDistFilename, normalize, parse_dist_filename
from proxypypi.private.model import DigestMismatch, Upload, UploadRejected
from proxypypi.web.form import SpooledFile

#: The digests an upload may carry: form field, algorithm, hex length.
DIGEST_FIELDS = (
    ("sha256_digest", "sha256", 64),
    ("blake2_256_digest", "blake2_256", 64),
    ("md5_digest", "md5", 32),
)

#: Fields every upload must have, besides the ``content`` file.
REQUIRED_FIELDS = (":action", "protocol_version", "name", "version", "filetype")

_FILETYPES = {"bdist_wheel": "wheel", "sdist": "sdist"}


def _single(fields: Mapping[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    value = values[0].strip()
    return value or None


def _check_filename(filename: str) -> None:
    if "/" in filename or "\\" in filename or ".." in filename:
        raise UploadRejected(
            400, f"file name {filename!r} must be a bare file name: no path separators or '..'"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in filename):
        raise UploadRejected(400, "file name contains control characters")


def validate_form(
    fields: Mapping[str, list[str]], content: SpooledFile | None, user: str
) -> Upload:
    """
    Check an upload form as twine and ``uv publish`` send it.

    :raises UploadRejected: naming the first problem found.
    """
    action = _single(fields, ":action")
    if action is not None and action != "file_upload":
        raise UploadRejected(
            400, f"unsupported :action {action!r}; this index only accepts file_upload"
        )
    missing = [name for name in REQUIRED_FIELDS if _single(fields, name) is None]
    if content is None:
        missing.append("content")
    if missing:
        raise UploadRejected(400, f"missing form field(s): {', '.join(missing)}")
    assert content is not None
    if _single(fields, "protocol_version") != "1":
        raise UploadRejected(400, "unsupported protocol_version; this index speaks version 1")
    filename = content.filename
    _check_filename(filename)
    try:
        dist = parse_dist_filename(filename)
    except InvalidDistFilename:
        raise UploadRejected(
            400, f"{filename!r} is not a wheel (.whl) or sdist (.tar.gz) file name"
        ) from None
    if dist.kind == "sdist" and not filename.endswith(".tar.gz"):
        raise UploadRejected(400, f"{filename!r}: sdists must be .tar.gz files (PEP 625)")
    filetype = _single(fields, "filetype") or ""
    if _FILETYPES.get(filetype) != dist.kind:
        raise UploadRejected(
            400, f"filetype {filetype!r} does not match {filename!r} (bdist_wheel or sdist)"
        )
    name = _single(fields, "name") or ""
    project = normalize(name)
    if project is None:
        raise UploadRejected(400, f"{name!r} is not a valid project name")
    if dist.project != project:
        raise UploadRejected(
            400, f"file name {filename!r} is for project {dist.project}, but name says {name!r}"
        )
    raw_version = _single(fields, "version") or ""
    try:
        version = Version(raw_version)
    except InvalidVersion:
        raise UploadRejected(400, f"{raw_version!r} is not a valid version") from None
    if version != dist.version:
        raise UploadRejected(
            400, f"file name {filename!r} is version {dist.version}, but version says {raw_version}"
        )
    digests: dict[str, str] = {}
    for field, algorithm, length in DIGEST_FIELDS:
        value = _single(fields, field)
        if value is None:
            continue
        value = value.lower()
        if len(value) != length or any(c not in "0123456789abcdef" for c in value):
            raise UploadRejected(400, f"{field} is not a {length}-digit hex digest")
        digests[algorithm] = value
    if not digests:
        raise UploadRejected(400, "send sha256_digest (or blake2_256_digest) with the file")
    if content.size == 0:
        raise UploadRejected(400, f"{filename!r} is empty")
    requires_python = _single(fields, "requires_python")
    if requires_python is not None:
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier:
            raise UploadRejected(
                400, f"requires_python {requires_python!r} is not a version specifier"
            ) from None
    return Upload(
        project, filename, dist.kind, version, content.path, digests, requires_python, user
    )




def refusal(error: UploadRejected) -> str:
    """
    What to tell the client about ``error``, in the protocol's own terms:
    a digest that does not match is named by its form field.
    """
    if isinstance(error, DigestMismatch):
        field = next(f for f, algorithm, _ in DIGEST_FIELDS if algorithm == error.algorithm)
        return (
            f"{field} does not match the file received ({error.actual}); "
            "the upload was damaged or the digest is wrong"
        )
    return error.message

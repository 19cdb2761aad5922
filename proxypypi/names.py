# -*- test-case-name: tests.test_names -*-
"""
Project names and distribution file names.

Everything here leans on ``packaging``: normalization (PEP 503), name
validation (PEP 508) and wheel/sdist file-name parsing are exactly what
``packaging.utils`` already does, so nothing here re-implements them with
regular expressions.
"""

from __future__ import annotations

import functools
import re

import attrs
from packaging.utils import (
    InvalidName,
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

#: Longest file name accepted anywhere; common file systems stop at 255 bytes.
MAX_FILENAME_BYTES = 255

#: Longest project name accepted: room under `MAX_FILENAME_BYTES` for the
#: suffixes the storage adds to a name (``.json``, a page form's
#: ``.v1.json.gz``, a private project's files).  The longest names on the
#: public index are well under a hundred characters.
MAX_PROJECT_NAME_BYTES = 200

#: Distinct file names (and versions) whose verdicts are remembered: a page
#: refreshed with the same files costs a dictionary lookup per file.  About
#: a quarter of a kilobyte each.
VERDICTS = 32768

#: Path separators and control characters.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")

#: A wheel's build tag (PEP 427): digits first.
_BUILD_TAG = re.compile(r"\d")

#: Suffix of a PEP 658 core-metadata file, next to its distribution.
METADATA_SUFFIX = ".metadata"


class InvalidDistFilename(ValueError):
    """
    A file name that is not a wheel or sdist name of the expected form.
    """


def normalize(name: str) -> NormalizedName | None:
    """
    The PEP 503 normalized form of a project name, or ``None`` when the name
    cannot be a project name at all (so callers can answer 404 without
    asking any upstream).
    """
    if not name or len(name.encode("utf-8", "replace")) > MAX_PROJECT_NAME_BYTES:
        return None
    try:
        return canonicalize_name(name, validate=True)
    except InvalidName:
        return None


def is_safe_filename(filename: str) -> bool:
    """
    Whether ``filename`` can name a file inside a project directory: one path
    segment, no traversal, nothing hidden, no control characters.
    """
    if not filename or filename.startswith(".") or _UNSAFE.search(filename) is not None:
        return False
    return len(filename.encode("utf-8", "replace")) <= MAX_FILENAME_BYTES


@attrs.frozen
class DistName:
    """
    What a distribution file name says about its contents.
    """

    project: NormalizedName
    version: Version
    kind: str  #: ``"wheel"`` or ``"sdist"``


def parse_dist_filename(filename: str) -> DistName:
    """
    Parse a wheel (``.whl``) or sdist (``.tar.gz``, ``.zip``) file name.

    :raises InvalidDistFilename: for anything else.
    """
    if not is_safe_filename(filename):
        raise InvalidDistFilename(f"unsafe file name: {filename!r}")
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            kind = "wheel"
        else:
            name, version = parse_sdist_filename(filename)
            kind = "sdist"
    except (InvalidWheelFilename, InvalidSdistFilename) as e:
        raise InvalidDistFilename(str(e)) from e
    if normalize(name) != name:
        raise InvalidDistFilename(f"not a project name this index stores: {name!r}")
    return DistName(name, version, kind)


def _sdist_stem(filename: str) -> str | None:
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None


@functools.lru_cache(maxsize=VERDICTS)
def normal_version(text: str) -> str | None:
    """
    The normal form of a version, or ``None`` when ``text`` is none; each
    distinct text is parsed once (a release's files share one).
    """
    try:
        return str(Version(text))
    except InvalidVersion:
        return None


def _wheel_version(filename: str, project: NormalizedName) -> str | None:
    """
    `version_of` for a wheel, doing only the work a listing needs: the
    name part and the version (through ``packaging``), not the tags, whose
    parsing is most of ``parse_wheel_filename``'s cost and which say
    nothing about whose file it is.
    """
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6) or "__" in parts[0]:
        return None
    if len(parts) == 6 and _BUILD_TAG.match(parts[2]) is None:
        return None
    if _wheel_project(parts[0]) != project:
        return None
    return normal_version(parts[1])


@functools.lru_cache(maxsize=VERDICTS)
def _wheel_project(name: str) -> NormalizedName | None:
    """
    The project a wheel's name part names, or ``None`` when it is no
    project name; each distinct name part (a page has one or two) is
    checked once.
    """
    try:
        return canonicalize_name(name, validate=True)
    except InvalidName:
        return None


@functools.lru_cache(maxsize=VERDICTS)
def version_of(filename: str, project: NormalizedName) -> str | None:
    """
    The version a file of ``project`` declares in its name, or ``None`` when
    the name does not say (legacy formats) or is not ``project``'s.

    Wheels name their project unambiguously.  Old sdists do not: in
    ``cffi-1.0.2-2.tar.gz`` any dash may end the name, so the first dash
    after which the rest is ``project``'s version decides.  Remembered, so
    a refreshed page costs a lookup per unchanged name.
    """
    if not is_safe_filename(filename):
        return None
    if filename.endswith(".whl"):
        return _wheel_version(filename, project)
    stem = _sdist_stem(filename)
    if stem is None:
        return None
    try:
        name, version = parse_sdist_filename(filename)
    except InvalidSdistFilename:
        return None
    if name == project:
        return normal_version(str(version))
    for i, c in enumerate(stem):
        if c == "-" and normalize(stem[:i]) == project:
            return normal_version(stem[i + 1 :])
    return None


def belongs_to(filename: str, project: NormalizedName) -> bool:
    """
    Whether a file listed on ``project``'s page may be that project's: its
    name says so, or it is in a legacy format whose name says nothing.
    """
    if version_of(filename, project) is not None:
        return True
    try:
        parse_dist_filename(filename)
    except InvalidDistFilename:
        return not filename.endswith((".whl", ".tar.gz", ".zip"))
    return False

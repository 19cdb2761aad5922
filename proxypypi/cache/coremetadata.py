# -*- test-case-name: tests.test_coremetadata -*-
"""
Core metadata (PEP 658) of stored wheels, for upstreams that offer none.

Without a ``.metadata`` file, uv resolves by HEAD and Range requests into
every candidate wheel, and pip downloads whole wheels to read them.  Once
a wheel is stored here its ``METADATA`` is at hand: it is taken out,
stored beside the wheel as ``<wheel>.metadata`` (exactly where a fetched
upstream ``.metadata`` would be), and from then on the wheel's entry on
every rendering of its page offers it, with its sha256.

Everything here blocks and runs off the reactor thread.  The same reader
checks uploaded wheels (`proxypypi.private.archive`).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable

import attrs

from proxypypi.cache.storage import write_atomically
from proxypypi.cache.ziplimits import ArchiveRefused, check_members
from proxypypi.names import METADATA_SUFFIX
from proxypypi.simple.model import DistFile, ProjectPage

#: The largest wheel METADATA taken out.
MAX_METADATA = 16 * 1024 * 1024


class WheelMetadataError(ValueError):
    """
    A wheel without one readable ``.dist-info/METADATA``; the message says
    which file and why.
    """


def read_wheel_metadata(
    path: str,
    filename: str,
    select: Callable[[str], bool] | None = None,
    expected: str | None = None,
) -> bytes:
    """
    The exact bytes of a wheel's ``<name>-<version>.dist-info/METADATA``
    (or of its only ``.dist-info/METADATA``, for a wheel whose directory
    is spelled otherwise), read in at most `MAX_METADATA` bytes, once its
    table of contents is known to be of a sane size
    (`proxypypi.cache.ziplimits`).

    :param select: which members may be the one (an upload's: exactly one
        of its own project and version).
    :param expected: the member's name as error messages give it.
    :raises WheelMetadataError: when the file is not a wheel with one.
    """
    stem = filename[: -len(".whl")].split("-")
    member = f"{stem[0]}-{stem[1]}.dist-info/METADATA"
    expected = expected or member
    try:
        with open(path, "rb") as f:
            check_members(f)
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if select is not None:
                found = [n for n in names if select(n)]
            elif member in names:
                found = [member]
            else:
                found = [n for n in names if _is_top_metadata(n)]
            if len(found) != 1:
                raise WheelMetadataError(
                    f"{filename!r} is not a valid wheel: no {expected} (or several)"
                )
            info = zf.getinfo(found[0])
            if info.file_size > MAX_METADATA:
                raise WheelMetadataError(f"{filename!r}: METADATA is too large")
            with zf.open(info) as opened:
                data = opened.read(MAX_METADATA + 1)
    except WheelMetadataError:
        raise
    except ArchiveRefused as e:
        raise WheelMetadataError(f"{filename!r} is not a valid wheel: {e}") from None
    except Exception as e:
        raise WheelMetadataError(f"{filename!r} is not a valid wheel ({e})") from None
    if len(data) > MAX_METADATA:
        raise WheelMetadataError(f"{filename!r}: METADATA is too large")
    return data


def _is_top_metadata(name: str) -> bool:
    return name.count("/") == 1 and name.endswith(".dist-info/METADATA")


def extract_metadata(wheel_path: str, filename: str, expected_sha256: str | None = None) -> str:
    """
    Take a stored wheel's METADATA out into ``<wheel_path>.metadata``,
    atomically; with ``expected_sha256`` (the hash the page promises), only
    when it matches.

    :returns: its sha256.
    :raises WheelMetadataError: when the wheel has none, or another.
    :raises OSError: when it cannot be written.
    """
    data = read_wheel_metadata(wheel_path, filename)
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise WheelMetadataError(f"{filename!r}: METADATA is not what the page's hash says")
    write_atomically(wheel_path + METADATA_SUFFIX, data)
    return digest


def _sha256_of(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_METADATA + 1)
    except OSError:
        return None
    if not data or len(data) > MAX_METADATA:
        return None
    return hashlib.sha256(data).hexdigest()


def with_stored_metadata(page: ProjectPage, project_dir: str) -> ProjectPage:
    """
    ``page`` with every wheel that has no core metadata upstream, but whose
    ``.metadata`` is stored in ``project_dir``, offering it with its hash.
    One directory listing, and one small read per such wheel.
    """
    wanting = [f for f in page.files if not f.core_metadata and f.filename.endswith(".whl")]
    if not wanting:
        return page
    try:
        stored = set(os.listdir(project_dir))
    except OSError:
        return page
    offered: dict[str, DistFile] = {}
    for f in wanting:
        name = f.filename + METADATA_SUFFIX
        digest = _sha256_of(os.path.join(project_dir, name)) if name in stored else None
        if digest is not None:
            offered[f.filename] = attrs.evolve(f, core_metadata={"sha256": digest})
    if not offered:
        return page
    files = tuple(offered.get(f.filename, f) for f in page.files)
    return attrs.evolve(page, files=files)

# -*- test-case-name: tests.test_archive -*-
"""
The size of a zip archive's table of contents, read before ``zipfile``
reads it.

``zipfile.ZipFile`` builds an object of about half a kilobyte for every
member it finds in the central directory, and finds them by the
directory's size, not its stated count: a 35 MB wheel of 400,000 empty
members took 220 MB to open.  So an uploaded wheel's central directory is
walked here first, in constant memory (one header at a time), and refused
when it is larger or has more members than any real wheel.
"""

from __future__ import annotations

import struct
from typing import IO

#: Members a wheel may have (the largest on the public index have a few
#: tens of thousands of files); ``zipfile`` then needs at most ~30 MB.
MAX_MEMBERS = 50_000

#: Bytes of central directory a wheel may have: room for `MAX_MEMBERS`
#: members with long paths.
MAX_CENTRAL_DIRECTORY = 16 * 1024 * 1024

_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_ENTRY = struct.Struct("<4s24xHHH12x")
_ENTRY_SIGNATURE = b"PK\x01\x02"
_HEADER_SIZE = 46
_MAX_COMMENT = 0xFFFF
_CHUNK = 1024 * 1024


class ArchiveRefused(ValueError):
    """
    The archive is not one to open: its message says why.
    """


def _directory(f: IO[bytes]) -> tuple[int, int]:
    """
    Where the central directory starts and how long it is, from the end
    of central directory record (ZIP64's when the classic one overflows).
    """
    end = f.seek(0, 2)
    tail_size = min(end, _EOCD.size + _MAX_COMMENT)
    f.seek(end - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(_EOCD_SIGNATURE)
    if at < 0 or len(tail) - at < _EOCD.size:
        raise ArchiveRefused("not a zip archive (no end of central directory)")
    *_, count, size, offset, _comment = _EOCD.unpack_from(tail, at)
    if count != 0xFFFF and 0xFFFFFFFF not in (size, offset):
        return offset, size
    locator_at = end - tail_size + at - _ZIP64_LOCATOR.size
    if locator_at < 0:
        raise ArchiveRefused("damaged zip archive (no ZIP64 locator)")
    f.seek(locator_at)
    signature, _disk, record_at, _disks = _ZIP64_LOCATOR.unpack(f.read(_ZIP64_LOCATOR.size))
    if signature != _ZIP64_LOCATOR_SIGNATURE:
        raise ArchiveRefused("damaged zip archive (no ZIP64 locator)")
    f.seek(record_at)
    record = f.read(_ZIP64_EOCD.size)
    if len(record) < _ZIP64_EOCD.size or not record.startswith(_ZIP64_EOCD_SIGNATURE):
        raise ArchiveRefused("damaged zip archive (no ZIP64 end of central directory)")
    *_, size, offset = _ZIP64_EOCD.unpack(record)
    return offset, size


def check_members(
    f: IO[bytes], max_members: int = MAX_MEMBERS, max_size: int = MAX_CENTRAL_DIRECTORY
) -> int:
    """
    Count the members of a zip archive by walking its central directory,
    one header at a time.

    :returns: how many members it has.
    :raises ArchiveRefused: when it is not a zip archive, or its central
        directory is larger than ``max_size`` or has more than
        ``max_members`` members.
    """
    offset, size = _directory(f)
    if size > max_size:
        raise ArchiveRefused(
            f"its table of contents is {size} bytes, more than {max_size} "
            "(a wheel of that many files is not accepted)"
        )
    f.seek(offset)
    buffer, at, left, count = b"", 0, size, 0

    def have(n: int) -> bool:
        # At least n bytes from `at` on, reading on (a chunk at a time) if needed.
        nonlocal buffer, at, left
        while len(buffer) - at < n and left:
            piece = f.read(min(_CHUNK, left))
            if not piece:
                return False
            left -= len(piece)
            buffer, at = buffer[at:] + piece, 0
        return len(buffer) - at >= n

    while have(_HEADER_SIZE):
        signature, name, extra, comment = _ENTRY.unpack_from(buffer, at)
        if signature != _ENTRY_SIGNATURE:
            break
        count += 1
        if count > max_members:
            raise ArchiveRefused(f"more than {max_members} members")
        skip = _HEADER_SIZE + name + extra + comment
        if not have(skip):
            break
        at += skip
    return count

"""
What an uploaded wheel must be (issue 14, items 8 and 9): a wheel of the
project and version it is named for, through and through, with a table of
contents of bounded size.  Uploads go through the production site.
"""

from __future__ import annotations

import io
import struct
import zipfile

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.ziplimits import (
    MAX_CENTRAL_DIRECTORY,
    MAX_MEMBERS,
    ArchiveRefused,
    check_members,
)
from tests.support.harness import ProxyHarness
from tests.support.uploads import crafted_wheel, metadata, twine_fields
from tests.support.wire import Answer

WHEEL = "corp_lib-1.0-py3-none-any.whl"


class WheelIdentityTests(ProxyHarness):
    def upload_members(self, *members: tuple[str, bytes]) -> Answer:
        dist = crafted_wheel(WHEEL, [("corp_lib/__init__.py", b""), *members])
        return self.upload(dist, fields=twine_fields(dist, "corp-lib", version="1.0"))

    def test_metadata_naming_another_project(self) -> None:
        """A wheel of corp-lib whose METADATA says Name: requests is refused."""
        response = self.upload_members(
            ("corp_lib-1.0.dist-info/METADATA", metadata("requests", "1.0"))
        )
        self.assertRefused(response, 400, "its METADATA says Name: requests")
        self.assertFalse(self.proxy.private.is_private("corp-lib"))

    def test_dist_info_of_another_project(self) -> None:
        """A wheel holding only requests-99.0.dist-info/ is refused."""
        response = self.upload_members(
            ("requests-99.0.dist-info/METADATA", metadata("requests", "99.0"))
        )
        self.assertRefused(response, 400, "not a valid wheel: no corp-lib-1.0.dist-info")

    def test_metadata_of_another_version(self) -> None:
        """METADATA must give the file name's version too."""
        response = self.upload_members(
            ("corp_lib-1.0.dist-info/METADATA", metadata("corp-lib", "2.0"))
        )
        self.assertRefused(response, 400, "its METADATA says Version: 2.0")

    def test_other_spellings_of_the_same_name_and_version(self) -> None:
        """``Corp.Lib-1.0.0.dist-info`` with ``Name: Corp_Lib`` is corp-lib 1.0."""
        data = metadata("Corp_Lib", "1.0.0")
        response = self.upload_members(("Corp.Lib-1.0.0.dist-info/METADATA", data))
        self.assertEqual(response.code, 200, response)
        _, served = self.get(f"/files/corp-lib/{WHEEL}.metadata")
        self.assertEqual(served, data)

    def test_too_many_members(self) -> None:
        """A wheel of more than 50,000 (empty) members is refused before zipfile reads it."""
        empty = ((f"m/{i}", b"") for i in range(MAX_MEMBERS + 1))
        dist = crafted_wheel(
            WHEEL, [("corp_lib-1.0.dist-info/METADATA", metadata("corp-lib", "1.0")), *empty]
        )
        response = self.upload(dist, fields=twine_fields(dist, "corp-lib", version="1.0"))
        self.assertRefused(response, 400, f"more than {MAX_MEMBERS} members")


def zip_of(count: int) -> bytes:
    """
    A zip archive of ``count`` empty members, with a comment.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.comment = b"a comment"
        for i in range(count):
            zf.writestr(f"{i}", b"")
    return buf.getvalue()


def as_zip64(data: bytes) -> bytes:
    """
    The same archive with its end records in ZIP64 form, as writers make
    them past 65,535 members: the classic record's fields say "see ZIP64".
    """
    end = data.rfind(b"PK\x05\x06")
    *_, count, size, offset, _comment = struct.unpack_from("<4sHHHHIIH", data, end)
    record = struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, end, 1)
    classic = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0
    )
    return data[:end] + record + locator + classic


class CheckMembersTests(SynchronousTestCase):
    def test_counts_members(self) -> None:
        """The members are counted, with ZIP64 end records too."""
        self.assertEqual(check_members(io.BytesIO(zip_of(3))), 3)
        self.assertEqual(check_members(io.BytesIO(zip_of(0))), 0)
        self.assertEqual(check_members(io.BytesIO(as_zip64(zip_of(7)))), 7)
        self.assertEqual(len(zipfile.ZipFile(io.BytesIO(as_zip64(zip_of(7)))).namelist()), 7)

    def test_bounds(self) -> None:
        """More members, or a larger directory, than allowed is refused."""
        with self.assertRaises(ArchiveRefused):
            check_members(io.BytesIO(as_zip64(zip_of(11))), max_members=10)
        with self.assertRaises(ArchiveRefused):
            check_members(io.BytesIO(zip_of(11)), max_size=100)

    def test_lying_count(self) -> None:
        """
        The count the end record states does not matter: members are
        counted as zipfile finds them, by walking the directory.
        """
        data = bytearray(zip_of(20))
        end = data.rfind(b"PK\x05\x06")
        struct.pack_into("<HH", data, end + 8, 1, 1)
        with self.assertRaises(ArchiveRefused):
            check_members(io.BytesIO(bytes(data)), max_members=10)

    def test_huge_directory(self) -> None:
        """An end record that announces a huge directory is refused at once."""
        data = bytearray(zip_of(1))
        end = data.rfind(b"PK\x05\x06")
        struct.pack_into("<I", data, end + 12, MAX_CENTRAL_DIRECTORY + 1)
        with self.assertRaises(ArchiveRefused):
            check_members(io.BytesIO(bytes(data)))

    def test_not_a_zip(self) -> None:
        """Junk and damaged archives are refused, never a crash."""
        damaged = as_zip64(zip_of(2))
        for junk in (b"", b"PK\x05\x06", b"x" * 100, damaged[:-30] + damaged[-22:]):
            with self.assertRaises(ArchiveRefused):
                check_members(io.BytesIO(junk))

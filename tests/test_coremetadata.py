"""
PEP 658 core metadata taken out of stored wheels whose upstream offers
none: stored beside the wheel, offered on the page with its hash from
then on, and served without asking the upstream.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

from packaging.utils import NormalizedName
from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.coremetadata import (
    WheelMetadataError,
    read_wheel_metadata,
    with_stored_metadata,
)
from proxypypi.simple.model import DistFile, ProjectPage
from proxypypi.simple.negotiate import JSON_V1
from proxypypi.testing import FakeIndex, make_sdist, make_wheel
from tests.support.harness import ProxyCase


class ReadTests(SynchronousTestCase):
    def test_read_and_refuse(self) -> None:
        """A wheel's METADATA, byte-exact; a zip without one is refused by name."""
        wheel = make_wheel("proto-beta", "1.0")
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(wheel.data)
        self.assertEqual(read_wheel_metadata(path, wheel.filename), wheel.metadata)
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("proto_beta/__init__.py", "")
        with self.assertRaises(WheelMetadataError) as e:
            read_wheel_metadata(path, wheel.filename)
        self.assertIn("no proto_beta-1.0.dist-info/METADATA", str(e.exception))
        with open(path, "wb") as f:
            f.write(b"not a zip")
        self.assertRaises(WheelMetadataError, read_wheel_metadata, path, wheel.filename)

    def test_decoration(self) -> None:
        """
        Only wheels the upstream offers no metadata for, and whose
        ``.metadata`` is stored, gain it; the page is otherwise unchanged.
        """
        project = self.mktemp()
        os.makedirs(project)
        with open(os.path.join(project, "b-1.0-py3-none-any.whl.metadata"), "wb") as f:
            f.write(b"Metadata-Version: 2.1\n")
        files = (
            DistFile("b-1.0-py3-none-any.whl", "u"),
            DistFile("b-2.0-py3-none-any.whl", "u"),
            DistFile("b-3.0-py3-none-any.whl", "u", core_metadata={"sha256": "ab" * 32}),
        )
        page = ProjectPage(NormalizedName("b"), files)
        offered = with_stored_metadata(page, project).files
        digest = hashlib.sha256(b"Metadata-Version: 2.1\n").hexdigest()
        self.assertEqual(offered[0].core_metadata, {"sha256": digest})
        self.assertEqual(offered[1:], files[1:])
        bare = ProjectPage(NormalizedName("b"), files[1:])
        self.assertIs(with_stored_metadata(bare, project), bare)


class ProxyTests(ProxyCase):
    """
    Through the proxy, against an upstream that offers no core metadata.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.index = FakeIndex(self.clock)
        self.wheel = make_wheel("proto-beta", "1.0")
        self.sdist = make_sdist("proto-beta", "0.9")
        self.index.add(self.wheel, offer_metadata=False)
        self.index.add(self.sdist)
        self.upstream = RequestTraversalAgent(self.index.resource())
        self.make_proxy()

    def settle(self) -> None:
        for _ in range(20):
            self.upstream.flush()
            self.clock.advance(0)

    def get(self, path: str, **headers: str) -> tuple[int, bytes]:
        d = self.client.get("http://proxy.test" + path, headers={k: [v] for k, v in
                            headers.items()}, allow_redirects=False)  # fmt: skip
        self.settle()
        response = self.successResultOf(d)
        body = self.client.content(response)
        self.settle()
        return response.code, self.successResultOf(body)

    def files(self) -> dict[str, dict[str, object]]:
        code, body = self.get("/simple/proto-beta/", accept=JSON_V1)
        self.assertEqual(code, 200)
        return {f["filename"]: f for f in json.loads(body)["files"]}

    def test_offered_once_stored(self) -> None:
        """
        Before the wheel is stored, its page offers no metadata; once it
        is, every form of the page offers it with its hash, and the
        ``.metadata`` is served from disk, byte-exact, without the upstream.
        """
        self.assertNotIn("core-metadata", self.files()[self.wheel.filename])
        code, _ = self.get("/simple/proto-beta/", accept="text/html")
        self.assertEqual(code, 200)
        code, body = self.get(f"/files/proto-beta/{self.wheel.filename}")
        self.assertEqual((code, body), (200, self.wheel.data))
        entry = self.files()[self.wheel.filename]
        self.assertEqual(entry["core-metadata"], {"sha256": self.wheel.metadata_sha256})
        self.assertNotIn("core-metadata", self.files()[self.sdist.filename])
        _, html = self.get("/simple/proto-beta/", accept="text/html")
        self.assertIn(f'data-core-metadata="sha256={self.wheel.metadata_sha256}"'.encode(), html)
        code, body = self.get(f"/files/proto-beta/{self.wheel.filename}.metadata")
        self.assertEqual((code, body), (200, self.wheel.metadata))
        self.assertEqual(self.index.count(".metadata"), 0)

    def test_kept_across_refresh_and_taken_out_again(self) -> None:
        """
        A refresh of the page (which still offers none upstream) keeps
        offering it; a ``.metadata`` that is gone (evicted) is taken out of
        the stored wheel again when asked for.
        """
        self.get(f"/files/proto-beta/{self.wheel.filename}")
        self.clock.advance(self.config.page_ttl + 1)
        self.files()  # stale: served, refreshed in the background
        self.settle()
        entry = self.files()[self.wheel.filename]
        self.assertEqual(entry["core-metadata"], {"sha256": self.wheel.metadata_sha256})
        self.assertGreaterEqual(self.index.count("/simple/proto-beta/"), 2)
        os.unlink(os.path.join(self.data, "files", "proto-beta", self.wheel.filename + ".metadata"))
        code, body = self.get(f"/files/proto-beta/{self.wheel.filename}.metadata")
        self.assertEqual((code, body), (200, self.wheel.metadata))
        self.assertEqual(self.index.count(".metadata"), 0)

"""
``proxypypi-admin``: verify, stats and prefetch against real storage
directories (built with real wheels and the page format the service
writes), and prefetch through the real service on loopback.
"""

from __future__ import annotations

import io
import json
import os
import sys

import pytest_twisted
from packaging.utils import NormalizedName
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.page import CachedPage
from proxypypi.cache.storage import Storage
from proxypypi.ops.admin.cli import main
from proxypypi.ops.admin.prefetch import Progress, pip_command
from proxypypi.private.model import PAGE_FILE, PrivateFile, PrivateProject
from proxypypi.simple.negotiate import JSON_V1
from proxypypi.simple.parse import parse_project_page
from proxypypi.testing import Dist, make_sdist, make_wheel
from tests.support.clients import ROOT
from tests.support.disk import sync_run
from tests.support.proxies import CHAIN_FILES, RunningProxy, Upstream


def page_json(project: str, entries: list[tuple[Dist, bool]]) -> bytes:
    """
    A PEP 691 page listing ``entries`` (each with or without its hash).
    """
    files = []
    for dist, with_hash in entries:
        files.append(
            {
                "filename": dist.filename,
                "url": "http://upstream.example/files/" + dist.filename,
                "hashes": {"sha256": dist.sha256} if with_hash else {},
                "core-metadata": (
                    {"sha256": dist.metadata_sha256} if dist.metadata is not None else False
                ),
            }
        )
    doc = {"meta": {"api-version": "1.1"}, "name": project, "files": files}
    return json.dumps(doc).encode()


def stored_page(project: str, entries: list[tuple[Dist, bool]]) -> bytes:
    """
    The page as the service stores it: parsed, then `CachedPage.to_bytes`.
    """
    source = f"http://upstream.example/simple/{project}/"
    page, _ = parse_project_page(
        page_json(project, entries), JSON_V1, source, NormalizedName(project)
    )
    return CachedPage(page, source, 1000.0).to_bytes()


class StorageFixture(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()
        Storage(self.root, sync_run).prepare()
        self.good = make_wheel("demo", "1.0")
        self.bad = make_wheel("demo", "2.0")
        self.nohash = make_sdist("demo", "3.0")
        self.write("pages/demo.json", stored_page("demo", [(self.good, True), (self.bad, True)]))
        # A later page write: the sdist is listed without a hash.
        page = stored_page("demo", [(self.good, True), (self.bad, True), (self.nohash, False)])
        self.write("pages/demo.json", page)
        self.write(f"files/demo/{self.good.filename}", self.good.data)
        assert self.good.metadata is not None
        self.write(f"files/demo/{self.good.filename}.metadata", self.good.metadata)
        self.write(f"files/demo/{self.bad.filename}", self.bad.data[:-10] + b"0123456789")
        self.write(f"files/demo/{self.nohash.filename}", self.nohash.data)
        self.secret = make_wheel("secret", "1.0")
        upload = PrivateFile(
            self.secret.filename,
            self.secret.sha256,
            len(self.secret.data),
            "2025-01-02T03:04:05Z",
            metadata_sha256=self.secret.metadata_sha256,
        )
        project = PrivateProject.build(NormalizedName("secret"), [upload])
        self.write(f"private/secret/{PAGE_FILE}", project.to_bytes())
        self.write(f"private/secret/{self.secret.filename}", self.secret.data)
        self.write(f"private/secret/{self.secret.filename}.metadata", self.secret.metadata or b"")

    def write(self, rel: str, data: bytes, age: float | None = None) -> str:
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        if age is not None:
            old = os.stat(path).st_mtime - age
            os.utime(path, (old, old))
        return path

    def exists(self, rel: str) -> bool:
        return os.path.lexists(os.path.join(self.root, rel))

    def admin(self, *argv: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err)
        return code, out.getvalue() + err.getvalue()

    def leftovers(self) -> None:
        self.write("files/demo/demo-4.0.tar.gz", b"")
        self.write("files/demo/notes.txt", b"hello")
        self.write("tmp/0123abcd.part", b"partial", age=7200)
        self.write("tmp/fresh.part", b"partial")
        self.write("pages/.77aa.part", b"{", age=7200)
        self.write("pages/broken.json", b'{"meta": {"api-ver')


class VerifyTests(StorageFixture):
    def test_mismatch_is_quarantined(self) -> None:
        """A corrupted file is reported, moved to quarantine/<project>/, and the exit code is 1."""
        code, out = self.admin("verify", "--storage", self.root)
        self.assertEqual(code, 1, out)
        bad = f"files/demo/{self.bad.filename}"
        line = next(x for x in out.splitlines() if x.startswith("MISMATCH"))
        self.assertIn(bad, line)
        self.assertIn(f"moved to quarantine/demo/{self.bad.filename}", line)
        self.assertFalse(self.exists(bad))
        self.assertTrue(self.exists(f"quarantine/demo/{self.bad.filename}"))
        self.assertTrue(self.exists(f"files/demo/{self.good.filename}"))
        self.assertIn(f"UNVERIFIED   files/demo/{self.nohash.filename}", out)
        self.assertIn("6 files checked, 4 verified; 1 mismatch; 1 unverified", out)
        # The second run finds nothing wrong any more.
        code, out = self.admin("verify", "--storage", self.root)
        self.assertEqual(code, 0, out)

    def test_private_files_checked_against_their_page(self) -> None:
        """A private upload is checked against its own page, and quarantined on a mismatch."""
        code, out = self.admin("verify", "--storage", self.root)
        self.assertNotIn("private/", out)
        path = f"private/secret/{self.secret.filename}"
        self.write(path, b"tampered")
        code, out = self.admin("verify", "--storage", self.root)
        self.assertIn(f"MISMATCH     {path}", out)
        self.assertTrue(self.exists(f"quarantine/private/secret/{self.secret.filename}"))

    def test_leftovers_reported_then_repaired(self) -> None:
        """Zero-byte, foreign and old temporary files are reported, and removed with --repair."""
        self.leftovers()
        code, out = self.admin("verify", "--storage", self.root)
        for kind, rel in (
            ("ZERO-BYTE", "files/demo/demo-4.0.tar.gz"),
            ("FOREIGN", "files/demo/notes.txt"),
            ("TEMPORARY", "tmp/0123abcd.part"),
            ("TEMPORARY", "pages/.77aa.part"),
            ("DAMAGED-PAGE", "pages/broken.json"),
        ):
            self.assertIn(f"{kind:<12} {rel}", out)
            self.assertTrue(self.exists(rel), rel)
        self.assertNotIn("fresh.part", out)
        self.assertIn("run with --repair", out)
        code, out = self.admin("verify", "--storage", self.root, "--repair")
        for rel in (
            "files/demo/demo-4.0.tar.gz",
            "files/demo/notes.txt",
            "tmp/0123abcd.part",
            "pages/.77aa.part",
            "pages/broken.json",
        ):
            self.assertFalse(self.exists(rel), rel)
        self.assertTrue(self.exists("tmp/fresh.part"))
        self.assertTrue(self.exists("quarantine/broken/broken.json"))
        code, out = self.admin("verify", "--storage", self.root)
        self.assertEqual([x.split()[0] for x in out.splitlines()[:-1]], ["UNVERIFIED"])

    def test_missing_storage(self) -> None:
        """A storage directory that does not exist is a usage error, exit code 2."""
        code, out = self.admin("verify", "--storage", os.path.join(self.root, "nope"))
        self.assertEqual(code, 2)
        self.assertIn("is not a directory", out)


class StatsTests(StorageFixture):
    def test_stats(self) -> None:
        """Projects, files and bytes, upstream and private apart, as text and JSON."""
        self.leftovers()
        code, out = self.admin("stats", "--storage", self.root, "--json")
        self.assertEqual(code, 0)
        s = json.loads(out)
        upstream = [self.good.data, self.good.metadata or b"", self.bad.data, self.nohash.data]
        self.assertEqual(s["projects"], {"upstream": 1, "private": 1})
        self.assertEqual(s["pages"], 2)
        self.assertEqual(s["files"]["upstream"]["count"], 6)
        self.assertEqual(s["files"]["upstream"]["metadata"], 1)
        self.assertEqual(s["files"]["upstream"]["bytes"], sum(map(len, upstream)) + 5)
        private = len(self.secret.data) + len(self.secret.metadata or b"")
        self.assertEqual(s["files"]["private"], {"count": 2, "bytes": private})
        self.assertEqual(s["temporary"]["count"], 2)
        code, out = self.admin("stats", "--storage", self.root)
        self.assertEqual(code, 0)
        self.assertIn("1 upstream, 1 private", out)
        self.assertIn("6 files (1 of them .metadata)", out)


class PrefetchUnitTests(SynchronousTestCase):
    def test_pip_command(self) -> None:
        """pip is isolated from user config, skips its cache, and trusts a plain-http proxy."""
        argv = pip_command("http://proxy.example:3141/simple/", "/d", ["r.txt"], ["a>=1"], ["-q"])
        self.assertEqual(argv[:3], [sys.executable, "-m", "pip"])
        for flag in ("--isolated", "--no-cache-dir", "--disable-pip-version-check"):
            self.assertIn(flag, argv)
        self.assertEqual(argv[argv.index("--trusted-host") + 1], "proxy.example")
        self.assertEqual(argv[-4:], ["--requirement", "r.txt", "a>=1", "-q"])
        https = pip_command("https://proxy.example/simple/", "/d", [], ["a"])
        self.assertNotIn("--trusted-host", https)

    def test_progress_lines(self) -> None:
        """Without a terminal, progress is one line per file pip saved."""
        err = io.StringIO()
        progress = Progress(err)
        for line in ("Collecting a", "  Downloading http://x/a-1.whl (1 kB)", "Saved /d/a-1.whl"):
            progress.feed(line + "\n")
        self.assertEqual((progress.collected, progress.saved), (1, ["a-1.whl"]))
        self.assertEqual(err.getvalue(), "[1] a-1.whl\n")

    def test_nothing_to_prefetch(self) -> None:
        """Without any requirement, prefetch refuses with exit code 2."""
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["prefetch"], out=out, err=err), 2)
        self.assertIn("nothing to prefetch", err.getvalue())


@pytest_twisted.ensureDeferred
async def test_prefetch_through_running_service(
    upstream: Upstream, proxy: RunningProxy, clean_env: dict[str, str], tmp_path: object
) -> None:
    """
    prefetch, run as its own process, makes pip fetch a requirements file
    and a plain requirement, dependencies included, through the service;
    every file lands in the service's storage.
    """
    requirements = os.path.join(str(tmp_path), "requirements.txt")
    with open(requirements, "w") as f:
        f.write("proto-alpha\n")
    argv = ["-m", "proxypypi.ops.admin", "prefetch", "-r", requirements, "proto-gamma"]
    argv += ["--index-url", proxy.simple]
    env = {**clean_env, "PYTHONPATH": ROOT}
    out, err, code = await getProcessOutputAndValue(sys.executable, argv, env=env, reactor=reactor)
    text = (out + err).decode()
    assert code == 0, text
    assert "prefetched 3 files" in out.decode(), text
    stored = set()
    for _dirpath, _dirs, names in os.walk(os.path.join(proxy.storage, "files")):
        stored.update(names)
    for name in CHAIN_FILES:
        assert name in stored, (name, sorted(stored))

"""
``proxypypi-admin policy explain``: each file of a stored page, served or
withheld and why, under the settings given.
"""

from __future__ import annotations

import io
import os
import time

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.cache.page import CachedPage
from proxypypi.ops.admin.cli import main
from proxypypi.policy.cooldown import iso
from proxypypi.simple.model import DistFile, ProjectPage


class ExplainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "pages"))
        now = time.time()
        files = tuple(
            DistFile(f"flask-{v}-py3-none-any.whl", f"http://up.example/flask-{v}.whl",
                     {"sha256": "0" * 64}, upload_time=iso(now - days * 86400))
            for v, days in (("3.0", 30), ("3.1", 20), ("3.2", 1))
        )  # fmt: skip
        page = CachedPage(ProjectPage("flask", files), "http://up.example/simple/", now)
        with open(os.path.join(self.root, "pages", "flask.json"), "wb") as f:
            f.write(page.to_bytes())
        self.deny = os.path.abspath(self.mktemp())
        with open(self.deny, "w") as f:
            f.write("flask==3.1  # broken release\n")

    def run_admin(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["policy", "explain", *argv, "--storage", self.root], out, err)
        return code, out.getvalue(), err.getvalue()

    def test_every_file_and_why(self) -> None:
        code, out, _ = self.run_admin("Flask", "--cooldown", "7d", "--deny", self.deny)
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertIn("policy: cooldown 7 d 0 h", lines[0])
        self.assertEqual(lines[1], "served    flask-3.0-py3-none-any.whl")
        self.assertTrue(lines[2].startswith("withheld  flask-3.1-py3-none-any.whl: "))
        self.assertIn("line 1 (flask==3.1): broken release", lines[2])
        self.assertIn("held back by the cooldown", lines[3])

    def test_one_version_from_the_config_file(self) -> None:
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write('cooldown = "7d"\ncooldown-exempt = ["flask==3.2"]\n')
        _, out, _ = self.run_admin("flask", "3.2", "--config", config)
        self.assertEqual(out.splitlines()[1:], ["served    flask-3.2-py3-none-any.whl"])

    def test_refusals(self) -> None:
        """Bad rules, an unknown project: exit 2 with the reason."""
        with open(self.deny, "w") as f:
            f.write("flask==  # half\n")
        code, _, err = self.run_admin("flask", "--deny", self.deny)
        self.assertEqual(code, 2)
        self.assertIn("line 1", err)
        code, _, err = self.run_admin("nothing-here")
        self.assertEqual(code, 2)
        self.assertIn("no page of nothing-here is stored", err)

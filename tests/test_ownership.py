"""
Who may change a private project (issue 14, item 10): its owners, recorded
with the project on disk, and the admins; anyone else gets 403.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.task import Clock

from proxypypi.config.settings import build_config
from proxypypi.private.store import PrivateStore
from proxypypi.service.tap import Options
from proxypypi.testing import make_sdist, make_wheel
from tests.support.disk import sync_run
from tests.support.harness import ProxyHarness
from tests.support.wire import Answer


class OwnershipTests(ProxyHarness):
    def setUp(self) -> None:
        super().setUp()
        self.wheel = make_wheel("corp-lib", "1.0")
        self.assertEqual(self.upload(self.wheel).code, 200)  # alice creates corp-lib

    def api(self, method: str, path: str, body: Any = None, user: str = "bob") -> Answer:
        password = {"alice": "secret", "bob": "hunter2"}[user]
        raw = json.dumps(body).encode() if body is not None else b""
        return self.raw(
            raw,
            method=method,
            path="/api/private/corp-lib" + path,
            auth=f"Basic {user}:{password}",
            content_type="application/json" if raw else None,
        )

    def test_others_get_403(self) -> None:
        """
        Bob may not upload to alice's project, yank, delete or release it,
        nor make himself an owner; nothing changes.
        """
        sdist = make_sdist("corp-lib", "1.0")
        self.assertRefused(self.upload(sdist, auth="Basic bob:hunter2"), 403, "belongs to alice")
        wheel = self.wheel.filename
        for method, path, body in [
            ("POST", f"/{wheel}/yank", None),
            ("DELETE", f"/{wheel}", None),
            ("DELETE", "", None),
            ("PUT", "/owners", {"owners": ["bob"]}),
        ]:
            self.assertRefused(self.api(method, path, body), 403, "belongs to alice")
        listing = json.loads(self.api("GET", "").body)
        self.assertEqual(listing["owners"], ["alice"])
        self.assertEqual([f["yanked"] for f in listing["files"]], [False])

    def test_owners_add_others(self) -> None:
        """An owner adds bob; bob may then upload, and remove alice."""
        answer = self.api("PUT", "/owners", {"owners": ["alice", "bob"]}, user="alice")
        self.assertEqual(json.loads(answer.body)["owners"], ["alice", "bob"])
        sdist = make_sdist("corp-lib", "1.0")
        self.assertEqual(self.upload(sdist, auth="Basic bob:hunter2").code, 200)
        self.assertEqual(self.api("PUT", "/owners", {"owners": ["bob"]}).code, 200)
        self.assertRefused(
            self.api("POST", f"/{self.wheel.filename}/yank", user="alice"), 403, "belongs to bob"
        )

    def test_owner_lists_are_checked(self) -> None:
        """Owners are a non-empty list of user names."""
        for body in ({"owners": []}, {"owners": "alice"}, {"owners": [1]}, [], {"x": 1}):
            self.assertRefused(self.api("PUT", "/owners", body, user="alice"), 400, "owners")

    def test_admins_may_do_anything(self) -> None:
        """--admin bob may yank alice's file and change its owners."""
        self.make_proxy(admins=("bob",))
        self.assertEqual(self.upload(self.wheel).code, 200)
        self.assertEqual(self.api("POST", f"/{self.wheel.filename}/yank").code, 200)
        self.assertEqual(self.api("PUT", "/owners", {"owners": ["alice", "bob"]}).code, 200)

    def test_owners_kept_on_disk(self) -> None:
        """
        The owners are in the project's page on disk and read back at
        start; a page written before owners were recorded belongs to the
        users who uploaded its files.
        """
        self.api("PUT", "/owners", {"owners": ["alice", "carol"]}, user="alice")
        page = os.path.join(self.data, "private", "corp-lib", ".page.json")
        with open(page) as f:
            doc = json.load(f)
        self.assertEqual(doc["owners"], ["alice", "carol"])
        root, tmp = os.path.join(self.data, "private"), self.proxy.storage.tmp_dir

        def owners() -> tuple[str, ...]:
            project = PrivateStore.open(root, tmp, sync_run, Clock()).project("corp-lib")
            assert project is not None
            return project.owners

        self.assertEqual(owners(), ("alice", "carol"))
        del doc["owners"]
        with open(page, "w") as f:
            json.dump(doc, f)
        self.assertEqual(owners(), ("alice",))

    def test_admin_option(self) -> None:
        """--admin is repeatable, and admin = [...] in TOML."""
        options = Options()
        options.parseOptions(
            ["--upstream", "http://127.0.0.1:1/simple/", "--storage", self.mktemp()]
            + ["--admin", "alice", "--admin", "bob"]
        )
        self.assertEqual(options["config_obj"].admins, ("alice", "bob"))
        config = build_config({"upstream": "http://127.0.0.1:1/simple/", "admin": ["carol"]})
        self.assertEqual(config.admins, ("carol",))

"""
The policy as clients meet it, through the production site in memory: pages
without what it withholds (and a header saying how many), withheld files
refused with 403 before any upstream fetch, rules reloaded without a
restart, files coming of age without waiting for the page to expire, and
what it holds back on ``/metrics`` and the status page.
"""

from __future__ import annotations

import json
import os
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from proxypypi.cache.storage import Storage
from proxypypi.config.policy import PolicyConfig
from proxypypi.policy.cooldown import iso
from proxypypi.service.compose import build_proxy, build_site
from proxypypi.testing import make_wheel
from tests.support.disk import sync_run
from tests.support.harness import PIP_ACCEPT, MeteredHarness, SiteAgent

DAY = 86400.0
WITHHELD = "x-proxypypi-policy-withheld"


class PolicyHarness(MeteredHarness):
    """
    The harness's upstream (``proto-alpha`` 1.0 a month old, 2.0 a day old,
    ``proto-beta`` 1.0 a day old) behind a proxy with a 7-day cooldown and
    a deny file (empty at first), pages fresh for a month.
    """

    def setUp(self) -> None:
        self.deny_path = os.path.abspath(self.mktemp())
        self.write_deny("# nothing denied yet\n")
        super().setUp()
        self.alpha1 = make_wheel("proto-alpha", "1.0")
        self.index.add(self.alpha1, upload_time=self.ago(30))
        self.index.add(self.upstream_alpha, upload_time=self.ago(1))
        self.index.add(self.beta, upload_time=self.ago(1))

    def policy(self, **changes: Any) -> PolicyConfig:
        return attrs.evolve(PolicyConfig(cooldown=7 * DAY, deny_file=self.deny_path), **changes)

    def make_proxy(self, storage_class: type[Storage] = Storage, **settings: Any) -> None:
        settings.setdefault("policy", self.policy())
        settings.setdefault("page_ttl", 30 * DAY)
        super().make_proxy(storage_class, **settings)

    def ago(self, days: float) -> str:
        return iso(self.clock.seconds() - days * DAY)

    def write_deny(self, text: str) -> None:
        with open(self.deny_path, "w") as f:
            f.write(text)

    def files(self, project: str) -> tuple[Any, list[str]]:
        response, body = self.get(f"/simple/{project}/", accept=PIP_ACCEPT)
        self.assertEqual(response.code, 200, body)
        return response, [f["filename"] for f in json.loads(body)["files"]]

    def withheld(self, response: Any) -> str:
        return str(response.headers.getRawHeaders(WITHHELD)[0])

    def fetches(self, filename: str) -> int:
        return self.index.count(f"/files/{filename}", "GET")


class CooldownTests(PolicyHarness):
    def test_newest_release_left_out_until_it_comes_of_age(self) -> None:
        """The day-old release is neither listed nor served; six days on it is, no restart."""
        response, files = self.files("proto-alpha")
        self.assertEqual(files, [self.alpha1.filename])
        self.assertEqual(self.withheld(response), "1")
        _, html = self.get("/simple/proto-alpha/")
        self.assertNotIn(self.upstream_alpha.filename.encode(), html)
        refused, body = self.get(self.file_path(self.upstream_alpha))
        self.assertEqual(refused.code, 403)
        self.assertIn("held back by the cooldown", body.decode())
        self.assertIn("available from " + iso(self.clock.seconds() + 6 * DAY), body.decode())
        self.assertEqual(self.fetches(self.upstream_alpha.filename), 0)

        pages_fetched = self.index.count("/simple/proto-alpha/")
        self.clock.advance(6 * DAY + 1)
        response, files = self.files("proto-alpha")
        self.assertEqual(files, [self.alpha1.filename, self.upstream_alpha.filename])
        self.assertEqual(self.withheld(response), "0")
        self.assertEqual(self.index.count("/simple/proto-alpha/"), pages_fetched)
        served, body = self.get(self.file_path(self.upstream_alpha))
        self.assertEqual((served.code, body), (200, self.upstream_alpha.data))

    def test_judged_again_in_the_background(self) -> None:
        """Coming of age is noticed without a request: the ledger empties."""
        self.files("proto-alpha")
        self.assertEqual(self.proxy.policy.ledger.by_reason()["cooldown"], 1)
        self.clock.advance(6 * DAY + 1)
        self.successResultOf(Deferred.fromCoroutine(self.proxy.pages.rejudge_due()))
        self.assertEqual(self.proxy.policy.ledger.by_reason()["cooldown"], 0)

    def test_page_left_empty_says_why(self) -> None:
        """Every file too young: a 404 naming the reason, never a 500."""
        response, body = self.get("/simple/proto-beta/", accept=PIP_ACCEPT)
        self.assertEqual(response.code, 404)
        self.assertIn("every file of proto-beta is held back by the policy (1 in cooldown)",
                      body.decode())  # fmt: skip
        self.assertEqual(self.withheld(response), "1")

    def test_private_uploads_are_not_held(self) -> None:
        """An upload made now is served at once."""
        self.assertEqual(self.upload_corp().code, 200)
        response, files = self.files("corp-lib")
        self.assertEqual(files, [self.corp.filename])
        self.assertEqual(self.withheld(response), "0")
        self.assertEqual(self.get(self.file_path(self.corp))[0].code, 200)


class DenyTests(PolicyHarness):
    def test_stored_file_denied_on_reload(self) -> None:
        """A file stored before is refused once a rule denies it; nothing is fetched."""
        self.files("proto-alpha")
        self.assertEqual(self.get(self.file_path(self.alpha1))[0].code, 200)
        self.write_deny("proto-alpha==1.0  # hijacked release\n")
        self.assertTrue(self.proxy.policy.files_changed())
        self.assertTrue(self.proxy.policy.reload("SIGHUP"))
        refused, body = self.get(self.file_path(self.alpha1))
        self.assertEqual(refused.code, 403)
        self.assertIn("line 1 (proto-alpha==1.0): hijacked release", body.decode())
        response, body = self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)
        self.assertEqual(response.code, 404)
        self.assertIn("(1 in cooldown, 1 denied)", body.decode())
        self.assertEqual(self.fetches(self.alpha1.filename), 1)

    def test_bad_rules_keep_the_rules_in_force(self) -> None:
        """A reload of a file with errors changes nothing."""
        self.write_deny("proto-alpha  # no\n")
        self.assertTrue(self.proxy.policy.reload("SIGHUP"))
        self.write_deny("proto-alpha  # no\nproto-beta>=  # broken\n")
        self.assertFalse(self.proxy.policy.reload("SIGHUP"))
        self.assertFalse(self.proxy.policy.files_changed())
        self.assertEqual(self.get(self.file_path(self.alpha1))[0].code, 403)

    def test_private_project_denied(self) -> None:
        """Deny rules apply to uploads too."""
        self.upload_corp()
        self.write_deny("corp-lib  # withdrawn\n")
        self.proxy.policy.reload("SIGHUP")
        response, body = self.get("/simple/corp-lib/", accept=PIP_ACCEPT)
        self.assertEqual(response.code, 404)
        self.assertIn("withdrawn", body.decode())
        self.assertEqual(self.get(self.file_path(self.corp))[0].code, 403)

    def test_restart_with_new_rules_renders_forms_again(self) -> None:
        """Forms on disk from before a restart are not served under new rules."""
        self.files("proto-alpha")
        self.write_deny("proto-alpha==1.0  # bad\n")
        self.config = attrs.evolve(self.config, policy=self.policy(cooldown=None))
        self.restart()
        response, files = self.files("proto-alpha")
        self.assertEqual(files, [self.upstream_alpha.filename])
        self.assertEqual(self.withheld(response), "1")

    def restart(self) -> None:
        """A new proxy on the same storage and configuration."""
        storage = Storage(self.config.storage, sync_run)
        self.proxy = build_proxy(self.config, self.clock, storage, lambda cfg: self.upstream)
        self.site = build_site(self.proxy)
        self.agent = SiteAgent(self.site)


class QuarantineTests(PolicyHarness):
    def test_quarantined_project(self) -> None:
        """No file served, the page keeps its status; archived passes."""
        self.index.set_status("proto-alpha", "quarantined", "malware found")
        response, body = self.get("/simple/proto-alpha/", accept=PIP_ACCEPT)
        page = json.loads(body)
        self.assertEqual((page["files"], page["project-status"]["status"]), ([], "quarantined"))
        refused, body = self.get(self.file_path(self.alpha1))
        self.assertEqual(refused.code, 403)
        self.assertIn("quarantined upstream (PEP 792): malware found", body.decode())


class ReportOnlyTests(PolicyHarness):
    settings = {"page_ttl": 30 * DAY}

    def make_proxy(self, storage_class: type[Storage] = Storage, **settings: Any) -> None:
        settings["policy"] = self.policy(report_only=True)
        super().make_proxy(storage_class, **settings)

    def test_everything_served_and_counted(self) -> None:
        response, files = self.files("proto-alpha")
        self.assertEqual(len(files), 2)
        self.assertEqual(self.withheld(response), "0")
        self.assertEqual(response.headers.getRawHeaders(WITHHELD.replace("withheld",
                         "would-withhold"))[0], "1")  # fmt: skip
        self.assertEqual(self.get(self.file_path(self.upstream_alpha))[0].code, 200)
        self.assertEqual(self.proxy.policy.ledger.refused["cooldown"], 1)


class VisibleTests(PolicyHarness):
    def test_metrics_and_status(self) -> None:
        """What is held back, by reason, and the next release to pass."""
        self.files("proto-alpha")
        self.get(self.file_path(self.upstream_alpha))
        samples = self.scrape()
        self.assertEqual(
            samples[("proxypypi_policy_withheld_files", (("reason", "cooldown"),))], 1
        )
        self.assertEqual(
            samples[("proxypypi_policy_refused_requests_total", (("reason", "cooldown"),))], 1
        )
        _, page = self.get("/")
        text = page.decode()
        self.assertIn("cooldown 7 d 0 h", text)
        self.assertIn('<data id="held" value="1">1</data> file held back now', text)
        self.assertIn("Next release to pass: <span id=\"next-release\">proto-alpha 2.0 in 6 d",
                      text)  # fmt: skip

"""
What the policy withholds of a page and of a file, and why: the cooldown,
deny and allow rules, quarantine, report-only, all as plain functions of
the page, the rules and the moment.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.config.policy import PolicyConfig
from proxypypi.policy.cooldown import Cooldown, iso, upload_seconds
from proxypypi.policy.decision import Rules
from proxypypi.policy.rules import parse_rules
from proxypypi.simple.model import DistFile, ProjectPage, ProjectStatus

NOW = 1_750_000_000.0
DAY = 86400.0
WEEK = Cooldown.of(PolicyConfig(cooldown=7 * DAY))


def wheel(version: str, age_days: float | None, url: str = "http://up.example/f") -> DistFile:
    when = None if age_days is None else iso(NOW - age_days * DAY)
    return DistFile(f"flask-{version}-py3-none-any.whl", url, {"sha256": "0" * 64},
                    upload_time=when)  # fmt: skip


def page(*files: DistFile, status: ProjectStatus | None = None) -> ProjectPage:
    return ProjectPage("flask", files, versions=("2.0", "3.0", "3.1"), status=status)


def served(rules: Rules, p: ProjectPage) -> list[str]:
    return [f.filename for f in rules.judge(p, NOW).page.files]


class UploadTimeTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """ISO 8601 with Z, an offset, or none (UTC); junk is unknown."""
        self.assertEqual(upload_seconds("2025-06-15T15:06:40Z"), 1_750_000_000.0)
        self.assertEqual(upload_seconds("2025-06-15T17:06:40+02:00"), 1_750_000_000.0)
        self.assertEqual(upload_seconds("2025-06-15T15:06:40.000000"), 1_750_000_000.0)
        for junk in (None, "", "yesterday", "2025-13-40T00:00:00Z", "9" * 100):
            self.assertIsNone(upload_seconds(junk))


class CooldownTests(SynchronousTestCase):
    def test_young_files_are_left_out(self) -> None:
        """The newest release is not served yet; its version goes from versions."""
        decision = Rules(1, WEEK).judge(page(wheel("2.0", 30), wheel("3.0", 20),
                                             wheel("3.1", 1)), NOW)  # fmt: skip
        self.assertEqual([f.filename for f in decision.page.files],
                         ["flask-2.0-py3-none-any.whl", "flask-3.0-py3-none-any.whl"])  # fmt: skip
        self.assertEqual(decision.page.versions, ("2.0", "3.0"))
        held = decision.held
        self.assertEqual((held.total, held.counts[0], held.withheld), (1, 1, 1))
        self.assertEqual(held.valid_until, NOW + 6 * DAY)
        self.assertEqual(held.next_release, (NOW + 6 * DAY, "flask 3.1"))
        _, why = decision.withheld[0]
        self.assertIn("available from " + iso(NOW + 6 * DAY), why.message)
        self.assertIn("(in 6 d 0 h)", why.message)

    def test_coming_of_age(self) -> None:
        """Six days on, the file is served and nothing is held."""
        later = Rules(1, WEEK).judge(page(wheel("3.1", 1)), NOW + 6 * DAY)
        self.assertEqual(len(later.page.files), 1)
        self.assertEqual(later.held.total, 0)

    def test_unknown_and_future_times(self) -> None:
        """No upload time, or one in the future: held by default, served with allow."""
        files = (wheel("2.0", None), wheel("3.0", -2))
        denied = Rules(1, WEEK).judge(page(*files), NOW)
        self.assertEqual(denied.page.files, ())
        self.assertEqual(denied.unknown_times, 2)
        self.assertEqual(denied.held.valid_until, NOW + 2 * DAY)
        allowing = Cooldown.of(PolicyConfig(cooldown=7 * DAY, cooldown_unknown="allow"))
        self.assertEqual(len(Rules(1, allowing).judge(page(*files), NOW).page.files), 2)

    def test_exemptions_and_own_durations(self) -> None:
        """A project, one release, or a shorter cooldown of its own."""
        young = page(wheel("3.0", 3), wheel("3.1", 1))
        for exempt in (("flask",), ("flask==3.1", "flask==3.0")):
            cooldown = Cooldown.of(PolicyConfig(cooldown=7 * DAY, cooldown_exempt=exempt))
            self.assertEqual(len(served(Rules(1, cooldown), young)), 2)
        own = Cooldown.of(PolicyConfig(cooldown=7 * DAY, cooldown_projects=(("Flask", 2 * DAY),)))
        self.assertEqual(served(Rules(1, own), young), ["flask-3.0-py3-none-any.whl"])

    def test_private_uploads_are_never_held(self) -> None:
        """A file with no upstream URL is one of ours."""
        self.assertEqual(len(served(Rules(1, WEEK), page(wheel("3.1", 0, url="")))), 1)

    def test_everything_too_young(self) -> None:
        """A page left without files says why, naming the first to come of age."""
        held = Rules(1, WEEK).judge(page(wheel("3.0", 3), wheel("3.1", 1)), NOW).held
        assert held.empty_reason is not None
        self.assertIn("every file of flask is held back by the policy (2 in cooldown)",
                      held.empty_reason)  # fmt: skip
        self.assertIn("flask-3.0-py3-none-any.whl", held.empty_reason)


class RuleDecisionTests(SynchronousTestCase):
    def test_deny(self) -> None:
        deny = parse_rules("flask==3.0  # broken\n", "deny.txt", need_reason=True)
        decision = Rules(1, deny=deny).judge(page(wheel("2.0", 30), wheel("3.0", 30)), NOW)
        self.assertEqual(len(decision.page.files), 1)
        self.assertEqual(decision.held.counts, (0, 1, 0, 0))
        self.assertEqual(decision.held.valid_until, float("inf"))
        self.assertIn("denied by deny.txt line 1 (flask==3.0): broken",
                      decision.withheld[0][1].message)  # fmt: skip

    def test_allow_list(self) -> None:
        """Only what the list names; first reason wins (deny before allow)."""
        allow = parse_rules("flask>=3\n", "allow.txt", need_reason=False)
        deny = parse_rules("flask==3.1  # no\n", "deny.txt", need_reason=True)
        rules = Rules(1, deny=deny, allow=allow)
        decision = rules.judge(page(wheel("2.0", 30), wheel("3.0", 30), wheel("3.1", 30)), NOW)
        self.assertEqual(served(rules, decision.page), ["flask-3.0-py3-none-any.whl"])
        self.assertEqual(decision.held.counts, (0, 1, 1, 0))

    def test_quarantine(self) -> None:
        """Quarantined upstream: nothing served, the page keeps its status."""
        quarantined = page(wheel("2.0", 30), status=ProjectStatus("quarantined", "malware"))
        decision = Rules(1, WEEK).judge(quarantined, NOW)
        self.assertEqual(decision.page.files, ())
        self.assertEqual(decision.page.status, ProjectStatus("quarantined", "malware"))
        self.assertEqual(decision.held.counts, (0, 0, 0, 1))
        self.assertIsNone(decision.held.empty_reason)
        for status in ("archived", "deprecated"):
            passing = page(wheel("2.0", 30), status=ProjectStatus(status))
            self.assertEqual(len(served(Rules(1, WEEK), passing)), 1)

    def test_report_only(self) -> None:
        """Everything served, what would be held counted, forms untouched."""
        p = page(wheel("3.1", 1))
        decision = Rules(1, WEEK, report_only=True).judge(p, NOW)
        self.assertIs(decision.page, p)
        self.assertEqual((decision.held.total, decision.held.withheld), (1, 0))
        self.assertEqual(decision.held.digest, "")

    def test_digest_follows_what_is_left_out(self) -> None:
        """The same files left out give the same digest, whatever the rules."""
        deny = parse_rules("flask==3.1  # no\n", "deny.txt", need_reason=True)
        p = page(wheel("3.0", 30), wheel("3.1", 1))
        by_cooldown = Rules(1, WEEK).judge(p, NOW).held.digest
        self.assertEqual(Rules(2, deny=deny).judge(p, NOW).held.digest, by_cooldown)
        self.assertNotEqual(by_cooldown, "")
        self.assertEqual(Rules(3).judge(p, NOW).held.digest, "")

    def test_same_as(self) -> None:
        deny = parse_rules("flask  # no\n", "deny.txt", need_reason=True)
        again = parse_rules("flask  # no\n", "deny.txt", need_reason=True)
        self.assertTrue(Rules(1, WEEK, deny).same_as(Rules(2, WEEK, again)))
        self.assertFalse(Rules(1, WEEK, deny).same_as(Rules(2, WEEK)))

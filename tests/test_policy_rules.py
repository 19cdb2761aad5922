"""
The policy's settings and rules files, read as people write them, and
refused, line by line, when they are wrong.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.config.policy import PolicyConfig, parse_exemption, policy_config
from proxypypi.config.settings import build_config
from proxypypi.config.urls import ConfigError
from proxypypi.durations import human_duration, parse_duration
from proxypypi.policy.rules import RulesError, load_rules, parse_rules
from proxypypi.policy.state import Policy
from proxypypi.simple.model import DistFile

UPSTREAM = "http://upstream.example/simple/"
DIGEST = "ab" * 32


def dist(filename: str, sha256: str = "00" * 32) -> DistFile:
    return DistFile(filename, "http://upstream.example/files/" + filename, {"sha256": sha256})


class DurationTests(SynchronousTestCase):
    def test_units(self) -> None:
        """Days, hours, minutes, combinations and bare seconds."""
        self.assertEqual(parse_duration("7d"), 7 * 86400)
        self.assertEqual(parse_duration("36h"), 36 * 3600)
        self.assertEqual(parse_duration("90m"), 5400)
        self.assertEqual(parse_duration("1d12h"), 36 * 3600)
        self.assertEqual(parse_duration("3600"), 3600)
        self.assertEqual(parse_duration(0), 0)

    def test_junk_refused(self) -> None:
        """Anything else names the forms accepted."""
        for junk in ("", "7 days", "-1d", "1y", "d", "nan", True):
            with self.assertRaises(ValueError) as caught:
                parse_duration(junk)
            self.assertIn("7d, 36h, 90m", str(caught.exception))

    def test_human(self) -> None:
        self.assertEqual(human_duration(2 * 86400 + 4 * 3600 + 5), "2 d 4 h")


class SettingsTests(SynchronousTestCase):
    def test_exemptions(self) -> None:
        """NAME and NAME==VERSION, normalized; junk names the forms."""
        self.assertEqual(parse_exemption("Corp_Lib"), ("corp-lib", None))
        self.assertEqual(parse_exemption("django==5.2.01"), ("django", "5.2.1"))
        for junk in ("django==not a version", "bad name!", "x>=1"):
            with self.assertRaises(ConfigError):
                parse_exemption(junk)

    def test_toml_table_of_exemptions(self) -> None:
        """In TOML, a table gives exemptions (true, "0") and projects' own cooldowns."""
        config = policy_config(
            {
                "cooldown": "7d",
                "cooldown-exempt": {"corp-lib": True, "django==5.2.1": True, "requests": "2d",
                                    "flask": "0"},
            }
        )  # fmt: skip
        self.assertEqual(config.cooldown, 7 * 86400)
        self.assertEqual(set(config.cooldown_exempt), {"corp-lib", "django==5.2.1", "flask"})
        self.assertEqual(config.cooldown_projects, (("requests", 2 * 86400),))

    def test_a_release_gets_no_cooldown_of_its_own(self) -> None:
        with self.assertRaises(ConfigError):
            policy_config({"cooldown-exempt": {"django==5.2.1": "1d"}})

    def test_bad_values_name_the_setting(self) -> None:
        """An unparseable duration or choice stops the start, naming the key."""
        cases = {
            "cooldown": ("a week", "cooldown"),
            "cooldown-unknown": ("maybe", "cooldown-unknown must be allow or deny"),
            "deny": ("", "deny must be the path"),
        }
        for key, (value, fragment) in cases.items():
            with self.assertRaises(ConfigError) as caught:
                build_config({"upstream": UPSTREAM, key: value})
            self.assertIn(fragment, str(caught.exception))

    def test_config_carries_the_policy(self) -> None:
        config = build_config(
            {"upstream": UPSTREAM, "cooldown": "36h", "cooldown-unknown": "allow",
             "cooldown-exempt": ["corp-lib"], "policy-report-only": True}
        )  # fmt: skip
        self.assertEqual(
            config.policy,
            PolicyConfig(36 * 3600, "allow", ("corp-lib",), report_only=True),
        )
        self.assertTrue(config.policy.active)
        self.assertFalse(build_config({"upstream": UPSTREAM}).policy.active)


class RulesTests(SynchronousTestCase):
    def test_every_kind(self) -> None:
        """A name, a requirement, a file name and a digest, each with its reason."""
        rules = parse_rules(
            "# a comment\n\n"
            "Evil_Package   # typosquat\n"
            "requests>=2.99,<3  # hijacked\n"
            "flask-3.2.0-py3-none-any.whl # broken wheel\n"
            f"sha256:{DIGEST.upper()}  # malware\n",
            "/etc/deny.txt",
            need_reason=True,
        )
        self.assertEqual(len(rules.rules), 4)
        evil = rules.match("evil-package", dist("evil_package-1.0-py3-none-any.whl"))
        assert evil is not None
        self.assertEqual(evil.describe(), "deny.txt line 3 (Evil_Package): typosquat")
        self.assertIsNotNone(rules.match("requests", dist("requests-2.99.0-py3-none-any.whl")))
        self.assertIsNotNone(rules.match("requests", dist("requests-2.99.1rc1.tar.gz")))
        self.assertIsNone(rules.match("requests", dist("requests-3.0.0-py3-none-any.whl")))
        self.assertIsNone(rules.match("requests", dist("requests-2.32.3-py3-none-any.whl")))
        self.assertIsNotNone(rules.match("flask", dist("flask-3.2.0-py3-none-any.whl")))
        self.assertIsNone(rules.match("flask", dist("flask-3.2.0.tar.gz")))
        digest = rules.match("other", dist("other-1.0.tar.gz", DIGEST))
        assert digest is not None
        self.assertEqual(digest.reason, "malware")

    def test_every_bad_line_is_named(self) -> None:
        """A file with errors is refused whole, each bad line by its number."""
        with self.assertRaises(RulesError) as caught:
            parse_rules(
                "good  # fine\nrequests>=  # half a specifier\nno-reason\n"
                "sha256:1234  # short\nx; python_version<'3'  # marker\n",
                "deny.txt",
                need_reason=True,
            )
        message = str(caught.exception)
        for line in (2, 3, 4, 5):
            self.assertIn(f"deny.txt line {line}:", message)
        self.assertNotIn("line 1:", message)

    def test_allow_rules_need_no_reason(self) -> None:
        rules = parse_rules("flask\nrequests>=2\n", "allow.txt", need_reason=False)
        self.assertEqual(rules.projects(), frozenset({"flask", "requests"}))

    def test_toml_rules(self) -> None:
        """The same rules as [[rule]] tables; errors name the table."""
        path = os.path.join(self.mktemp() + ".toml")
        with open(path, "w") as f:
            f.write('[[rule]]\nmatch = "requests>=2.99"\nreason = "hijacked"\n')
        rules = load_rules(path, need_reason=True)
        self.assertEqual(rules.rules[0].where, f"{os.path.basename(path)} rule 1")
        with open(path, "w") as f:
            f.write('[[rule]]\nmatch = "requests>=2.99"\n[[rule]]\nmatch = 3\n')
        with self.assertRaises(RulesError) as caught:
            load_rules(path, need_reason=True)
        self.assertIn("rule 1: 'requests>=2.99' has no reason", str(caught.exception))
        self.assertIn("rule 2:", str(caught.exception))

    def test_unreadable_and_junk_files(self) -> None:
        """Missing, binary or not UTF-8: refused with the path, never a crash."""
        with self.assertRaises(RulesError):
            load_rules(self.mktemp(), need_reason=True)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xff\xfe\x00junk")
        with self.assertRaises(RulesError) as caught:
            load_rules(path, need_reason=True)
        self.assertIn("not UTF-8", str(caught.exception))


class StartTests(SynchronousTestCase):
    def test_bad_rules_stop_the_start(self) -> None:
        """The service does not start on a rules file with errors; the message has the line."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("fine  # ok\nrequests>=2.99,<  # broken\n")
        with self.assertRaises(ConfigError) as caught:
            Policy.start(PolicyConfig(deny_file=path), Clock())
        self.assertIn("line 2:", str(caught.exception))

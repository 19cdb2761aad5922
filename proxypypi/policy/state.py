# -*- test-case-name: tests.test_policy_service -*-
"""
The policy in force, and its changes: the settings and the rules files
read at start (a bad file stops the start, naming its lines), then again
on ``SIGHUP`` and whenever a rules file changes.  A reload that fails is
logged and the rules in force stay: a typo must never leave the proxy
without its policy, nor with half of it.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from proxypypi.config.policy import PolicyConfig
from proxypypi.config.urls import ConfigError
from proxypypi.durations import human_duration
from proxypypi.policy.cooldown import Cooldown
from proxypypi.policy.decision import Rules
from proxypypi.policy.ledger import Ledger
from proxypypi.policy.rules import RulesError, RuleSet, file_signature, load_rules


def build_rules(config: PolicyConfig, generation: int) -> Rules:
    """
    The rules ``config`` asks for, its files read now.

    :raises RulesError: when a rules file is unreadable or has bad rules.
    """
    deny: RuleSet | None = None
    allow: RuleSet | None = None
    if config.deny_file is not None:
        deny = load_rules(config.deny_file, need_reason=True)
    if config.allow_file is not None:
        allow = load_rules(config.allow_file, need_reason=False)
    return Rules(generation, Cooldown.of(config), deny, allow, config.report_only)


def describe(rules: Rules) -> str:
    """
    The policy in one line, for the log and the status page.
    """
    parts = []
    c = rules.cooldown
    if c.active:
        text = f"cooldown {human_duration(c.default)}" if c.default else "no default cooldown"
        extra = len(c.exempt_projects) + len(c.exempt_releases)
        if extra:
            text += f" ({extra} exempt)"
        if c.durations:
            text += f" ({len(c.durations)} projects with their own)"
        text += ", files of unknown age " + ("held back" if c.unknown_denied else "served")
        parts.append(text)
    if rules.deny is not None:
        parts.append(f"{len(rules.deny.rules)} deny rules ({rules.deny.path})")
    if rules.allow is not None:
        parts.append(f"allow list of {len(rules.allow.rules)} rules ({rules.allow.path})")
    if not parts:
        return "no policy"
    return "; ".join(parts) + ("; report only" if rules.report_only else "")


@attrs.define(eq=False)
class Policy:
    """
    The rules in force (`rules`, a snapshot replaced whole) and what they
    hold back now (`ledger`).

    :ivar reread: the settings as they are now (the ``--config`` file read
        again, under the same command line); ``None``: only the rules files
        are read again.
    """

    config: PolicyConfig
    clock: IReactorTime
    rules: Rules
    reread: Callable[[], PolicyConfig] | None = None
    ledger: Ledger = attrs.field(factory=Ledger)
    log = Logger()
    _signatures: dict[str, tuple[int, int, int] | None] = attrs.field(factory=dict)

    @classmethod
    def start(
        cls,
        config: PolicyConfig,
        clock: IReactorTime,
        reread: Callable[[], PolicyConfig] | None = None,
    ) -> Policy:
        """
        The policy of ``config``, its files read now.

        :raises ConfigError: naming the file and its bad lines.
        """
        try:
            rules = build_rules(config, 1)
        except RulesError as e:
            raise ConfigError(str(e)) from e
        policy = cls(config, clock, rules, reread)
        policy._signatures = _signatures_of(config)
        if rules.active:
            cls.log.info("  policy: {policy}", policy=describe(rules))
        return policy

    @property
    def generation(self) -> int:
        return self.rules.generation

    def files_changed(self) -> bool:
        """
        Whether a rules file changed since it was read (a ``stat`` each).
        """
        return _signatures_of(self.config) != self._signatures

    def reload(self, why: str) -> bool:
        """
        Read the settings (when they can be) and the rules files again.  A
        failure is logged and changes nothing.

        :returns: whether the rules changed.
        """
        config = self.config
        try:
            if self.reread is not None:
                config = self.reread()
            signatures = _signatures_of(config)
            rules = build_rules(config, self.generation + 1)
        except (ConfigError, RulesError, ValueError) as e:
            # Not tried again until a file changes again.
            self._signatures = _signatures_of(self.config)
            self.log.error(
                "policy not reloaded ({why}): {error}; the rules in force stay", why=why, error=e
            )
            return False
        self.config, self._signatures = config, signatures
        if rules.same_as(self.rules):
            self.log.info("policy reloaded ({why}), unchanged: {policy}", why=why,
                          policy=describe(rules))  # fmt: skip
            return False
        self.rules = rules
        self.log.info("policy reloaded ({why}): {policy}", why=why, policy=describe(rules))
        return True


def _signatures_of(config: PolicyConfig) -> dict[str, tuple[int, int, int] | None]:
    """
    What tells each rules file of ``config`` changed.
    """
    paths = [p for p in (config.deny_file, config.allow_file) if p is not None]
    return {path: file_signature(path) for path in paths}

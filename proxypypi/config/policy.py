# -*- test-case-name: tests.test_policy_rules -*-
"""
The supply-chain policy's settings (``--cooldown``, ``--cooldown-unknown``,
``--cooldown-exempt``, ``--deny``, ``--allow``, ``--policy-report-only``),
read and validated; the rules themselves, and what they withhold, are
`proxypypi.policy`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from packaging.utils import NormalizedName
from packaging.version import InvalidVersion, Version

from proxypypi.config.urls import ConfigError
from proxypypi.durations import parse_duration
from proxypypi.names import normalize

#: The settings of the policy: TOML keys, and the options' names.
POLICY_KEYS = (
    "cooldown",
    "cooldown-unknown",
    "cooldown-exempt",
    "deny",
    "allow",
    "policy-report-only",
)


def parse_exemption(text: str) -> tuple[NormalizedName, str | None]:
    """
    One ``--cooldown-exempt`` value: ``NAME`` (every release of a project)
    or ``NAME==VERSION`` (one release), the version in its normal form.

    :raises ConfigError: naming the value and the forms accepted.
    """
    name_text, eq, version_text = text.partition("==")
    name = normalize(name_text.strip())
    version: str | None = None
    if eq:
        try:
            version = str(Version(version_text.strip()))
        except InvalidVersion:
            name = None
    if name is None:
        raise ConfigError(
            f"cooldown exemption {text!r} is neither NAME nor NAME==VERSION "
            "(e.g. corp-lib, or django==5.2.1)"
        )
    return name, version


@attrs.frozen
class PolicyConfig:
    """
    What the operator asked the policy for.

    :ivar cooldown: seconds a file uploaded upstream is held back; ``None``
        (or 0): no cooldown.
    :ivar cooldown_unknown: ``deny`` holds back files whose upload time is
        unknown while a cooldown applies to them; ``allow`` serves them.
    :ivar cooldown_exempt: ``NAME`` or ``NAME==VERSION`` never held by the
        cooldown.
    :ivar cooldown_projects: a cooldown of their own for some projects
        (from the TOML table form of ``cooldown-exempt``).
    :ivar deny_file: the deny rules' file.
    :ivar allow_file: the allow rules' file; when given, only what it
        names is served.
    :ivar report_only: serve everything; log and count what would be held.
    """

    cooldown: float | None = None
    cooldown_unknown: str = attrs.field(
        default="deny", validator=attrs.validators.in_(("allow", "deny"))
    )
    cooldown_exempt: tuple[str, ...] = ()
    cooldown_projects: tuple[tuple[str, float], ...] = ()
    deny_file: str | None = None
    allow_file: str | None = None
    report_only: bool = False

    def __attrs_post_init__(self) -> None:
        for text in self.cooldown_exempt:
            parse_exemption(text)
        for name, _ in self.cooldown_projects:
            if normalize(name) is None:
                raise ConfigError(f"cooldown-exempt: {name!r} is not a project name")

    @property
    def active(self) -> bool:
        """
        Whether anything is asked of the policy at all.
        """
        return bool(
            self.cooldown or self.cooldown_projects or self.deny_file or self.allow_file
        )


def _exemptions(value: object) -> tuple[tuple[str, ...], tuple[tuple[str, float], ...]]:
    """
    ``cooldown-exempt`` in any of its forms: a string, a list of strings,
    or (TOML) a table of ``NAME`` or ``NAME==VERSION`` to ``true`` (exempt)
    or a duration (that project's own cooldown; ``"0"`` exempts it).
    """
    if isinstance(value, str):
        return (value,), ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value), ()
    if not isinstance(value, Mapping):
        raise ConfigError(
            "cooldown-exempt must be NAME, NAME==VERSION, a list of them, or a table of "
            'them to true or a duration (requests = "2d")'
        )
    exempt: list[str] = []
    durations: list[tuple[str, float]] = []
    for key, v in value.items():
        if v is True:
            exempt.append(key)
            continue
        try:
            seconds = parse_duration(v)
        except ValueError as e:
            raise ConfigError(f"cooldown-exempt {key!r}: {e}") from e
        if seconds == 0:
            exempt.append(key)
        elif "==" in key:
            raise ConfigError(
                f"cooldown-exempt {key!r}: one release can only be exempted (true), "
                "not given a cooldown of its own"
            )
        else:
            durations.append((key, seconds))
    return tuple(exempt), tuple(durations)


def policy_config(settings: Mapping[str, object]) -> PolicyConfig:
    """
    A `PolicyConfig` from the keys of `POLICY_KEYS` (others are ignored).

    :raises ConfigError: naming the bad key and value.
    """
    kwargs: dict[str, Any] = {}
    if settings.get("cooldown") is not None:
        try:
            kwargs["cooldown"] = parse_duration(settings["cooldown"]) or None
        except ValueError as e:
            raise ConfigError(f"cooldown: {e}") from e
    if settings.get("cooldown-unknown") is not None:
        unknown = str(settings["cooldown-unknown"]).strip().lower()
        if unknown not in ("allow", "deny"):
            raise ConfigError(f"cooldown-unknown must be allow or deny, not {unknown!r}")
        kwargs["cooldown_unknown"] = unknown
    if settings.get("cooldown-exempt") is not None:
        exempt, durations = _exemptions(settings["cooldown-exempt"])
        kwargs["cooldown_exempt"] = exempt
        kwargs["cooldown_projects"] = durations
    for key, field in (("deny", "deny_file"), ("allow", "allow_file")):
        path = settings.get(key)
        if path is not None:
            if not isinstance(path, str) or not path:
                raise ConfigError(f"{key} must be the path of a rules file, not {path!r}")
            kwargs[field] = path
    report_only = settings.get("policy-report-only")
    if report_only is not None:
        if not isinstance(report_only, bool):
            raise ConfigError(f"policy-report-only must be true or false, not {report_only!r}")
        kwargs["report_only"] = report_only
    return PolicyConfig(**kwargs)

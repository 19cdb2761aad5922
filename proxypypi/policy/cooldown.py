# -*- test-case-name: tests.test_policy_decision -*-
"""
The cooldown: a file uploaded upstream more recently than the cooldown is
held back until it comes of age, as if its release did not exist yet.

Its age comes from the page's PEP 700 ``upload-time``.  A file without one
(an HTML-only upstream), or with one that is malformed or in the future,
has no known age: ``--cooldown-unknown`` decides (held back by default).
Private uploads are never held: the files are the operator's own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import UTC, datetime

import attrs
from packaging.utils import NormalizedName

from proxypypi.config.policy import PolicyConfig, parse_exemption
from proxypypi.durations import human_duration
from proxypypi.names import normalize
from proxypypi.simple.model import DistFile


@functools.lru_cache(maxsize=65536)
def upload_seconds(text: str | None) -> float | None:
    """
    A PEP 700 ``upload-time`` (ISO 8601) in seconds since the epoch, or
    ``None`` when absent or malformed.  A time without a zone is UTC.
    """
    if not text or len(text) > 64:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp()
    return seconds if math.isfinite(seconds) else None


def iso(seconds: float) -> str:
    """
    A moment for messages: ``2026-05-03T12:00:00Z``.
    """
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen
class Hold:
    """
    Why the cooldown holds a file back.

    :ivar until: when it comes of age; ``None`` when its age is unknown.
    :ivar recheck: when the verdict may change (its coming of age, or the
        moment an upload time in the future is reached); ``None``: never.
    """

    message: str
    until: float | None
    recheck: float | None


@attrs.frozen
class Cooldown:
    """
    The cooldown as configured: a default duration, projects with one of
    their own, exemptions.
    """

    default: float = 0.0
    unknown_denied: bool = True
    exempt_projects: frozenset[str] = frozenset()
    exempt_releases: frozenset[tuple[str, str]] = frozenset()
    durations: Mapping[str, float] = attrs.field(factory=dict)

    @classmethod
    def of(cls, config: PolicyConfig) -> Cooldown:
        projects: set[str] = set()
        releases: set[tuple[str, str]] = set()
        for text in config.cooldown_exempt:
            name, version = parse_exemption(text)
            if version is None:
                projects.add(name)
            else:
                releases.add((name, version))
        durations: dict[str, float] = {}
        for name_text, seconds in config.cooldown_projects:
            normal = normalize(name_text)
            if normal is not None:
                durations[normal] = seconds
        return cls(
            config.cooldown or 0.0,
            config.cooldown_unknown == "deny",
            frozenset(projects),
            frozenset(releases),
            durations,
        )

    @property
    def active(self) -> bool:
        return self.default > 0 or any(d > 0 for d in self.durations.values())

    def duration_for(self, project: str) -> float:
        """
        The cooldown of ``project``'s files in seconds (0: none).
        """
        if project in self.exempt_projects:
            return 0.0
        return self.durations.get(project, self.default)

    def hold(
        self, project: NormalizedName, f: DistFile, version: str | None, now: float, duration: float
    ) -> Hold | None:
        """
        Why ``f`` is held back at ``now`` under a cooldown of ``duration``
        seconds, or ``None`` when it is served.
        """
        if not f.url or (version is not None and (project, version) in self.exempt_releases):
            return None
        uploaded = upload_seconds(f.upload_time)
        if uploaded is None or uploaded > now:
            if not self.unknown_denied:
                return None
            what = "no upload time" if uploaded is None else "an upload time in the future"
            return Hold(
                f"the upstream gives {what} for it, and --cooldown-unknown deny holds back "
                "files of unknown age",
                None,
                None if uploaded is None else uploaded,
            )
        until = uploaded + duration
        if until <= now:
            return None
        return Hold(
            f"uploaded {iso(uploaded)}, within the {human_duration(duration)} cooldown; "
            f"available from {iso(until)} (in {human_duration(until - now)})",
            until,
            until,
        )

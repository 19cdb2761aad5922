# -*- test-case-name: tests.test_policy_decision -*-
"""
What the policy withholds, and why: for one file (a request of it) and for
a whole page (what its forms list).

A page's judgement is a plain function of the page, the rules and the
moment; it yields the page to serve, every file withheld with its reason,
and the small summary memory keeps (`Held`): how many files by reason,
when the judgement expires (the next file to come of age), and a digest
of the files left out, which tells whether forms on disk were rendered
under the same judgement.
"""

from __future__ import annotations

import hashlib
import math

import attrs
from packaging.utils import NormalizedName

from proxypypi.durations import human_duration
from proxypypi.names import version_of
from proxypypi.policy.cooldown import Cooldown
from proxypypi.policy.rules import RuleSet
from proxypypi.simple.model import DistFile, ProjectPage

#: Why a file is withheld, as counted and shown.
REASONS = ("cooldown", "deny", "allow-list", "quarantine")

#: How each reason reads in a sentence.
HELD_AS = {"cooldown": "in cooldown", "deny": "denied", "allow-list": "not on the allow list",
           "quarantine": "quarantined upstream"}  # fmt: skip


def held_summary(counts: dict[str, int]) -> str:
    """
    ``1 in cooldown, 2 denied``: the counts that are not zero.
    """
    return ", ".join(f"{n} {HELD_AS[reason]}" for reason, n in counts.items() if n)


@attrs.frozen
class Withheld:
    """
    Why one file is not served.

    :ivar message: one line for people, naming the file, the rule and, for
        the cooldown, when it becomes available.
    :ivar until: when the cooldown lets it through (``None``: not a
        cooldown, or an unknown age).
    :ivar recheck: when this verdict may change by itself.
    """

    reason: str
    message: str
    until: float | None = None
    recheck: float | None = None


@attrs.frozen
class Held:
    """
    What memory keeps of a page's judgement (a few numbers per page).

    :ivar generation: the rules' generation it was made under.
    :ivar valid_until: when it must be made again (a file comes of age).
    :ivar counts: files withheld by reason, in the order of `REASONS`.
    :ivar enforced: ``False`` under ``--policy-report-only``: counted, not
        withheld.
    :ivar next_release: the first withheld release to come of age: when,
        and ``"project version"``.
    :ivar empty_reason: every file of the page is withheld (and it is not
        quarantined): why, for the 404 that answers it.
    :ivar quarantine: the upstream's PEP 792 quarantine message, if so.
    :ivar digest: of the names of the files left out of the forms.
    """

    generation: int = 0
    valid_until: float = math.inf
    counts: tuple[int, ...] = (0, 0, 0, 0)
    enforced: bool = True
    next_release: tuple[float, str] | None = None
    empty_reason: str | None = None
    quarantine: str | None = None
    digest: str = ""
    #: Files the policy holds back (or would, reporting only), and those
    #: actually left out of the page: read on every page request, so
    #: computed once.
    total: int = attrs.field(init=False)
    withheld: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        total = sum(self.counts)
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "withheld", total if self.enforced else 0)


@attrs.frozen
class Decision:
    """
    A page judged: the page to serve and what was left out.

    :ivar unknown_times: files held back for want of an upload time.
    """

    page: ProjectPage
    withheld: tuple[tuple[DistFile, Withheld], ...]
    held: Held
    unknown_times: int = 0


def digest_of(names: list[str]) -> str:
    """
    The digest of a set of file names (``""`` for none).
    """
    if not names:
        return ""
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8", "replace")).hexdigest()[:32]


def _served_page(page: ProjectPage, kept: list[DistFile], left_out: list[DistFile]) -> ProjectPage:
    """
    ``page`` without ``left_out``; versions whose every file is left out go
    from ``versions`` too (PEP 700), so a resolver does not see them.
    """
    kept_versions = {version_of(f.filename, page.name) for f in kept}
    gone = {version_of(f.filename, page.name) for f in left_out} - kept_versions
    gone.discard(None)
    versions = tuple(v for v in page.versions if v not in gone)
    return attrs.evolve(page, files=tuple(kept), versions=versions)


@attrs.frozen
class Rules:
    """
    The policy in force: one immutable snapshot, shared by the threads
    that render pages.

    :ivar generation: changes whenever the rules do.
    """

    generation: int = 0
    cooldown: Cooldown = attrs.field(factory=Cooldown)
    deny: RuleSet | None = None
    allow: RuleSet | None = None
    report_only: bool = False

    #: Whether anything is asked of the policy: read on every page
    #: request, so computed once.
    active: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        active = self.cooldown.active or self.deny is not None or self.allow is not None
        object.__setattr__(self, "active", active)

    def same_as(self, other: Rules) -> bool:
        """
        Whether ``other`` decides exactly as these rules do.
        """
        return (self.cooldown, self.report_only, _rules_of(self.deny), _rules_of(self.allow)) == (
            other.cooldown, other.report_only, _rules_of(other.deny), _rules_of(other.allow),
        )  # fmt: skip

    def verdict(
        self, project: NormalizedName, f: DistFile, now: float, quarantine: str | None = None
    ) -> Withheld | None:
        """
        Why ``f``, a file of ``project``, is withheld at ``now``, or
        ``None`` when it is served.  Quarantine, deny, allow list, then the
        cooldown: the first that holds it back says why.

        :param quarantine: the project's quarantine message, when its
            upstream quarantined it (private uploads are never affected).
        """
        if quarantine is not None and f.url:
            return Withheld("quarantine", quarantine)
        if self.deny is not None:
            rule = self.deny.match(project, f)
            if rule is not None:
                return Withheld("deny", f"{f.filename} is denied by {rule.describe()}")
        if self.allow is not None and self.allow.match(project, f) is None:
            return Withheld(
                "allow-list", f"{f.filename} is not on the allow list ({self.allow.path})"
            )
        duration = self.cooldown.duration_for(project)
        if duration > 0:
            hold = self.cooldown.hold(
                project, f, version_of(f.filename, project), now, duration
            )
            if hold is not None:
                return Withheld(
                    "cooldown",
                    f"{f.filename} is held back by the cooldown: {hold.message}",
                    hold.until,
                    hold.recheck,
                )
        return None

    def judge(self, page: ProjectPage, now: float) -> Decision:
        """
        What of ``page`` is served at ``now``.  Blocking for a large page
        (a thread's work, with the rendering it goes with).
        """
        if not self.active:
            return Decision(page, (), Held(self.generation))
        quarantine = quarantine_message(page)
        kept: list[DistFile] = []
        withheld: list[tuple[DistFile, Withheld]] = []
        for f in page.files:
            w = self.verdict(page.name, f, now, quarantine)
            if w is None:
                kept.append(f)
            else:
                withheld.append((f, w))
        if not withheld:
            return Decision(page, (), Held(self.generation))
        return self._decision(page, now, kept, withheld, quarantine)

    def _decision(
        self,
        page: ProjectPage,
        now: float,
        kept: list[DistFile],
        withheld: list[tuple[DistFile, Withheld]],
        quarantine: str | None,
    ) -> Decision:
        counts = [0] * len(REASONS)
        valid_until = math.inf
        first: tuple[float, DistFile] | None = None
        unknown = 0
        for f, w in withheld:
            counts[REASONS.index(w.reason)] += 1
            if w.recheck is not None:
                valid_until = min(valid_until, w.recheck)
            if w.until is not None and (first is None or w.until < first[0]):
                first = (w.until, f)
            if w.reason == "cooldown" and w.until is None:
                unknown += 1
        next_release = None
        if first is not None:
            version = version_of(first[1].filename, page.name) or first[1].filename
            next_release = (first[0], f"{page.name} {version}")
        enforced = not self.report_only
        empty = None
        if enforced and not kept and quarantine is None:
            example = withheld[0][1]
            if first is not None:
                example = next(w for f, w in withheld if f is first[1])
            summary = held_summary(dict(zip(REASONS, counts, strict=True)))
            empty = (
                f"every file of {page.name} is held back by the policy ({summary}); "
                f"e.g. {example.message}"
            )
        held = Held(
            self.generation,
            valid_until,
            tuple(counts),
            enforced,
            next_release,
            empty,
            quarantine,
            digest_of([f.filename for f, _ in withheld]) if enforced else "",
        )
        served = _served_page(page, kept, [f for f, _ in withheld]) if enforced else page
        return Decision(served, tuple(withheld), held, unknown)


def quarantine_message(page: ProjectPage) -> str | None:
    """
    Why no file of ``page`` is served when its upstream quarantined it
    (PEP 792); ``None`` for any other status.
    """
    status = page.status
    if status is None or status.status != "quarantined":
        return None
    why = f": {status.reason}" if status.reason else ""
    return f"{page.name} is quarantined upstream (PEP 792){why}; none of its files is served"


def _rules_of(rules: RuleSet | None) -> object:
    return None if rules is None else (rules.path, rules.rules)


def next_in(held: Held, now: float) -> str | None:
    """
    ``flask 3.2.0 in 2 d 4 h``: the next release of a page to pass.
    """
    if held.next_release is None:
        return None
    when, what = held.next_release
    return f"{what} in {human_duration(when - now)}"


@attrs.frozen
class Judge:
    """
    The rules in force and the moment, taken on the reactor thread, for a
    thread to judge pages with: every page of one task is judged alike.
    """

    rules: Rules
    now: float

    def __call__(self, page: ProjectPage) -> Decision:
        return self.rules.judge(page, self.now)

# -*- test-case-name: tests.test_upload,tests.test_policy_web -*-
"""
The pages of private projects as they are served: judged by the policy
(its deny and allow rules; the cooldown never holds back an upload, which
is the operator's own), and, for a project merged with its upstream
(``--merge-upstream``), its own files first, then the upstream's it has no
file of the same name for, unless the upstream quarantined it.

A page is judged again only when its project or the rules changed (or, for
a merged page, when a file comes of age); a private page is small, so this
happens on the reactor thread.
"""

from __future__ import annotations

import attrs
from packaging.utils import NormalizedName
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from proxypypi.cache.forms import MemoryForms
from proxypypi.cache.page import CachedPage
from proxypypi.cache.pages import PageCache, PageFacts
from proxypypi.policy.decision import Withheld
from proxypypi.policy.state import Policy
from proxypypi.private.model import PrivateProject
from proxypypi.simple.model import DistFile, ProjectPage
from proxypypi.upstream.pages import ProjectNotFound


@attrs.define(eq=False)
class ServedForms:
    """
    The served forms of the private pages, each kept until what it was
    made from changes.
    """

    policy: Policy
    clock: IReactorTime
    log = Logger()
    _judged: dict[NormalizedName, tuple[PrivateProject, MemoryForms]] = attrs.field(factory=dict)
    _merged: dict[NormalizedName, tuple[PrivateProject, PageFacts, MemoryForms]] = attrs.field(
        factory=dict
    )

    def own(self, private: PrivateProject) -> MemoryForms:
        """
        The forms of ``private``'s own page as the policy serves it.
        """
        rules = self.policy.rules
        known = self._judged.get(private.name)
        current = known is not None and known[1].held.generation == rules.generation
        if known is not None and known[0] is private and current:
            return known[1]
        decision = rules.judge(private.page, self.clock.seconds())
        forms = private.forms
        if decision.page is not private.page or decision.held.total:
            forms = MemoryForms(decision.page, decision.held)
        self._judged[private.name] = (private, forms)
        self.policy.ledger.note(private.name, decision.held)
        return forms

    async def merged(self, private: PrivateProject, pages: PageCache) -> MemoryForms:
        """
        The forms of ``private`` merged with its upstream's page; its own
        page alone when the upstream has nothing to add (it does not know
        the project, or does not answer).
        """
        name = private.name
        try:
            facts = await pages.get(name)
            kept = self._merged.get(name)
            if kept is not None and kept[0] is private and kept[1] is facts:
                held = kept[2].held
                if held.generation == self.policy.generation and (
                    self.clock.seconds() < held.valid_until
                ):
                    return kept[2]
            upstream = await pages.stored(name)
        except ProjectNotFound:
            return self.own(private)
        except Exception as e:
            self.log.warn(
                "serving only the private files of {project}: {error}", project=name, error=e
            )
            return self.own(private)
        decision = self.policy.rules.judge(_merge(private, upstream), self.clock.seconds())
        merged = MemoryForms(decision.page, decision.held)
        self._merged[name] = (private, facts, merged)
        return merged

    def verdict(self, private: PrivateProject, filename: str) -> Withheld | None:
        """
        Why the private file ``filename`` (a distribution, not its
        ``.metadata``) is withheld, or ``None``.
        """
        f = private.file(filename)
        if f is None:
            return None
        return self.policy.rules.verdict(private.name, f.dist_file(), self.clock.seconds())

    def rejudge(self, projects: list[PrivateProject]) -> None:
        """
        Judge every private page under the rules in force (after they
        changed), so that the ledger counts what they hold back.
        """
        for private in projects:
            self.own(private)

    def forget(self, name: NormalizedName | None = None) -> None:
        """
        Drop what is kept of ``name`` (of every project: ``None``).
        """
        if name is None:
            self._judged.clear()
            self._merged.clear()
            return
        self._judged.pop(name, None)
        self._merged.pop(name, None)
        self.policy.ledger.note(name, None)


def _merge(private: PrivateProject, upstream: CachedPage) -> ProjectPage:
    ours = {f.filename for f in private.files}
    theirs: tuple[DistFile, ...] = ()
    status = upstream.page.status
    if status is None or status.status != "quarantined":
        theirs = tuple(f for f in upstream.page.files if f.filename not in ours)
    return ProjectPage(private.name, private.page.files + theirs)

# -*- test-case-name: tests.test_upload -*-
"""
The page of a private project merged with its upstream's
(``--merge-upstream``): its own files first, then the upstream's files it
has no file of the same name for, unless the upstream quarantined it.
"""

from __future__ import annotations

import attrs
from packaging.utils import NormalizedName
from twisted.logger import Logger

from proxypypi.cache.forms import MemoryForms
from proxypypi.cache.page import CachedPage
from proxypypi.cache.pages import PageCache, PageFacts
from proxypypi.private.model import PrivateProject
from proxypypi.simple.model import DistFile, ProjectPage
from proxypypi.upstream.pages import ProjectNotFound


@attrs.define(eq=False)
class MergedForms:
    """
    The merged pages' forms, each kept until the private project or the
    upstream page changes.
    """

    log = Logger()
    _kept: dict[NormalizedName, tuple[PrivateProject, PageFacts, MemoryForms]] = attrs.field(
        factory=dict
    )

    async def forms_for(self, private: PrivateProject, pages: PageCache) -> MemoryForms:
        """
        When the upstream has nothing to add (it does not know the project,
        or does not answer), the private page alone.
        """
        name = private.name
        try:
            facts = await pages.get(name)
            kept = self._kept.get(name)
            if kept is not None and kept[0] is private and kept[1] is facts:
                return kept[2]
            upstream = await pages.stored(name)
        except ProjectNotFound:
            return private.forms
        except Exception as e:
            self.log.warn(
                "serving only the private files of {project}: {error}", project=name, error=e
            )
            return private.forms
        merged = MemoryForms(_merge(private, upstream))
        self._kept[name] = (private, facts, merged)
        return merged

    def forget(self, name: NormalizedName | None = None) -> None:
        """
        Drop the merged forms of ``name`` (of every project: ``None``).
        """
        if name is None:
            self._kept.clear()
        else:
            self._kept.pop(name, None)


def _merge(private: PrivateProject, upstream: CachedPage) -> ProjectPage:
    ours = {f.filename for f in private.files}
    theirs: tuple[DistFile, ...] = ()
    status = upstream.page.status
    if status is None or status.status != "quarantined":
        theirs = tuple(f for f in upstream.page.files if f.filename not in ours)
    return ProjectPage(private.name, private.page.files + theirs)

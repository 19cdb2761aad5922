# -*- test-case-name: tests.test_index -*-
"""
What memory keeps of the stored pages, bounded whatever their number or
size: small facts per page (`PageFacts`), and the entries of the files of
the pages asked for most recently, for the requests of files.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import attrs
from packaging.utils import NormalizedName

from proxypypi.cache.forms import Form
from proxypypi.cache.page import CachedPage
from proxypypi.cache.pagestore import Stored
from proxypypi.simple.model import DistFile
from proxypypi.upstream.pages import Validators

#: Pages whose facts are kept in memory (a few hundred bytes each); the
#: least recently used beyond it are read from disk again when asked for.
FACTS = 20_000

#: Files whose entries (URL, hashes, size) are kept in memory for the
#: requests of files, as whole pages, least recently used dropped first.
LISTED_FILES = 20_000


@attrs.frozen
class PageFacts:
    """
    What memory keeps of a stored page.

    :ivar rendered: forms not written to disk yet (or that could not be),
        served from memory meanwhile.
    """

    name: NormalizedName
    source: str
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None
    last_serial: int | None = None
    files: int = 0
    rendered: Mapping[Form, bytes] = attrs.field(factory=dict, repr=False)

    @classmethod
    def of(cls, stored: Stored) -> PageFacts:
        c = stored.cached
        return cls(
            c.page.name,
            c.source,
            c.fetched_at,
            c.etag,
            c.last_modified,
            c.page.last_serial,
            len(c.page.files),
            stored.rendered,
        )

    def validators(self) -> Validators:
        return Validators(self.source, self.etag, self.last_modified)


@attrs.define
class PageMemory:
    """
    The facts of pages, and the file entries of some, each least recently
    used first out past its bound.
    """

    facts_limit: int = FACTS
    listed_limit: int = LISTED_FILES
    _facts: OrderedDict[str, PageFacts] = attrs.field(factory=OrderedDict)
    _listings: OrderedDict[str, dict[str, DistFile]] = attrs.field(factory=OrderedDict)
    _listed: int = 0

    def known(self, name: str) -> PageFacts | None:
        facts = self._facts.get(name)
        if facts is not None:
            self._facts.move_to_end(name)
        return facts

    def set(self, facts: PageFacts) -> None:
        self._facts[facts.name] = facts
        self._facts.move_to_end(facts.name)
        while len(self._facts) > self.facts_limit:
            self._facts.popitem(last=False)

    def remember(self, stored: Stored, cached: CachedPage | None = None) -> PageFacts:
        """
        Keep the facts of a stored page, and its files' entries when the
        page is at hand (just fetched or loaded).
        """
        facts = PageFacts.of(stored)
        self.set(facts)
        if cached is not None:
            self.keep_listing(facts.name, {f.filename: f for f in cached.page.files})
        return facts

    def listed(self, name: str, filename: str) -> DistFile | None:
        entries = self._listings.get(name)
        if entries is None:
            return None
        self._listings.move_to_end(name)
        return entries.get(filename)

    def listing(self, name: str) -> dict[str, DistFile] | None:
        return self._listings.get(name)

    def keep_listing(self, name: str, entries: dict[str, DistFile]) -> None:
        previous = self._listings.pop(name, None)
        if previous is not None:
            self._listed -= len(previous)
        self._listings[name] = entries
        self._listed += len(entries)
        while self._listed > self.listed_limit and len(self._listings) > 1:
            _, dropped = self._listings.popitem(last=False)
            self._listed -= len(dropped)

    def forget(self, name: str) -> None:
        self._facts.pop(name, None)
        entries = self._listings.pop(name, None)
        if entries is not None:
            self._listed -= len(entries)

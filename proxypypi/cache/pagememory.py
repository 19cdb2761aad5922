# -*- test-case-name: tests.test_index -*-
"""
What memory keeps of the stored pages, bounded whatever their number or
size: small facts per page (`PageFacts`), and the entries of the files
asked for most recently (not whole pages: a page of ten thousand files,
one of which an installer picks, costs its size on disk, not in memory).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import attrs
from packaging.utils import NormalizedName

from proxypypi.cache.forms import Form
from proxypypi.cache.pagestore import Stored
from proxypypi.policy.decision import Held
from proxypypi.policy.ledger import Ledger
from proxypypi.simple.model import DistFile
from proxypypi.upstream.pages import Validators

#: Pages whose facts are kept in memory (a few hundred bytes each); the
#: least recently used beyond it are read from disk again when asked for.
FACTS = 20_000

#: Files whose entries (URL, hashes, size; about a kilobyte each) are kept
#: in memory for the requests of files, least recently used dropped first;
#: the others are looked up in their stored page.
LISTED_FILES = 10_000


@attrs.frozen
class PageFacts:
    """
    What memory keeps of a stored page.

    :ivar rendered: forms not written to disk yet (or that could not be),
        served from memory meanwhile.
    :ivar held: what the policy holds back of the page, and until when
        that judgement stands.
    """

    name: NormalizedName
    source: str
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None
    last_serial: int | None = None
    files: int = 0
    rendered: Mapping[Form, bytes] = attrs.field(factory=dict, repr=False)
    held: Held = attrs.field(factory=Held)

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
            stored.held,
        )

    def validators(self) -> Validators:
        return Validators(self.source, self.etag, self.last_modified)


@attrs.define
class PageMemory:
    """
    The facts of pages, and the file entries of some, each least recently
    used first out past its bound; what the policy holds back of them is
    summed in the ``ledger``, and when their judgements expire is kept in
    order (`due`).
    """

    facts_limit: int = FACTS
    listed_limit: int = LISTED_FILES
    ledger: Ledger = attrs.field(factory=Ledger)
    _facts: OrderedDict[str, PageFacts] = attrs.field(factory=OrderedDict)
    _expiries: list[tuple[float, str]] = attrs.field(factory=list)
    _listings: OrderedDict[str, dict[str, DistFile]] = attrs.field(factory=OrderedDict)
    _listed: int = 0

    def known(self, name: str) -> PageFacts | None:
        facts = self._facts.get(name)
        if facts is not None:
            self._facts.move_to_end(name)
        return facts

    def set(self, facts: PageFacts) -> None:
        old = self._facts.get(facts.name)
        self._facts[facts.name] = facts
        self._facts.move_to_end(facts.name)
        held = facts.held
        if old is None or old.held is not held:
            self.ledger.note(facts.name, held)
            expiring = held.valid_until != float("inf")
            if expiring and (old is None or old.held.valid_until != held.valid_until):
                heapq.heappush(self._expiries, (held.valid_until, facts.name))
        while len(self._facts) > self.facts_limit:
            name, _ = self._facts.popitem(last=False)
            self.ledger.note(name, None)

    def due(self, now: float, generation: int) -> list[str]:
        """
        The pages whose judgement has expired at ``now``, or was made under
        another generation of the rules: each to be judged again.
        """
        names = []
        while self._expiries and self._expiries[0][0] <= now:
            _, name = heapq.heappop(self._expiries)
            facts = self._facts.get(name)
            if facts is not None and facts.held.valid_until <= now:
                names.append(name)
        names += [n for n, f in self._facts.items() if f.held.generation != generation]
        return list(dict.fromkeys(names))

    def remember(self, stored: Stored) -> PageFacts:
        """
        Keep the facts of a page stored anew; the entries kept of its older
        self go.
        """
        facts = PageFacts.of(stored)
        self.set(facts)
        self._drop_entries(facts.name)
        return facts

    def listed(self, name: str, filename: str) -> DistFile | None:
        """
        The entry of ``filename`` on ``name``'s page, if memory has it.
        """
        entries = self._listings.get(name)
        f = None if entries is None else entries.get(filename)
        if f is not None:
            self._listings.move_to_end(name)
        return f

    def keep_entry(self, name: str, f: DistFile) -> None:
        entries = self._listings.setdefault(name, {})
        self._listings.move_to_end(name)
        if f.filename not in entries:
            self._listed += 1
        entries[f.filename] = f
        while self._listed > self.listed_limit:
            _, dropped = self._listings.popitem(last=False)
            self._listed -= len(dropped)

    def keep_entries(self, name: str, files: Iterable[DistFile]) -> None:
        """
        Keep every entry of a page (one whose stored page is not on disk).
        """
        for f in files:
            self.keep_entry(name, f)

    def _drop_entries(self, name: str) -> None:
        entries = self._listings.pop(name, None)
        if entries is not None:
            self._listed -= len(entries)

    def forget(self, name: str) -> None:
        self._facts.pop(name, None)
        self.ledger.note(name, None)
        self._drop_entries(name)

"""
The pages for people (status, browse) as a test reads them: parsed with
the standard library's HTML parser, checked for well-formed nesting, with
the figures (by ``id``), the table rows and the links at hand.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

#: Elements that have no end tag.
VOID = {"meta", "br", "hr", "img", "input", "link", "col"}


class Page(HTMLParser):
    """
    A parsed page: text and ``value`` of every element with an ``id``, the
    cells of every table row (their text), every link's ``href``, the
    attributes of every element by tag, and a check that every element is
    closed in order.
    """

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: dict[str, dict[str, Any]] = {}
        self.open_ids: list[tuple[int, str]] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.elements: dict[str, list[dict[str, str | None]]] = {}
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        self.elements.setdefault(tag, []).append(a)
        if tag == "a" and a.get("href") is not None:
            self.links.append(str(a["href"]))
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self._cell = []
        if tag in VOID:
            return
        self.stack.append(tag)
        ident = a.get("id")
        if ident is not None:
            if ident in self.ids:
                self.errors.append(f"duplicate id {ident}")
            self.ids[ident] = {"value": a.get("value"), "text": "", "attrs": a}
            self.open_ids.append((len(self.stack), ident))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        if self.open_ids and self.open_ids[-1][0] == len(self.stack):
            self.open_ids.pop()
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        for _, ident in self.open_ids:
            self.ids[ident]["text"] += data

    def value(self, ident: str) -> float:
        raw = self.ids[ident]["value"]
        assert raw is not None, ident
        return float(raw)

    def show(self, ident: str) -> str:
        return str(self.ids[ident]["text"]).strip()

    def cells(self) -> list[list[str]]:
        """
        The rows of data (header rows, without cells, left out).
        """
        return [row for row in self.rows if row]

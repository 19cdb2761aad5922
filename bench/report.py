"""
The benchmark's report: one table of the proxy against its references
(issue 3's scenarios), tables of their own for scenarios whose figures
have other columns, the settings of the run and the details under them;
echoed line by line while the run goes, and written out as Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs


@attrs.define
class Row:
    """
    One line of the main table.
    """

    scenario: str
    proxy: str
    reference: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: str = "—"


@attrs.define
class Table:
    """
    A scenario's own table, for figures that are not one proxy figure
    against one reference (request timings by endpoint and state, say).

    :ivar intro: the line under the title: what was measured, at what size.
    """

    title: str
    head: list[str]
    rows: list[list[str]]
    intro: str = ""

    def markdown(self) -> list[str]:
        """
        The table's lines, title first.
        """
        lines = [f"## {self.title}", ""]
        if self.intro:
            lines += [self.intro, ""]
        return lines + _markdown_table(self.head, self.rows)


def _markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    table = [list(head), ["---"] * len(head), *rows]
    return ["| " + " | ".join(cells) + " |" for cells in table]


def verdict(ok: bool | None) -> str:
    """
    The "met?" cell: ``yes``, ``NO``, or ``—`` when there is no target.
    """
    return "—" if ok is None else ("yes" if ok else "**NO**")


def ms(seconds: float) -> str:
    """
    Seconds as milliseconds, for the table.
    """
    return f"{seconds * 1000:.1f} ms"


def mib(value: float) -> str:
    """
    A memory size in MiB, for the table.
    """
    return f"{value:.1f} MiB"


def plural(clients: int) -> str:
    """
    "client" or "clients".
    """
    return "client" if clients == 1 else "clients"


@attrs.define
class Report:
    """
    The tables and the notes under them.
    """

    settings: dict[str, Any]
    rows: list[Row] = attrs.field(factory=list)
    tables: list[Table] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)

    def add(self, row: Row) -> None:
        """
        Add a row to the main table and echo it, so progress is visible
        during the run.
        """
        self.rows.append(row)
        cells = [row.proxy, row.reference, row.ratio, row.target, row.met]
        print(f"  {row.scenario}: " + " | ".join(cells), flush=True)

    def table(self, table: Table) -> None:
        """
        Add a scenario's own table and echo it.
        """
        self.tables.append(table)
        for line in table.markdown():
            print(f"  {line}", flush=True)

    def note(self, text: str) -> None:
        """
        Add a line to the details under the tables.
        """
        self.notes.append(text)
        print(f"    {text}", flush=True)

    def markdown(self) -> str:
        """
        The whole report as Markdown.
        """
        lines = ["# proxypypi benchmark", ""]
        if self.rows:
            head = ["scenario", "proxypypi", "reference", "ratio", "target", "met?"]
            cells = [
                [r.scenario, r.proxy, r.reference, r.ratio, r.target, r.met] for r in self.rows
            ]
            lines += [*_markdown_table(head, cells), ""]
        for table in self.tables:
            lines += [*table.markdown(), ""]
        lines += ["## Settings", ""]
        lines += [f"- {key}: {value}" for key, value in self.settings.items()]
        lines += ["", "## Details", ""]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

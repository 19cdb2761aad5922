# -*- test-case-name: tests.test_status,tests.test_browse -*-
"""
The HTML of the pages for people (the status page, the browse pages):
one style sheet, escaping, figures, tables, times.

Plain HTML with a little inline CSS: no script, no external resource, so
the pages render anywhere, and fast.  Every figure that has an exact value
carries it in a ``<data value="...">`` element, with an ``id`` where a
reader (or a test) wants to find it.  Everything shown goes through `e`:
project names, file names and URLs come from upstreams, hosts from
requests.

Tables fit their page at any width: on a wide screen a long cell (a file
name, a hash, an URL: see `token`) wraps rather than widening the page; under 60em (a
phone, a small tablet: the status page's ten columns need more) each row
becomes a small card whose cells carry their column's name
(``data-label``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from twisted.web.iweb import IRequest

from proxypypi.sizes import human_bytes

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:0 .8em 2em;max-width:72em;
line-height:1.4;color:#222;background:#fff;overflow-wrap:break-word}
.t,td a,td code{overflow-wrap:anywhere}
h1{font-size:1.4em;margin:.6em 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em;
border-bottom:1px solid #ddd}h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;width:100%}
th,td{padding:.2em .5em;text-align:left;vertical-align:top;border-bottom:1px solid #eee}
td.n,th.n{text-align:right}td.n{white-space:nowrap}th{overflow-wrap:normal}table.fixed{table-layout:fixed}
code,pre{font-family:ui-monospace,monospace;font-size:.9em}td code{font-size:.8em}
pre{background:#f5f5f5;padding:.6em;white-space:pre-wrap}
.healthy{color:#060}.suspect{color:#a60}.down,.probing{color:#b00;font-weight:bold}
.muted{color:#777}progress{width:8em;max-width:100%}
nav a{margin-right:.8em;display:inline-block}
form{display:flex;flex-wrap:wrap;gap:.4em;margin:.6em 0}
input[type=search]{flex:1 1 12em;min-width:0;font:inherit;padding:.3em}
button{font:inherit;padding:.3em .8em}
@media (max-width:60em){thead{display:none}
table,tbody,tr,td{display:block;width:auto}
tr{border-bottom:1px solid #ddd;padding:.3em 0}td{border:0;padding:.1em 0}
td.n{text-align:left}td[data-label]::before{content:attr(data-label) ": ";color:#777}}
"""


def e(value: object) -> str:
    """
    Any value as escaped HTML text (quotes too: it may land in an
    attribute).
    """
    return html.escape(str(value), quote=True)


def token(text: str) -> str:
    """
    A long string with no spaces (a URL, a file name), escaped, that may
    break anywhere: in a table it would otherwise set its column's least
    width, and squeeze the words of every other column.
    """
    return f'<span class="t">{e(text)}</span>'


def data(value: float | int | None, text: str, id: str | None = None) -> str:
    """
    A figure: ``text`` for people, ``value`` for machines.
    """
    ident = f' id="{e(id)}"' if id else ""
    shown = e(text)
    if value is None:
        return f"<span{ident}>{shown}</span>"
    return f'<data{ident} value="{e(value)}">{shown}</data>'


def count(value: int, id: str | None = None) -> str:
    return data(value, str(value), id)


def counted(value: int, noun: str, id: str | None = None) -> str:
    """
    ``1 file``, ``2 files``, the number marked up as `count`.
    """
    return f"{count(value, id)} {e(noun if value == 1 else noun + 's')}"


def sized(value: int | None, id: str | None = None) -> str:
    """
    A number of bytes: ``1.5 KiB`` for people, the exact count for machines.
    """
    return data(value, human_bytes(value), id)


def moment(seconds: float | None) -> str:
    """
    A point in time, in UTC to the minute, with its exact value for
    machines; ``–`` when unknown.
    """
    if seconds is None:
        return "–"
    try:
        when = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return "–"
    return (
        f'<time datetime="{when.strftime("%Y-%m-%dT%H:%M:%SZ")}">'
        f"{when.strftime('%Y-%m-%d %H:%M')}</time>"
    )


def iso_moment(text: str | None) -> str:
    """
    A PEP 700 ``upload-time`` (from an upstream: any string) as `moment`;
    ``–`` when it is missing or no time.
    """
    if not text or len(text) > 40:
        return "–"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return "–"
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return moment(parsed.timestamp())


def table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: set[int],
    widths: Sequence[int] = (),
) -> str:
    """
    A table of already escaped cells; columns in ``numeric`` align right
    (and never wrap).  ``head`` is plain text: it also labels each cell of
    a row shown as a card on a narrow screen.  ``widths`` (percentages, one
    a column) fix the columns, so that tables one above the other line up.
    """

    def cls(i: int) -> str:
        return ' class="n"' if i in numeric else ""

    labels = [f' data-label="{e(h)}"' if h else "" for h in head]
    th = "".join(f"<th{cls(i)}>{e(h)}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}{labels[i]}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    fixed, cols = "", ""
    if widths:
        fixed = ' class="fixed"'
        cols = "<colgroup>" + "".join(f'<col style="width:{w}%">' for w in widths) + "</colgroup>"
    return f"<table{fixed}>{cols}<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def send_html(request: IRequest, body: bytes) -> bytes:
    """
    Answer with a page for people: never stored by a cache (it changes
    with every download).
    """
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def document(title: str, body: str) -> bytes:
    """
    A whole page: ``title`` (plain text) and ``body`` (markup), with the
    viewport a phone needs to lay it out at its own width.
    """
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )
    return page.encode("utf-8")

# -*- test-case-name: tests.test_browse -*-
"""
Long lists shown a page at a time (the browse pages): what a request's
query string asks for, read defensively, and the links to the other
pages.  The query string is the client's: any value may be junk, too long
or repeated, and each is read once, bounded, with a default.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twisted.web.iweb import IRequest

from proxypypi.web.markup import e

#: Highest page number honoured; a larger one is shown as this one (and
#: is empty), so no request makes the service count far.
MAX_PAGE = 100_000

#: Longest argument value read, in bytes.
MAX_ARGUMENT = 1024


def argument(request: IRequest, name: bytes) -> str:
    """
    The first value of the query argument ``name``, decoded, at most
    `MAX_ARGUMENT` bytes of it; empty when absent.
    """
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name) or [b""]
    return values[0][:MAX_ARGUMENT].decode("utf-8", "replace")


def page_number(request: IRequest) -> int:
    """
    The page asked for with ``?page=N``, from 1 to `MAX_PAGE`; 1 when it
    is missing or no number.
    """
    text = argument(request, b"page").strip()
    if not text.isdigit() or len(text) > 6:
        return 1
    return min(max(int(text), 1), MAX_PAGE)


def page_count(items: int, per_page: int) -> int:
    """
    How many pages ``items`` take (one, for none).
    """
    return max(1, -(-items // per_page))


def pager(page: int, pages: int, keep: dict[str, str]) -> str:
    """
    Links to the previous and next pages, keeping the arguments in
    ``keep`` (a search, say); nothing when there is one page.
    """
    if pages <= 1 and page <= 1:
        return ""

    def link(number: int, text: str, rel: str) -> str:
        query = urlencode({**{k: v for k, v in keep.items() if v}, "page": str(number)})
        return f'<a rel="{rel}" href="?{e(query)}">{e(text)}</a>'

    parts = []
    if page > 1:
        parts.append(link(min(page - 1, pages), "← previous", "prev"))
    parts.append(f'<span id="page">page {page} of {pages}</span>')
    if page < pages:
        parts.append(link(page + 1, "next →", "next"))
    return f'<nav class="pager">{" ".join(parts)}</nav>'

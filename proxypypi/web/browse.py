# -*- test-case-name: tests.test_browse -*-
"""
``/browse/``: the projects stored here, for a person with a browser, with
a search box (a plain ``GET`` form, filtered here) and pages of
`PER_PAGE` projects; each links to its own page
(`proxypypi.web.browseproject`).

``/simple/`` is no use for this: in a browser it shows every name the
upstreams know.  This lists what is on this disk: upstream files and
pages, and uploads.  The disk is read in the disk threads, one browse
request at a time (a crawler following every page link waits its turn
instead of taking every disk thread), and only for the page shown
(`proxypypi.ops.inventory`); the last use of each file comes from the
usage tracker, on the reactor thread.
"""

from __future__ import annotations

from twisted.internet.defer import DeferredLock
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from proxypypi.cache.storage import FileKey
from proxypypi.config.urls import display_url
from proxypypi.ops.inventory import Listing, StoredProject, list_stored, search_key
from proxypypi.private.model import PrivateProject
from proxypypi.web.browseproject import ProjectBrowseResource, project_url
from proxypypi.web.deferred import render_async
from proxypypi.web.errors import Page, redirect
from proxypypi.web.markup import (
    count,
    counted,
    document,
    e,
    iso_moment,
    moment,
    send_html,
    sized,
    table,
    token,
)
from proxypypi.web.paging import argument, page_count, page_number, pager
from proxypypi.web.proxy import Proxy

#: Projects shown on one page of the listing.
PER_PAGE = 50

#: The listing's columns, and their widths in percent (fixed: an automatic
#: layout gives a long project name the room a short URL then lacks).
HEAD = ("project", "files", "size", "last use", "upstream", "private")
COLUMNS = (32, 6, 9, 21, 24, 8)


class BrowseResource(Page):
    """
    ``/browse/``; its children are the projects' pages.
    """

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy
        self.one_at_a_time = DeferredLock()

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"" and not request.postpath:
            return self
        return ProjectBrowseResource(self.proxy, path, self.one_at_a_time)

    def render_GET(self, request: IRequest) -> bytes | int:
        if not request.path.endswith(b"/"):
            return redirect(request, "browse/")
        typed = argument(request, b"q")
        page = page_number(request)
        return render_async(request, lambda: self._listing(request, typed, page))

    async def _listing(self, request: IRequest, typed: str, page: int) -> bytes:
        storage = self.proxy.storage
        listing: Listing = await self.one_at_a_time.run(
            storage.run,
            list_stored,
            storage.files_dir,
            storage.pages_dir,
            self.proxy.private.names(),
            search_key(typed),
            (page - 1) * PER_PAGE,
            PER_PAGE,
        )
        return send_html(request, self.render_listing(listing, typed, page))

    def render_listing(self, listing: Listing, typed: str, page: int) -> bytes:
        figures = self.proxy.storage_figures()
        stored = "measuring" if figures.files is None else counted(figures.files, "upstream file")
        summary = (
            f"<p>{stored}, {sized(figures.bytes)}; "
            f"{counted(figures.private_files, 'upload')}, {sized(figures.private_bytes)}.</p>"
        )
        search = (
            '<form method="get" role="search">'
            f'<input type="search" name="q" value="{e(typed)}" maxlength="100" '
            'placeholder="project name" aria-label="project name">'
            "<button>Search</button></form>"
        )
        if typed:
            found = f"{counted(listing.matching, 'project', 'matching')} match “{e(typed)}”."
        else:
            found = f"{counted(listing.matching, 'project', 'matching')} stored here."
        rows = [self._row(p) for p in listing.projects]
        shown = (
            table(HEAD, rows, {1, 2}, COLUMNS)
            if rows
            else '<p id="empty">Nothing to show here.</p>'
        )
        note = (
            '<p class="muted">Last use is the last download of a file through this proxy, '
            "recorded when <code>--max-cache-size</code> is set; otherwise (and for uploads) "
            "it says when the newest file was stored.</p>"
        )
        keep = {"q": typed}
        body = (
            "<h1>Cached projects</h1>"
            '<nav><a href="../">status</a><a href="../simple/">index</a></nav>'
            f"{summary}{search}<p>{found}</p>{shown}"
            f"{pager(page, page_count(listing.matching, PER_PAGE), keep)}{note}"
        )
        return document("Cached projects · proxypypi", body)

    def _row(self, project: StoredProject) -> list[str]:
        """
        A project's cells: its upstream files with its uploads, when each
        was last used (or stored), where its page came from.
        """
        private = self.proxy.private.project(project.name)
        files, size = project.files, project.bytes
        if private is not None:
            files += len(private.files)
            size += sum(f.size for f in private.files)
        source = token(display_url(project.source)) if project.source else "–"
        return [
            f'<a href="{e(project_url(project.name))}">{e(project.name)}</a>',
            count(files),
            sized(size),
            self._last_use(project, private),
            source,
            "yes" if private is not None else "no",
        ]

    def _last_use(self, project: StoredProject, private: PrivateProject | None) -> str:
        usage = self.proxy.usage
        used = [usage.last_used(FileKey(project.name, f)) for f in project.filenames]
        known = [u for u in used if u is not None]
        if known:
            return moment(max(known))
        if private is not None and private.files:
            stored = iso_moment(max(f.upload_time for f in private.files))
        elif project.newest is not None:
            stored = moment(project.newest)
        else:
            return "–"
        return f"stored {stored}"

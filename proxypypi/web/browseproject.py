# -*- test-case-name: tests.test_browse -*-
"""
``/browse/<name>/``: one project's releases, newest first, with the files
of each that are stored here: sizes, hashes, upload times
(`proxypypi.ops.releases`).  By default only the releases with a stored
file; ``?all=1`` shows every release the stored page lists.  Pages of
`RELEASES_PER_PAGE` releases.

Only what is stored is shown: the stored page is read from disk, never
fetched (a browse page must not make the proxy contact an upstream), and
parsed and shaped in the page threads.
"""

from __future__ import annotations

from urllib.parse import quote

from packaging.utils import NormalizedName
from twisted.internet.defer import DeferredLock
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from proxypypi.config.urls import display_url
from proxypypi.names import normalize
from proxypypi.ops.releases import FileView, ProjectView, ReleaseView, view_project
from proxypypi.web.deferred import render_async
from proxypypi.web.errors import ErrorResource, Page, error, redirect
from proxypypi.web.markup import (
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

#: Releases shown on one page.
RELEASES_PER_PAGE = 20

#: The widths of a release's columns (file, stored, size, sha256,
#: uploaded), in percent: the same for every release, so they line up.
COLUMNS = (25, 7, 8, 46, 14)


def project_url(name: str) -> str:
    """
    The browse page of a project, relative to ``/browse/``.
    """
    return quote(name) + "/"


class ProjectBrowseResource(Page):
    """
    ``/browse/<name>/``.

    :param one_at_a_time: held while the disk is read, shared with the
        listing (`proxypypi.web.browse`).
    """

    def __init__(self, proxy: Proxy, raw_name: bytes, one_at_a_time: DeferredLock) -> None:
        super().__init__()
        self.proxy = proxy
        self.raw_name = raw_name
        self.one_at_a_time = one_at_a_time

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"" and not request.postpath:
            return self
        return ErrorResource(404, "no such page; the cached projects are listed at /browse/")

    def render_GET(self, request: IRequest) -> bytes | int:
        raw = self.raw_name.decode("utf-8", "replace")
        name = normalize(raw)
        if name is None:
            return error(request, 404, f"{raw[:100]!r} is not a valid project name")
        trailing = request.path.endswith(b"/")
        if raw != name or not trailing:
            return redirect(request, f"../{name}/" if trailing else f"{name}/")
        everything = argument(request, b"all") == "1"
        page = page_number(request)

        async def work() -> bytes:
            view = await self.one_at_a_time.run(self._view, name, everything, page)
            if view.empty:
                return error(
                    request, 404, f"nothing of {name} is stored here; see /browse/ for what is"
                )
            return send_html(request, render_project(view, everything, page))

        return render_async(request, work)

    async def _view(self, name: NormalizedName, everything: bool, page: int) -> ProjectView:
        pages, private = self.proxy.pages, self.proxy.private
        project = private.project(name)
        shadowed = project is not None and name not in private.merge_upstream
        # A private name hides its upstream page: show what installers get.
        cached = None if shadowed else await pages.load(name)
        result: ProjectView = await pages.work(
            view_project,
            self.proxy.storage.files_dir,
            name,
            cached,
            project,
            everything,
            (page - 1) * RELEASES_PER_PAGE,
            RELEASES_PER_PAGE,
        )
        return result


def _file_row(name: str, f: FileView) -> list[str]:
    shown = token(f.filename)
    if f.stored:
        shown = f'<a href="../../files/{e(quote(name))}/{e(quote(f.filename))}">{shown}</a>'
    marks = [
        text
        for flag, text in (
            (f.private, "uploaded here"),
            (f.yanked is not False, "yanked"),
            (f.removed_upstream, "removed upstream"),
            (not f.listed, "not on the stored page"),
        )
        if flag
    ]
    if marks:
        shown += f' <span class="muted">({e(", ".join(marks))})</span>'
    return [
        shown,
        "yes" if f.stored else "no",
        sized(f.size),
        f"<code>{e(f.sha256)}</code>" if f.sha256 else "–",
        iso_moment(f.upload_time),
    ]


def _release(name: str, release: ReleaseView) -> str:
    title = e(release.version) if release.version is not None else "files of no release"
    rows = [_file_row(name, f) for f in release.files]
    more = ""
    if release.hidden:
        more = (
            f'<p class="muted">and {counted(release.hidden, "other file")} '
            "listed upstream, not stored here.</p>"
        )
    head = ["file", "stored", "size", "sha256", "uploaded"]
    return f"<h3>{title}</h3>{table(head, rows, {2}, COLUMNS)}{more}"


def render_project(view: ProjectView, everything: bool, page: int) -> bytes:
    """
    The page of ``view``: what is stored, where the page came from, the
    releases, links to the other pages and to the other view.
    """
    name = view.name
    if view.source is not None:
        origin = (
            f"Page from <code>{e(display_url(view.source))}</code>, "
            f"fetched {moment(view.fetched_at)}."
        )
    else:
        origin = "No upstream page is stored."
    stored = (
        f"<p>{counted(view.stored_files, 'file', 'stored-files')} stored here, "
        f"{sized(view.stored_bytes, 'stored-bytes')}. {origin}</p>"
    )
    if everything:
        which = (
            f"<p>All {counted(view.listed, 'release', 'releases')}. "
            '<a href="?">Only those with a stored file</a>.</p>'
        )
    else:
        which = (
            f"<p>{counted(view.matching, 'release', 'releases')} with a stored file, "
            f'of {view.listed}. <a href="?all=1">Show all releases</a>.</p>'
        )
    releases = "".join(_release(name, r) for r in view.releases) or (
        '<p id="empty">No release to show here.</p>'
    )
    pages = page_count(view.matching, RELEASES_PER_PAGE)
    body = (
        f"<h1>{e(name)}</h1>"
        '<nav><a href="../">all cached projects</a>'
        f'<a href="../../simple/{e(quote(name))}/">index page</a><a href="../../">status</a></nav>'
        f"{stored}{which}{releases}{pager(page, pages, {'all': '1' if everything else ''})}"
    )
    return document(f"{name} · proxypypi", body)

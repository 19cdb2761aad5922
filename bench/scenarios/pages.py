"""
Index pages at the public index's real sizes (issue 12), against nginx
serving the same pages from disk as the upstream, in one run:

1. the largest page (8,000 files) alone, cold, as uv asks for it: the
   proxy's time next to the upstream's own, and the proxy's work per file;
2. 40 pages (37,000 files in all) fetched cold by 8 concurrent clients:
   the set's wall time, the slowest page, the proxy's work per file, every
   page compared file by file with the upstream's; then the same set warm;
3. a working set of 1,000 small projects, cold: the proxy's peak RSS;
4. the project list (900,000 names), cold and warm, gzip as pip asks: first
   byte and total, next to the upstream's.

The proxy's peak RSS is sampled throughout.  Work per file is the proxy's
extra wall time over the upstream's for the same requests, divided by the
files listed: everything the proxy does for them (receive, parse, check
every name, store, render, send).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil

from bench import BenchError
from bench.bigindex import Page, page_doc, write_index
from bench.clients import HTML_TYPE, PIP_ENCODING, Fetch, fetch, fetch_each
from bench.context import Bench
from bench.references import free_port, start_nginx
from bench.report import Row, mib, ms, verdict
from bench.rss import RssMonitor
from bench.services import Proxy, start_proxy

#: The Accept header uv sends for a project page.
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)

#: Files of each project of the working set.
WORKING_SET_FILES = 30


def _files(body: bytes) -> list[tuple[str, str]]:
    """
    (file name, sha256) of every file of a JSON page, gzip-encoded or not.
    """
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return [(f["filename"], f["hashes"].get("sha256", "")) for f in json.loads(body)["files"]]


def _check(pairs: list[tuple[Fetch, Fetch]], what: str) -> None:
    """
    :raises BenchError: unless every page (the first of each pair) came
        through with the same files and hashes as the upstream's (the
        second).
    """
    for page, reference in pairs:
        if page.status != 200 or page.body is None or reference.body is None:
            raise BenchError(f"{what}: a page answered {page.status}")
        if _files(page.body) != _files(reference.body):
            raise BenchError(f"{what}: a page does not list the upstream's files")


def _page_urls(base: str, pages: list[Page]) -> list[str]:
    return [f"{base}{p.project}/" for p in pages]


def run(b: Bench) -> None:
    """
    Generate the index, start nginx as its upstream, then the four steps,
    each through a fresh proxy.
    """
    a, rep = b.args, b.report
    root = os.path.join(b.work, "big-index")
    print("generating the big index ...", flush=True)
    pages = write_index(
        root,
        pages=a.big_pages,
        page_files=a.big_page_files,
        largest_page=a.largest_page,
        list_names=a.list_names,
    )
    working_set = [
        Page(f"small-project-{i:04d}", WORKING_SET_FILES, "") for i in range(a.working_set)
    ]
    for i, page in enumerate(working_set):
        path = os.path.join(root, "simple", page.project, "index.json")
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(json.dumps(page_doc(page.project, page.files, 1000 + i)).encode())
    total = sum(p.files for p in pages)
    rep.settings["pages"] = (
        f"{len(pages)} pages, {total:,} files, the largest {pages[0].files:,}; project list "
        f"{a.list_names:,} names; working set {a.working_set} projects of "
        f"{WORKING_SET_FILES} files; upstream: nginx serving the pages from disk"
    )
    nginx = start_nginx(b.procs, b.work, root, free_port(), "1", index="index.json index.html")
    upstream = nginx.base + "simple/"
    try:
        _largest_alone(b, upstream, pages[0])
        _forty_pages(b, upstream, pages, total)
        _working_set(b, upstream, working_set)
        _project_list(b, upstream, a.list_names)
    finally:
        b.procs.stop(nginx.proc)
        shutil.rmtree(root, ignore_errors=True)


def _fresh(b: Bench, name: str, upstream: str) -> Proxy:
    return start_proxy(b.procs, b.work, name, upstream)


def _largest_alone(b: Bench, upstream: str, page: Page) -> None:
    rep = b.report
    direct = fetch(f"{upstream}{page.project}/", accept=UV_ACCEPT, encoding=PIP_ENCODING)
    proxy = _fresh(b, "pages-largest", upstream)
    try:
        with RssMonitor(proxy.pid) as mon, b.profile(proxy, "pages-largest"):
            got = fetch(f"{proxy.simple}{page.project}/", accept=UV_ACCEPT, encoding=PIP_ENCODING)
        if got.status != 200:
            raise BenchError(f"the largest page answered {got.status}")
        extra = got.total - direct.total
        per_file = extra / page.files * 1e6
        rep.add(
            Row(
                f"12. cold {page.files:,}-file page alone (uv's Accept, gzip)",
                ms(got.total),
                f"{ms(direct.total)} upstream",
                f"+{ms(extra)}",
                "≤ upstream + 250 ms",
                verdict(extra <= 0.25),
            )
        )
        rep.add(
            Row(
                "12. proxy work per file, the largest page alone",
                f"{per_file:.1f} µs",
                target="≤ 25 µs",
                met=verdict(per_file <= 25),
            )
        )
        rep.add(Row("12. peak RSS, the largest page cold", mib(mon.peak_mib)))
    finally:
        b.stop(proxy)


def _forty_pages(b: Bench, upstream: str, pages: list[Page], total: int) -> None:
    rep = b.report
    clients = 8
    want, direct_wall = fetch_each(
        _page_urls(upstream, pages), clients, accept=UV_ACCEPT, encoding=PIP_ENCODING
    )
    proxy = _fresh(b, "pages-forty", upstream)
    try:
        with RssMonitor(proxy.pid) as mon, b.profile(proxy, "pages-forty"):
            cold, cold_wall = fetch_each(
                _page_urls(proxy.simple, pages), clients, accept=UV_ACCEPT, encoding=PIP_ENCODING
            )
            warm, warm_wall = fetch_each(
                _page_urls(proxy.simple, pages), clients, accept=UV_ACCEPT, encoding=PIP_ENCODING
            )
        pairs = zip(_page_urls(proxy.simple, pages), _page_urls(upstream, pages), strict=True)
        _check([(cold[ours], want[theirs]) for ours, theirs in pairs], "cold pages")
        pairs = zip(_page_urls(proxy.simple, pages), _page_urls(upstream, pages), strict=True)
        _check([(warm[ours], want[theirs]) for ours, theirs in pairs], "warm pages")
        slowest = max(f.total for f in cold.values())
        per_file = (cold_wall - direct_wall) / total * 1e6
        rep.add(
            Row(
                f"12. {len(pages)} pages, {total:,} files, {clients} clients, cold",
                ms(cold_wall),
                f"{ms(direct_wall)} upstream",
                f"{cold_wall / direct_wall:.1f}x",
            )
        )
        rep.add(
            Row(
                "12. proxy work per file, 40 pages cold",
                f"{per_file:.1f} µs",
                target="≤ 25 µs",
                met=verdict(per_file <= 25),
            )
        )
        rep.add(
            Row(
                "12. slowest page of the 40, cold",
                ms(slowest),
                f"{ms(max(f.total for f in want.values()))} upstream",
                target="≤ 1.5 s",
                met=verdict(slowest <= 1.5),
            )
        )
        rep.add(
            Row(
                f"12. {len(pages)} pages warm, {clients} clients",
                ms(warm_wall),
                f"{ms(direct_wall)} upstream",
                f"{warm_wall / direct_wall:.2f}x",
            )
        )
        rep.add(
            Row(
                "12. peak RSS, 40 pages cold and warm",
                mib(mon.peak_mib),
                target="≤ 100 MB",
                met=verdict(mon.peak_mib * 1.048576 <= 100),
            )
        )
    finally:
        b.stop(proxy)


def _working_set(b: Bench, upstream: str, working_set: list[Page]) -> None:
    rep = b.report
    proxy = _fresh(b, "pages-working-set", upstream)
    try:
        with RssMonitor(proxy.pid) as mon:
            _, wall = fetch_each(
                _page_urls(proxy.simple, working_set), 8, accept=UV_ACCEPT, encoding=PIP_ENCODING
            )
        rep.add(
            Row(
                f"12. peak RSS, {len(working_set)}-project working set cold",
                mib(mon.peak_mib),
                f"{ms(wall)} for the set",
                target="≤ 100 MB",
                met=verdict(mon.peak_mib * 1.048576 <= 100),
            )
        )
    finally:
        b.stop(proxy)


def _project_list(b: Bench, upstream: str, names: int) -> None:
    rep = b.report
    direct = fetch(upstream, accept=HTML_TYPE, encoding=PIP_ENCODING, timeout=120)
    proxy = _fresh(b, "pages-list", upstream)
    try:
        with RssMonitor(proxy.pid) as mon:
            cold = fetch(proxy.simple, accept=HTML_TYPE, encoding=PIP_ENCODING, timeout=120)
            warm = fetch(proxy.simple, accept=HTML_TYPE, encoding=PIP_ENCODING, timeout=120)
        first = cold.first_body_byte if cold.first_body_byte is not None else cold.total
        upstream_first = direct.first_body_byte or direct.total
        rep.add(
            Row(
                f"12. project list ({names:,} names) cold, first byte",
                ms(first),
                f"{ms(upstream_first)} upstream",
                target="≤ upstream + 1 s",
                met=verdict(first - upstream_first <= 1.0),
            )
        )
        rep.add(
            Row(
                "12. project list cold, whole",
                ms(cold.total),
                f"{ms(direct.total)} upstream",
                target="≤ 6 s",
                met=verdict(cold.total <= 6.0),
            )
        )
        rep.add(
            Row(
                "12. project list warm, whole",
                ms(warm.total),
                f"{warm.size:,} bytes sent",
                target="≤ 1 s",
                met=verdict(warm.total <= 1.0),
            )
        )
        rep.add(Row("12. peak RSS, project list cold and warm", mib(mon.peak_mib)))
    finally:
        b.stop(proxy)

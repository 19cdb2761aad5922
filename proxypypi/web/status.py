# -*- test-case-name: tests.test_status -*-
"""
``GET /``: the status page, for a person with a browser or a phone.

What a newcomer needs comes first: the settings that point pip and uv
here.  The page is fast: it reads the same running totals as
``/metrics``, never the disk beyond one ``statvfs``.  Its markup (escaped
throughout, including what comes from requests: the ``Host`` header) is
`proxypypi.web.markup`'s.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from proxypypi import __version__
from proxypypi.config.urls import display_url
from proxypypi.durations import human_duration
from proxypypi.ops.metrics import RESULTS_BY_KIND, SAVED_RESULTS
from proxypypi.policy.decision import HELD_AS
from proxypypi.policy.state import describe
from proxypypi.web.address import external_base
from proxypypi.web.markup import count, counted, data, document, e, sized, table, token
from proxypypi.web.proxy import Proxy

#: Most rows shown for downloads in flight and for private projects.
MAX_ROWS = 100


def _percent(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio * 100:.1f}%"


def _upstreams(proxy: Proxy) -> str:
    rows = []
    meters = proxy.all_metrics().upstreams
    for i, m in enumerate(proxy.pool.members()):
        h = m.health
        meter = meters.get(m.url)
        state = h.state.value
        latency = h.latency
        rows.append(
            [
                count(m.group + 1),
                token(display_url(m.url)),
                e(f"{m.weight:g}"),
                f'<span class="{e(state)}" id="upstream-{i}-state">{e(state)}</span>',
                data(h.error_rate(), _percent(h.error_rate()), f"upstream-{i}-error-rate"),
                data(
                    latency,
                    "–" if latency is None else f"{latency * 1000:.0f} ms",
                    f"upstream-{i}-latency",
                ),
                count(h.outstanding),
                count(meter.requests if meter else 0, f"upstream-{i}-requests"),
                count(meter.errors if meter else 0, f"upstream-{i}-errors"),
                sized(meter.received if meter else 0, f"upstream-{i}-bytes"),
            ]
        )
    head = [
        "group",
        "upstream",
        "weight",
        "state",
        "errors (1 min)",
        "latency",
        "in flight",
        "requests",
        "failed",
        "fetched",
    ]
    return table(head, rows, {0, 2, 4, 5, 6, 7, 8, 9})


def _cache(proxy: Proxy) -> str:
    m = proxy.all_metrics()
    rows = []
    for kind, results in RESULTS_BY_KIND.items():
        for result in results:
            rows.append(
                [
                    e(f"{kind}s"),
                    e(result),
                    count(m.cache.get((kind, result), 0), f"cache-{kind}-{result}"),
                    sized(m.cache_bytes.get((kind, result), 0), f"cache-{kind}-{result}-bytes"),
                ]
            )
    kinds = table(["", "result", "responses", "sent"], rows, {2, 3})
    cached = m.cache_sent("hit", "stale")
    fetched = m.received()
    saved = m.cache_sent(*SAVED_RESULTS)
    ratio = m.hit_ratio()
    summary = (
        "<p>"
        f"Hit ratio {data(ratio, _percent(ratio), 'hit-ratio')} "
        f"(pages {data(m.hit_ratio('page'), _percent(m.hit_ratio('page')), 'hit-ratio-page')}, "
        f"files {data(m.hit_ratio('file'), _percent(m.hit_ratio('file')), 'hit-ratio-file')}). "
        f"Served from cache {sized(cached, 'bytes-from-cache')}; "
        f"fetched from upstreams {sized(fetched, 'bytes-fetched')}; "
        f"saved {sized(saved, 'bytes-saved')}."
        "</p>"
        '<p class="muted">A hit needed no upstream transfer of its own: a fresh or stale '
        "page, a stored file, or a file joined while another request downloads it. "
        "Saved counts the bytes sent for those.</p>"
    )
    return summary + kinds


def _requests(proxy: Proxy) -> str:
    by_route: dict[str, int] = {}
    errors: dict[str, int] = {}
    metrics = proxy.all_metrics()
    for (route, code), n in metrics.requests.items():
        by_route[route] = by_route.get(route, 0) + n
        if code >= 500:
            errors[route] = errors.get(route, 0) + n
    total = sum(by_route.values())
    rows = [
        [
            e(route),
            count(n, f"requests-{route}"),
            count(errors.get(route, 0)),
            sized(metrics.sent.get(route, 0), f"sent-{route}"),
        ]
        for route, n in sorted(by_route.items())
    ]
    sent = sum(metrics.sent.values())
    return (
        f"<p>{counted(total, 'request', 'requests-total')} answered, "
        f"{sized(sent, 'sent-total')} sent.</p>"
        + table(["route", "requests", "5xx", "sent"], rows, {1, 2, 3})
    )


def _storage(proxy: Proxy) -> str:
    f = proxy.storage_figures()
    files = (
        '<span id="storage-files">measuring…</span>'
        if f.files is None
        else f"{counted(f.files, 'file', 'storage-files')}, {sized(f.bytes, 'storage-bytes')}"
    )
    limit = "" if f.limit is None else f" of at most {sized(f.limit, 'storage-limit')}"
    parts = [
        f"<li>Upstream files: {files}{limit}; evicted "
        f"{counted(f.evicted_files, 'file', 'evicted-files')} "
        f"({sized(f.evicted_bytes, 'evicted-bytes')}).</li>",
        f"<li>Uploads: {counted(f.private_files, 'file', 'private-files')}, "
        f"{sized(f.private_bytes, 'private-bytes')}.</li>",
    ]
    if f.disk_free is not None and f.disk_total is not None:
        parts.append(
            f"<li>Disk: {sized(f.disk_free, 'disk-free')} free of "
            f"{sized(f.disk_total, 'disk-total')} "
            f"(<code>{e(proxy.storage.root)}</code>).</li>"
        )
    return (
        "<ul>"
        + "".join(parts)
        + '</ul><p><a href="browse/">Browse the projects stored here</a>.</p>'
    )


def _downloads(proxy: Proxy) -> str:
    downloads = proxy.all_downloads()
    if not downloads:
        return '<p id="downloads">No download running.</p>'
    rows = []
    for key, written, total in downloads[:MAX_ROWS]:
        if total:
            bar = f'<progress value="{written}" max="{total}"></progress>'
            share = f" {written * 100 // total}%"
        else:
            bar, share = "", ""
        rows.append(
            [
                token(f"{key.project}/{key.filename}"),
                sized(written),
                sized(total),
                bar + e(share),
            ]
        )
    more = len(downloads) - MAX_ROWS
    tail = f"<p>… and {more} more.</p>" if more > 0 else ""
    return (
        f"<p>{counted(len(downloads), 'download', 'downloads')} running.</p>"
        + table(["file", "received", "size", "progress"], rows, {1, 2})
        + tail
    )


def _private(proxy: Proxy) -> str:
    names = proxy.private.names()
    if not names:
        return '<p id="private">No private project.</p>'
    items = []
    for name in names[:MAX_ROWS]:
        project = proxy.private.project(name)
        files = len(project.files) if project is not None else 0
        link = f'<a href="browse/{e(name)}/">{e(name)}</a>'
        items.append(f"<li>{link} ({counted(files, 'file')})</li>")
    more = len(names) - MAX_ROWS
    tail = f"<li>… and {more} more</li>" if more > 0 else ""
    return (
        f"<p>{counted(len(names), 'private project', 'private')}.</p><ul>"
        + "".join(items)
        + tail
        + "</ul>"
    )


def _policy(proxy: Proxy) -> str:
    """
    The policy in force and what it holds back now, on the pages in use.
    """
    rules, ledger = proxy.policy.rules, proxy.policy.ledger
    parts = [f'<p id="policy">{e(describe(rules))}.</p>']
    if not rules.active:
        return parts[0]
    held = ledger.by_reason()
    would = "would be " if rules.report_only else ""
    shown = [f"{count(n, f'held-{r}')} {e(HELD_AS[r])}" for r, n in held.items() if n]
    total = sum(held.values())
    parts.append(
        f"<p>{counted(total, 'file', 'held')} {would}held back now"
        + (f" ({', '.join(shown)})" if shown else "")
        + f" on {counted(ledger.projects(), 'page')} in use.</p>"
    )
    upcoming = ledger.next_release()
    if upcoming is not None:
        when, what = upcoming
        left = human_duration(when - proxy.clock.seconds())
        parts.append(f'<p>Next release to pass: <span id="next-release">{e(what)} in {e(left)}'
                     "</span>.</p>")  # fmt: skip
    refused = sum(ledger.refused.values())
    parts.append(f"<p>{counted(refused, 'file request', 'refused')} {would}refused.</p>")
    return "".join(parts)


def _usage(proxy: Proxy, base: str) -> str:
    index = base + "simple/"
    # pip's trusted-host takes host:port; base is scheme://host[:port]/.
    host = base.split("://", 1)[1].rstrip("/")
    plain = base.startswith("http:")
    pip_conf = f"[global]\nindex-url = {index}\n" + (f"trusted-host = {host}\n" if plain else "")
    env = f"PIP_INDEX_URL={index}\n" + (f"PIP_TRUSTED_HOST={host}\n" if plain else "")
    uv = (
        f"UV_DEFAULT_INDEX={index}\n\n"
        f'# or in uv.toml:\n[[index]]\nurl = "{index}"\ndefault = true\n'
    )
    parts = [
        f'<p>Index URL: <code id="index-url">{e(index)}</code></p>',
        "<p>pip, in <code>pip.conf</code>:</p>",
        f'<pre id="pip-conf">{e(pip_conf)}</pre>',
        "<p>or in the environment:</p>",
        f'<pre id="pip-env">{e(env)}</pre>',
        "<p>uv:</p>",
        f'<pre id="uv">{e(uv)}</pre>',
    ]
    if plain:
        parts.append(
            '<p class="muted">Over plain http, pip keeps nothing in its own cache unless '
            "the host is a trusted host; hence the line above.</p>"
        )
    if proxy.auth is not None:
        upload = (
            f"twine upload --repository-url {base} dist/*\n"
            f"uv publish --publish-url {base}legacy/ dist/*\n"
        )
        parts.append("<p>Upload private packages:</p>")
        parts.append(f'<pre id="upload">{e(upload)}</pre>')
    return "".join(parts)


def render_status(proxy: Proxy, request: IRequest) -> bytes:
    """
    The status page for ``request`` (its address, as the client sees it,
    goes into the configuration snippets).
    """
    base = external_base(request, proxy.config.trusted_proxies)
    uptime = proxy.clock.seconds() - proxy.started_at
    offline = ""
    if proxy.config.offline:
        offline = " <strong>(offline: serving only what is stored)</strong>"
    sections = [
        ("Use this index", _usage(proxy, base)),
        ("Upstreams", _upstreams(proxy)),
        ("Cache", _cache(proxy)),
        ("Requests", _requests(proxy)),
        ("Storage", _storage(proxy)),
        ("Downloads in flight", _downloads(proxy)),
        ("Private projects", _private(proxy)),
        ("Supply-chain policy", _policy(proxy)),
    ]
    body = "".join(f"<h2>{e(title)}</h2>{content}" for title, content in sections)
    return document(
        f"proxypypi {__version__}",
        f'<h1>proxypypi <span id="version">{e(__version__)}</span></h1>'
        f"<p>Up {data(round(uptime, 3), human_duration(uptime), 'uptime')}{offline}.</p>"
        '<nav><a href="browse/">browse what is cached</a><a href="simple/">index</a>'
        '<a href="health">health</a><a href="metrics">metrics</a></nav>'
        f"{body}",
    )

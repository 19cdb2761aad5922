"""
The pages for people in a real browser: headless chromium
(`tests.support.chromium`) against the real service on 127.0.0.1, laid
out at 1200 pixels, at 1000 (just wide enough for tables) and at a
phone's 390.  Nothing may stick out sideways,
the search box must find a project, and its link must lead to the
project's files.  Skipped where no chromium is installed
(``apt-get install chromium``).

The screenshots land in the test's temporary directory, or in the
directory ``PROXYPYPI_SCREENSHOTS`` names, for a person to look at.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
import pytest_twisted
import treq

from proxypypi.testing import make_wheel
from tests.support.chromium import Chromium, find_chromium
from tests.support.proxies import RunningProxy, Upstream, committed

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="needs chromium")

#: A name long enough to overflow a narrow table if nothing wraps it.
LONG = "a-rather-long-project-name-that-must-wrap-in-narrow-layouts-and-tables"

#: The window's width, the page's (less a scroll bar), how wide its content
#: is, and what sticks out past its right edge.
MEASURE = """(() => {
  const page = document.documentElement, client = page.clientWidth;
  const over = [...document.querySelectorAll("body *")]
    .filter(el => el.getBoundingClientRect().right > client + 0.5)
    .map(el => el.tagName.toLowerCase() + ": " + (el.textContent || "").slice(0, 40));
  return {width: innerWidth, client, scroll: page.scrollWidth, over: over.slice(0, 10)};
})()"""

#: The width of a PNG, from its header.
_PNG_WIDTH = struct.Struct(">I")


async def fetch_some(proxy: RunningProxy, upstream: Upstream) -> None:
    """
    Have the proxy store one file of each of a few projects, as pip would.
    """
    upstream.index.add(make_wheel(LONG, "1.0"), upload_time="2025-03-04T05:06:07Z")
    for project in ("proto-alpha", "proto-beta", "proto-gamma", LONG):
        response = await treq.get(
            f"{proxy.simple}{project}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            persistent=False,
        )
        page: dict[str, Any] = await response.json()
        url = page["files"][0]["url"]
        response = await treq.get(
            proxy.base + url[url.index("files/") :].lstrip("/"), persistent=False
        )
        await treq.content(response)
    await committed(proxy)


@pytest_twisted.ensureDeferred
async def test_pages_fit_and_search_works(
    upstream: Upstream, proxy: RunningProxy, tmp_path: object
) -> None:
    """
    The listing, a project's page and the status page fit at 1200 and
    1000 pixels and on a phone; typing a name in the search box and
    submitting finds the project, whose page shows its stored file and
    its hash.
    """
    executable = find_chromium()
    assert executable is not None
    shots = os.environ.get("PROXYPYPI_SCREENSHOTS") or str(tmp_path)
    os.makedirs(shots, exist_ok=True)
    await fetch_some(proxy, upstream)
    beta = next(d for name, d in upstream.dists.items() if name.startswith("proto_beta-1.1"))

    browser = await Chromium.start(executable, os.path.join(str(tmp_path), "profile"))
    try:
        pages = {
            "list": "browse/",
            "project": "browse/proto-beta/?all=1",
            "long": f"browse/{LONG}/",
            "status": "",
        }
        for width, phone in ((1200, False), (1000, False), (390, True)):
            await browser.viewport(width, 900, phone)
            for label, path in pages.items():
                await browser.load(proxy.base + path)
                measured = await browser.evaluate(MEASURE)
                assert measured["width"] == width, (label, measured)
                assert measured["scroll"] <= measured["client"], (label, measured)
                assert measured["over"] == [], (label, measured)
                png = await browser.screenshot(os.path.join(shots, f"{label}-{width}.png"))
                assert png.startswith(b"\x89PNG")
                assert _PNG_WIDTH.unpack_from(png, 16)[0] == width

        # The status page leads with what to configure, and links here.
        await browser.load(proxy.base)
        first = await browser.evaluate("document.querySelector('h2').textContent")
        assert first == "Use this index"
        await browser.submit("document.querySelector('a[href=\"browse/\"]').click()")
        assert await browser.evaluate("location.pathname") == "/browse/"
        assert await browser.evaluate("document.getElementById('matching').value") == "4"

        # The search, typed as a person would, in any spelling of the name.
        await browser.submit(
            "const q = document.querySelector('input[name=q]');"
            "q.value = 'PROTO_Beta'; q.form.requestSubmit();"
        )
        assert await browser.evaluate("location.search") == "?q=PROTO_Beta"
        names = await browser.evaluate(
            "[...document.querySelectorAll('tbody td:first-child a')].map(a => a.textContent)"
        )
        assert names == ["proto-beta"]
        assert await browser.evaluate("document.querySelector('input[name=q]').value") == (
            "PROTO_Beta"
        )
        await browser.submit("document.querySelector('tbody td:first-child a').click()")
        assert await browser.evaluate("document.querySelector('h1').textContent") == "proto-beta"
        hashes = await browser.evaluate(
            "[...document.querySelectorAll('td code')].map(c => c.textContent)"
        )
        assert hashes == [beta.sha256]
    finally:
        await browser.close()

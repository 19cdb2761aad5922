"""
Item 11 (no server-side request forgery) and item 12 (credentials in
upstream URLs): the real service on 127.0.0.1 in front of a hostile
upstream whose pages point at another local service.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.config.settings import build_config
from proxypypi.config.urls import ConfigError, display_url, parse_file_host
from proxypypi.service.tap import Options
from proxypypi.testing import serve
from proxypypi.upstream.reach import Reach, Refused, special_address
from tests.support.hostile import WHEEL, Routes, Scripted, json_page
from tests.support.proxies import running_proxy

SECRET = b"the internal service's secret"


class ReachTests(SynchronousTestCase):
    def test_special_addresses(self) -> None:
        for address, kind in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("192.168.0.1", "private"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("100.64.0.1", "special-purpose"),
            ("not an address", "unreadable"),
        ]:
            self.assertEqual(special_address(address), kind, address)
        self.assertIsNone(special_address("93.184.215.14"))
        self.assertIsNone(special_address("2606:4700::1"))

    def test_judge(self) -> None:
        reach = Reach(("mirror.example", 443))
        self.assertFalse(reach.judge("https", "mirror.example", 443))
        self.assertTrue(reach.judge("https", "files.example", 443))
        self.assertTrue(reach.judge("http", "mirror.example", 8080))
        for scheme, host in [("file", "x"), ("http", "127.0.0.1"), ("https", "[::1]")]:
            self.assertRaises(Refused, reach.judge, scheme, host, 443)

    def test_judge_with_file_hosts(self) -> None:
        reach = Reach(("10.0.0.5", 80), frozenset({("files.corp", None), ("10.0.0.6", 8080)}))
        self.assertFalse(reach.judge("http", "10.0.0.5", 80))
        self.assertFalse(reach.judge("https", "FILES.corp", 443))
        self.assertFalse(reach.judge("http", "10.0.0.6", 8080))
        self.assertRaises(Refused, reach.judge, "https", "files.corp", 8443)
        self.assertRaises(Refused, reach.judge, "https", "public.example", 443)

    def test_parse_file_host(self) -> None:
        self.assertEqual(parse_file_host("Files.Corp"), ("files.corp", None))
        self.assertEqual(parse_file_host("files.corp:8443"), ("files.corp", 8443))
        self.assertEqual(parse_file_host("[fd00::1]:81"), ("fd00::1", 81))
        for bad in ("https://files.corp/", "files.corp/x", "files.corp:99999", "u@h", ""):
            self.assertRaises(ConfigError, parse_file_host, bad)

    def test_option_and_toml_key(self) -> None:
        options = Options()
        options.parseOptions(
            ["--upstream", "https://m.example/simple/", "--file-host", "files.corp:8443",
             "--storage", self.mktemp()]
        )  # fmt: skip
        self.assertEqual(options["config_obj"].file_hosts, ("files.corp:8443",))
        toml = {"upstream": "https://m.example/simple/", "file-hosts": ["a.corp", "b.corp:81"]}
        self.assertEqual(build_config(toml).file_hosts, ("a.corp", "b.corp:81"))
        with self.assertRaises(ConfigError) as e:
            build_config({**toml, "file-hosts": ["https://a.corp/"]})
        self.assertIn("must be HOST or HOST:PORT", str(e.exception))

    def test_display_url(self) -> None:
        self.assertEqual(
            display_url("https://u:p@h.example/simple/"), "https://u:***@h.example/simple/"
        )
        self.assertEqual(
            display_url("https://tok@h.example/simple/"), "https://***@h.example/simple/"
        )


@pytest_twisted.async_yield_fixture
async def secret() -> AsyncIterator[tuple[Routes, str]]:
    """
    Another service on this host, which must never be reached.
    """
    routes = Routes(
        {"/secret": Scripted(200, {}, SECRET), "/files/" + WHEEL: Scripted(200, {}, SECRET)}
    )
    port, base = await serve(reactor, routes)
    try:
        yield routes, base
    finally:
        await port.stopListening()


@pytest_twisted.async_yield_fixture
async def hostile() -> AsyncIterator[tuple[Routes, str]]:
    routes = Routes()
    port, base = await serve(reactor, routes)
    try:
        yield routes, base
    finally:
        await port.stopListening()


async def fetch_file(upstream: str, storage: str, **settings: object) -> tuple[int, bytes, bytes]:
    async with running_proxy([upstream], storage, **settings) as running:
        response = await treq.get(f"{running.base}files/proto-alpha/{WHEEL}")
        body = await response.content()
        health = await (await treq.get(f"{running.base}health")).content()
        return response.code, body, health


@pytest.mark.parametrize("target", ["other-port", "localhost", "redirect"])
@pytest_twisted.ensureDeferred
async def test_file_urls_to_local_services_are_refused(
    target: str, hostile: tuple[Routes, str], secret: tuple[Routes, str], tmp_path: object
) -> None:
    """
    A page entry pointing at another port of 127.0.0.1, at a name that
    resolves there (the connected address is what counts), or an upstream
    file URL redirecting there: 502, and the other service sees nothing.
    """
    routes, base = hostile
    secret_routes, secret_base = secret
    url = {
        "other-port": secret_base + "secret",
        "localhost": secret_base.replace("127.0.0.1", "localhost") + "secret",
        "redirect": base + "files/x",
    }[target]
    routes.routes["/simple/proto-alpha/"] = json_page(url)
    routes.routes["/files/x"] = Scripted(302, {"location": secret_base + "secret"}, b"")
    code, body, health = await fetch_file(base + "simple/", os.path.join(str(tmp_path), "d"))
    assert code == 502, body
    assert b"refused to fetch" in body and SECRET not in body
    assert secret_routes.seen == []
    # The refusal is not the member's failure: it stays in rotation.
    assert json.loads(health)["upstreams"][0]["consecutive-failures"] == 0


@pytest_twisted.ensureDeferred
async def test_file_host_allows_an_internal_host(
    hostile: tuple[Routes, str], secret: tuple[Routes, str], tmp_path: object
) -> None:
    """
    ``--file-host`` names a trusted internal host: its files are fetched.
    """
    routes, base = hostile
    _, secret_base = secret
    routes.routes["/simple/proto-alpha/"] = json_page(secret_base + "secret")
    host = secret_base.removeprefix("http://").rstrip("/")
    code, body, _ = await fetch_file(
        base + "simple/", os.path.join(str(tmp_path), "d"), file_hosts=(host,)
    )
    assert (code, body) == (200, SECRET)


@pytest_twisted.ensureDeferred
async def test_credentials_sent_and_never_shown(
    hostile: tuple[Routes, str], tmp_path: object
) -> None:
    """
    Credentials in an upstream URL go to that upstream as Basic
    authorization (not to other hosts), and appear in no error body, no
    ``/health`` and no log line.
    """
    routes, base = hostile
    upstream = base.replace("http://", "http://alice:S3CRET%21@") + "simple/"
    routes.routes["/simple/proto-alpha/"] = json_page(base + "files/" + WHEEL)
    routes.routes["/files/" + WHEEL] = Scripted(500, {}, b"broken")
    logged: list[str] = []

    def observe(event: dict[str, object]) -> None:
        logged.append(repr(event))

    globalLogPublisher.addObserver(observe)
    try:
        code, body, health = await fetch_file(upstream, os.path.join(str(tmp_path), "d"))
    finally:
        globalLogPublisher.removeObserver(observe)
    assert code == 502
    expected = "Basic YWxpY2U6UzNDUkVUIQ=="  # alice:S3CRET!
    assert ("/simple/proto-alpha/", expected) in routes.seen
    assert ("/files/" + WHEEL, expected) in routes.seen
    for shown in (body.decode(), repr(health), *logged):
        assert "S3CRET" not in shown and "YWxpY2U6" not in shown

# -*- test-case-name: tests.test_config,tests.test_upstream -*-
"""
Upstream and proxy URLs: their canonical form, the credentials they carry
(sent as Basic authorization, never shown), and the proxy the environment
names.
"""

from __future__ import annotations

import base64
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit


class ConfigError(ValueError):
    """
    A setting is missing or wrong; the message names it and says how to fix it.
    """



def display_url(url: str) -> str:
    """
    An upstream or proxy URL as shown in logs, labels and on the status
    page: the password replaced by ``***``, and a user name without a
    password too (it is then a token, as pip reads it).
    """
    parts = urlsplit(url)
    if parts.username is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = "***" if parts.password is None else f"{parts.username}:***"
    return urlunsplit((parts.scheme, f"{user}@{netloc}", parts.path, parts.query, ""))


def without_credentials(url: str) -> str:
    """
    ``url`` without its user and password: the address requests go to and
    the name the upstream is known by everywhere (pages' sources, logs,
    errors, ``/health``), so a credential cannot leak through any of them.
    """
    parts = urlsplit(url)
    if parts.username is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def basic_authorization(url: str) -> bytes | None:
    """
    The Basic ``Authorization`` (or ``Proxy-Authorization``) value for the
    credentials a URL carries (``https://user:password@host/``,
    percent-escapes decoded, as pip reads an index URL), or ``None``.
    """
    parts = urlsplit(url.strip())
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return b"Basic " + base64.b64encode(pair.encode("utf-8"))


def parse_upstream_url(url: str) -> str:
    """
    Check an upstream URL and give it its canonical form (trailing slash).

    :raises ConfigError: when it is not an absolute http(s) URL.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ConfigError(f"upstream URL {url!r} is malformed: {e}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"upstream URL {url!r} is not an http(s) URL; give the simple index's "
            "address, e.g. https://mirror.example/simple/"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"upstream URL {url!r} must not have a query or fragment")
    if not text.endswith("/"):
        text += "/"
    return text


def parse_file_host(value: str) -> tuple[str, int | None]:
    """
    A ``--file-host`` value, ``HOST`` or ``HOST:PORT`` (``[v6]:PORT``), as
    a lowercase host and the port (``None``: the scheme's default).

    :raises ConfigError: for anything else (a URL, a path, a bad port).
    """
    text = value.strip()
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"file host {value!r} is malformed: {e}") from e
    if not parts.hostname or parts.path or parts.query or parts.fragment or "@" in text:
        raise ConfigError(
            f"file host {value!r} must be HOST or HOST:PORT (files.mirror.example:8443), "
            "without a scheme or path"
        )
    return parts.hostname.lower(), port


def proxy_address(url: str) -> tuple[str, int]:
    """
    Host and port of an ``--upstream-proxy`` URL (``http://host[:port]``,
    port 3128 by default, as most proxies use).

    :raises ConfigError: for anything else.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"upstream proxy {url!r} is malformed: {e}") from e
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"upstream proxy {url!r} must look like http://proxy.example:3128")
    return parts.hostname, port or 3128


def environment_proxy(url: str) -> str | None:
    """
    The HTTP proxy the environment names for reaching ``url``, as pip, uv
    and curl read it: ``https_proxy`` or ``http_proxy`` by the URL's
    scheme, else ``all_proxy`` (each also in upper case), unless
    ``no_proxy`` exempts the URL's host.  Used only when no
    ``--upstream-proxy`` is given.

    :raises ConfigError: when the proxy named is not an ``http://`` URL.
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    # proxy_bypass reads no_proxy (on Linux: the environment's rules, as curl).
    if not proxy or urllib.request.proxy_bypass(parts.hostname or "", proxies):
        return None
    try:
        proxy_address(proxy)
    except ConfigError as e:
        raise ConfigError(
            f"the environment's {parts.scheme}_proxy (or all_proxy) for {display_url(url)}: {e}; "
            "set --upstream-proxy, or exempt the host in no_proxy"
        ) from e
    return proxy



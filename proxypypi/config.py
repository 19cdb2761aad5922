# -*- test-case-name: tests.test_config -*-
"""
The service's settings, validated once, as immutable values.

Both entry points (the twistd plugin's options and ``proxypypi.tac`` with
its TOML file) end up here, so a setting means the same thing whichever way
it was given.
"""

from __future__ import annotations

import ipaddress
import tomllib
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

DEFAULT_LISTEN = "tcp:3141:interface=127.0.0.1"
DEFAULT_STORAGE = "./proxypypi-data"


class ConfigError(ValueError):
    """
    A setting is missing or wrong; the message names it and says how to fix it.
    """


def _positive(name: str) -> Any:
    def check(_instance: object, _attribute: object, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be a positive number, not {value!r}")

    return check


@attrs.frozen
class UpstreamConfig:
    """
    One upstream simple index (or mirror).

    The timeouts default low enough that a member that stalls is given up
    on, and the next one asked, well before an installer's own read timeout
    (pip's is 15 s) fails the install.

    :ivar url: the simple-index base URL, always ending in ``/``.
    :ivar weight: this member's share of its group's load.
    :ivar connect_timeout: seconds to establish a connection.
    :ivar first_byte_timeout: seconds from request to response headers.
    :ivar idle_timeout: seconds without a byte mid-body before the member
        counts as failed for that request; ``None`` uses the service's
        ``download-idle-timeout``.
    """

    url: str
    weight: float = attrs.field(default=1.0, validator=_positive("weight"))
    connect_timeout: float = attrs.field(default=5.0, validator=_positive("connect-timeout"))
    first_byte_timeout: float = attrs.field(default=10.0, validator=_positive("first-byte-timeout"))
    idle_timeout: float | None = attrs.field(default=None, validator=_positive("idle-timeout"))


def display_url(url: str) -> str:
    """
    An upstream URL as shown in labels and on the status page: without a
    password, should the URL carry credentials.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, ""))


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


#: A ``--trusted-proxy`` value: a network (a single address is a network of
#: one), or ``unix`` for every client of a Unix socket endpoint.
TrustedProxy = ipaddress.IPv4Network | ipaddress.IPv6Network | str


def parse_trusted_proxies(values: Iterable[str]) -> tuple[TrustedProxy, ...]:
    """
    Parse ``--trusted-proxy`` values: addresses (``10.0.0.5``, ``::1``),
    networks (``10.0.0.0/8``), or ``unix``.

    :raises ConfigError: naming a value that is none of these.
    """
    out: list[TrustedProxy] = []
    for value in values:
        text = value.strip()
        if text == "unix":
            out.append(text)
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError as e:
            raise ConfigError(
                f"trusted proxy {value!r} is not an address, a network (10.0.0.0/8) or 'unix'"
            ) from e
    return tuple(out)


def parse_upstream_group(spec: str) -> tuple[UpstreamConfig, ...]:
    """
    Parse one ``--upstream`` value: a URL, or several separated by commas
    that form one group of mirrors sharing the load.
    """
    urls = [u for u in (s.strip() for s in spec.split(",")) if u]
    if not urls:
        raise ConfigError(f"empty upstream {spec!r}")
    return tuple(UpstreamConfig(parse_upstream_url(u)) for u in urls)


#: Keys of one ``[[upstream]]`` table (besides ``url`` and ``group``) and
#: the `UpstreamConfig` field each sets.
_UPSTREAM_KEYS: Mapping[str, str] = {
    "weight": "weight",
    "connect-timeout": "connect_timeout",
    "first-byte-timeout": "first_byte_timeout",
    "idle-timeout": "idle_timeout",
}


def _upstream_table(table: Mapping[str, object]) -> tuple[str | None, UpstreamConfig]:
    """
    One ``[[upstream]]`` table: its group name (``None``: a group of its
    own) and the member it describes.
    """
    url = table.get("url")
    if not isinstance(url, str):
        raise ConfigError(f'an [[upstream]] table needs url = "..." (got {dict(table)!r})')
    group = table.get("group")
    if group is not None and (isinstance(group, bool) or not isinstance(group, int | str)):
        raise ConfigError(f"upstream {url}: group must be a number or a name, not {group!r}")
    kwargs: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("_", "-")
        if key in ("url", "group"):
            continue
        if key not in _UPSTREAM_KEYS:
            known = ", ".join(["url", "group", *_UPSTREAM_KEYS])
            raise ConfigError(f"upstream {url}: unknown key {raw_key!r} (known: {known})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"upstream {url}: {key} must be a number, not {value!r}")
        kwargs[_UPSTREAM_KEYS[key]] = float(value)
    try:
        member = UpstreamConfig(parse_upstream_url(url), **kwargs)
    except ConfigError as e:
        if url in str(e):
            raise
        raise ConfigError(f"upstream {url}: {e}") from e
    return (None if group is None else str(group)), member


def parse_upstreams(value: object) -> tuple[tuple[UpstreamConfig, ...], ...]:
    """
    The ``upstream`` setting of a TOML file, in any of its forms: a string
    (one ``--upstream`` value), a list of such strings, or a list of
    ``[[upstream]]`` tables (``url``, and optionally ``group``, ``weight``
    and the timeouts), which may be mixed with strings.

    Tables with the same ``group`` value form one group; each string, and
    each table without a group, is a group of its own.  Groups rank in the
    order they first appear.
    """
    items = value if isinstance(value, list) else [value]
    groups: list[list[UpstreamConfig]] = []
    named: dict[str, int] = {}
    for item in items:
        if isinstance(item, str):
            groups.append(list(parse_upstream_group(item)))
        elif isinstance(item, dict):
            group, member = _upstream_table(item)
            if group is None:
                groups.append([member])
            elif group in named:
                groups[named[group]].append(member)
            else:
                named[group] = len(groups)
                groups.append([member])
        else:
            raise ConfigError(
                "upstream must be a URL string, a list of them, or [[upstream]] tables; "
                f"got {item!r}"
            )
    return tuple(tuple(g) for g in groups)


@attrs.frozen
class Config:
    """
    Everything the service needs to start.

    :ivar upstreams: groups in rank order; each group's members share load.
    :ivar page_ttl: seconds a cached project page counts as fresh.
    :ivar client_max_age: ``Cache-Control: max-age`` sent with index pages;
        short, because installers make no request at all within it.
    :ivar download_idle_timeout: seconds without a byte from the upstream
        after which a response is abandoned (and the download resumed from
        another member): the default of each upstream's ``idle-timeout``.
        Under pip's 15 s read timeout, so the switch happens before the
        installer gives up.
    :ivar max_page_bytes: the largest upstream page accepted.
    :ivar page_memory: bytes of project pages (parsed and rendered) held in
        memory; the least recently used beyond it are read from disk again.
    :ivar negative_ttl: seconds an upstream 404 for a project is remembered.
    :ivar offline: serve only what is stored; never contact an upstream.
    :ivar forget_removed: drop stored files from pages once the upstream
        stops listing them (by default they stay installable).
    :ivar max_cache_size: bytes of upstream files to keep; least recently
        used files are evicted beyond it.  ``None``: unbounded.
    :ivar auth_file: an htpasswd file (bcrypt entries) of users who may
        upload; ``None`` disables uploads.
    :ivar auth_read: require a valid user for reads as well.
    :ivar max_upload_size: the largest upload accepted, in bytes.
    :ivar allow_overwrite: let an upload replace a private file of the same
        name with different content.
    :ivar merge_upstream: private projects whose upstream files stay listed.
    :ivar log_format: ``text`` or ``json`` (one JSON object per line).
    :ivar trusted_proxies: addresses whose ``X-Forwarded-*`` headers count.
    :ivar upstream_proxy: an HTTP proxy URL (``http://[user:password@]host:port``)
        for reaching upstreams: https ones through a ``CONNECT`` tunnel
        (TLS still verified end to end), plain-http ones as proxied requests.
        ``None``: the one the environment names (`environment_proxy`), if any.
    """

    upstreams: tuple[tuple[UpstreamConfig, ...], ...]
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    storage: str = DEFAULT_STORAGE
    page_ttl: float = attrs.field(default=600.0, validator=_positive("page-ttl"))
    client_max_age: int = 60
    download_idle_timeout: float = attrs.field(
        default=10.0, validator=_positive("download-idle-timeout")
    )
    max_page_bytes: int = 128 * 1024 * 1024
    page_memory: int = attrs.field(default=128 * 1024 * 1024, validator=_positive("page-memory"))
    negative_ttl: float = 60.0
    offline: bool = False
    forget_removed: bool = False
    max_cache_size: int | None = None
    auth_file: str | None = None
    auth_read: bool = False
    max_upload_size: int = 1024**3
    allow_overwrite: bool = False
    merge_upstream: tuple[str, ...] = ()
    log_format: str = attrs.field(default="text", validator=attrs.validators.in_(("text", "json")))
    trusted_proxies: tuple[str, ...] = ()
    upstream_proxy: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.upstreams:
            raise ConfigError(
                "no upstream given: add --upstream URL (e.g. "
                "--upstream https://mirror.example/simple/)"
            )
        if not self.listen:
            raise ConfigError("no listen endpoint given")
        parse_trusted_proxies(self.trusted_proxies)
        if self.auth_read and self.auth_file is None:
            raise ConfigError(
                "--auth-read needs --auth-file FILE (an htpasswd file of bcrypt entries, "
                "made with htpasswd -cB FILE USER)"
            )
        if self.upstream_proxy is not None:
            proxy_address(self.upstream_proxy)
        seen: set[str] = set()
        for group in self.upstreams:
            if not group:
                raise ConfigError("an upstream group has no member")
            for member in group:
                if member.url in seen:
                    raise ConfigError(f"upstream {member.url} is listed twice")
                seen.add(member.url)

    def describe(self) -> str:
        """
        The upstreams as understood, for the first log line: groups in rank
        order (``>``), members of a group joined by ``+`` with their weights.
        """

        def member(u: UpstreamConfig, shared: bool) -> str:
            url = display_url(u.url)
            return f"{url} (weight {u.weight:g})" if shared else url

        groups = [" + ".join(member(u, len(group) > 1) for u in group) for group in self.upstreams]
        return " > ".join(f"[{g}]" for g in groups)


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: object) -> int:
    """
    A size in bytes from ``123``, ``"512M"``, ``"50G"`` or ``"1.5T"``
    (binary units; a trailing ``B`` or ``iB`` is allowed).

    :raises ValueError: for anything else.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    number = float(text[: len(text) - len(unit)])
    if number < 0:
        raise ValueError(f"negative size {value!r}")
    return int(number * _UNITS[unit])


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a yes/no value: {value!r}")


#: TOML key (and option name) to Config field and converter.
_SCALARS: Mapping[str, tuple[str, Any]] = {
    "storage": ("storage", str),
    "page-ttl": ("page_ttl", float),
    "client-max-age": ("client_max_age", int),
    "download-idle-timeout": ("download_idle_timeout", float),
    "max-page-bytes": ("max_page_bytes", parse_size),
    "page-memory": ("page_memory", parse_size),
    "negative-ttl": ("negative_ttl", float),
    "offline": ("offline", _flag),
    "forget-removed": ("forget_removed", _flag),
    "max-cache-size": ("max_cache_size", parse_size),
    "auth-file": ("auth_file", str),
    "auth-read": ("auth_read", _flag),
    "max-upload-size": ("max_upload_size", parse_size),
    "allow-overwrite": ("allow_overwrite", _flag),
    "log-format": ("log_format", str),
    "upstream-proxy": ("upstream_proxy", str),
}

#: TOML keys (and repeatable options) holding lists of strings.
_LISTS: Mapping[str, str] = {
    "merge-upstream": "merge_upstream",
    "trusted-proxy": "trusted_proxies",
}


def _as_list(key: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{key} must be a string or a list of strings")


def build_config(
    settings: Mapping[str, object], upstreams: Iterable[str] = (), listen: Iterable[str] = ()
) -> Config:
    """
    Build a `Config` from option-style keys (``page-ttl``; underscores are
    accepted too).  ``upstreams`` and ``listen``, when not empty, replace the
    ones in ``settings``: the command line overrides the file.

    :raises ConfigError: naming the first bad or unknown key.
    """
    kwargs: dict[str, Any] = {}
    file_upstreams: tuple[tuple[UpstreamConfig, ...], ...] = ()
    file_listen: list[str] = []
    for raw_key, value in settings.items():
        key = raw_key.replace("_", "-")
        if value is None:
            continue
        if key == "upstream" or key == "upstreams":
            file_upstreams = parse_upstreams(value)
        elif key == "listen":
            file_listen = _as_list(key, value)
        elif key in _LISTS:
            kwargs[_LISTS[key]] = tuple(_as_list(key, value))
        elif key in _SCALARS:
            field, convert = _SCALARS[key]
            try:
                kwargs[field] = convert(value)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{key} has a bad value {value!r}: {e}") from e
        else:
            raise ConfigError(f"unknown setting {raw_key!r}")
    cli_groups = tuple(parse_upstream_group(g) for g in upstreams)
    kwargs["upstreams"] = cli_groups or file_upstreams
    kwargs["listen"] = tuple(listen) or tuple(file_listen) or (DEFAULT_LISTEN,)
    try:
        return Config(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e


def load_toml(path: str) -> dict[str, object]:
    """
    Read a TOML settings file.

    :raises ConfigError: when it cannot be read or parsed.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e

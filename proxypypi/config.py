# -*- test-case-name: tests.test_config -*-
"""
The service's settings, validated once, as immutable values.

Both entry points (the twistd plugin's options and ``proxypypi.tac`` with
its TOML file) end up here, so a setting means the same thing whichever way
it was given.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

DEFAULT_LISTEN = "tcp:3141:interface=127.0.0.1"
DEFAULT_STORAGE = "./proxypypi-data"


class ConfigError(ValueError):
    """
    A setting is missing or wrong; the message names it and says how to fix it.
    """


@attrs.frozen
class UpstreamConfig:
    """
    One upstream simple index (or mirror).

    :ivar url: the simple-index base URL, always ending in ``/``.
    :ivar weight: this member's share of its group's load.
    :ivar connect_timeout: seconds to establish a connection.
    :ivar first_byte_timeout: seconds from request to response headers.
    """

    url: str
    weight: float = 1.0
    connect_timeout: float = 10.0
    first_byte_timeout: float = 15.0


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


def parse_upstream_group(spec: str) -> tuple[UpstreamConfig, ...]:
    """
    Parse one ``--upstream`` value: a URL, or several separated by commas
    that form one group of mirrors sharing the load.
    """
    urls = [u for u in (s.strip() for s in spec.split(",")) if u]
    if not urls:
        raise ConfigError(f"empty upstream {spec!r}")
    return tuple(UpstreamConfig(parse_upstream_url(u)) for u in urls)


def _positive(name: str) -> Any:
    def check(_instance: object, _attribute: object, value: float) -> None:
        if not value > 0:
            raise ConfigError(f"{name} must be a positive number, not {value!r}")

    return check


@attrs.frozen
class Config:
    """
    Everything the service needs to start.

    :ivar upstreams: groups in rank order; each group's members share load.
    :ivar page_ttl: seconds a cached project page counts as fresh.
    :ivar client_max_age: ``Cache-Control: max-age`` sent with index pages;
        short, because installers make no request at all within it.
    :ivar download_idle_timeout: seconds without a byte from the upstream
        after which a file download is abandoned.
    :ivar max_page_bytes: the largest upstream page accepted.
    """

    upstreams: tuple[tuple[UpstreamConfig, ...], ...]
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    storage: str = DEFAULT_STORAGE
    page_ttl: float = attrs.field(default=600.0, validator=_positive("page-ttl"))
    client_max_age: int = 60
    download_idle_timeout: float = attrs.field(
        default=30.0, validator=_positive("download-idle-timeout")
    )
    max_page_bytes: int = 128 * 1024 * 1024

    def __attrs_post_init__(self) -> None:
        if not self.upstreams:
            raise ConfigError(
                "no upstream given: add --upstream URL (e.g. "
                "--upstream https://mirror.example/simple/)"
            )
        if not self.listen:
            raise ConfigError("no listen endpoint given")

    def describe(self) -> str:
        """
        The upstreams as understood, for the first log line.
        """
        groups = [" + ".join(u.url for u in group) for group in self.upstreams]
        return " > ".join(f"[{g}]" for g in groups)


#: TOML key (and option name) to Config field and converter.
_SCALARS: Mapping[str, tuple[str, Any]] = {
    "storage": ("storage", str),
    "page-ttl": ("page_ttl", float),
    "client-max-age": ("client_max_age", int),
    "download-idle-timeout": ("download_idle_timeout", float),
    "max-page-bytes": ("max_page_bytes", int),
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
    Build a L{Config} from option-style keys (``page-ttl``; underscores are
    accepted too).  C{upstreams} and C{listen}, when not empty, replace the
    ones in C{settings}: the command line overrides the file.

    :raises ConfigError: naming the first bad or unknown key.
    """
    kwargs: dict[str, Any] = {}
    file_upstreams: list[str] = []
    file_listen: list[str] = []
    for raw_key, value in settings.items():
        key = raw_key.replace("_", "-")
        if value is None:
            continue
        if key == "upstream" or key == "upstreams":
            file_upstreams = _as_list(key, value)
        elif key == "listen":
            file_listen = _as_list(key, value)
        elif key in _SCALARS:
            field, convert = _SCALARS[key]
            try:
                kwargs[field] = convert(value)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{key} has a bad value {value!r}: {e}") from e
        else:
            raise ConfigError(f"unknown setting {raw_key!r}")
    groups = list(upstreams) or file_upstreams
    kwargs["upstreams"] = tuple(parse_upstream_group(g) for g in groups)
    kwargs["listen"] = tuple(listen) or tuple(file_listen) or (DEFAULT_LISTEN,)
    return Config(**kwargs)


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

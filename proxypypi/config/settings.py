# -*- test-case-name: tests.test_config -*-
"""
Settings as given (option names, TOML keys, their text forms) into a
`proxypypi.config.model.Config`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from proxypypi.config.defaultindex import DefaultIndex
from proxypypi.config.model import DEFAULT_LISTEN, Config, UpstreamConfig
from proxypypi.config.policy import POLICY_KEYS, policy_config
from proxypypi.config.urls import ConfigError, parse_upstream_url
from proxypypi.sizes import parse_size


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
    "max-file-size": ("max_file_size", parse_size),
    "allow-overwrite": ("allow_overwrite", _flag),
    "log-format": ("log_format", str),
    "upstream-proxy": ("upstream_proxy", str),
    "workers": ("workers", int),
    "header-timeout": ("header_timeout", float),
    "max-connections": ("max_connections", int),
    "max-client-connections": ("max_client_connections", int),
}

#: TOML keys (and repeatable options) holding lists of strings.
_LISTS: Mapping[str, str] = {
    "merge-upstream": "merge_upstream",
    "trusted-proxy": "trusted_proxies",
    "file-host": "file_hosts",
    "file-hosts": "file_hosts",
    "admin": "admins",
}


def _as_list(key: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{key} must be a string or a list of strings")


def build_config(
    settings: Mapping[str, object],
    upstreams: Iterable[str] = (),
    listen: Iterable[str] = (),
    default_index: Callable[[tuple[str, ...]], DefaultIndex] | None = None,
) -> Config:
    """
    Build a `Config` from option-style keys (``page-ttl``; underscores are
    accepted too).  ``upstreams`` and ``listen``, when not empty, replace the
    ones in ``settings``: the command line overrides the file.

    :param default_index: when neither gives an upstream, finds the one to
        use from the listen endpoints (the entry points pass
        `proxypypi.config.defaultindex.find_default_index`); without it,
        an upstream is required.

    :raises ConfigError: naming the first bad or unknown key.
    """
    kwargs: dict[str, Any] = {}
    file_upstreams: tuple[tuple[UpstreamConfig, ...], ...] = ()
    file_listen: list[str] = []
    policy: dict[str, object] = {}
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
        elif key in POLICY_KEYS:
            policy[key] = value
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
    kwargs["policy"] = policy_config(policy)
    if not kwargs["upstreams"] and default_index is not None:
        found = default_index(kwargs["listen"])
        kwargs["upstreams"] = ((UpstreamConfig(found.url),),)
        kwargs["upstream_reason"] = found.reason
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

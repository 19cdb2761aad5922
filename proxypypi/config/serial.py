# -*- test-case-name: tests.test_workers -*-
"""
A `Config` as JSON and back: how the supervisor hands the configuration it
parsed (options, TOML file, environment) to the workers it starts, on
their standard input, so that every worker runs with exactly the same
settings and no secret (an upstream's credentials) shows in a process
list.

The way back follows the fields' declared types, so a setting added to
`Config`, nested ``attrs`` classes and tuples included, needs nothing
here.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import attrs

from proxypypi.config.model import Config


def config_to_json(config: Config) -> str:
    return json.dumps(attrs.asdict(config, recurse=True))


def config_from_json(text: str) -> Config:
    """
    :raises ValueError: for anything but a configuration written by
        `config_to_json`.
    """
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a configuration")
    try:
        config = _build(Config, data)
    except (TypeError, KeyError) as e:
        raise ValueError(f"not a configuration: {e}") from e
    assert isinstance(config, Config)
    return config


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {
        f.alias: _value(hints[f.name], data[f.name])
        for f in attrs.fields(cls)
        if f.init and f.name in data
    }
    return cls(**kwargs)


def _value(kind: Any, value: Any) -> Any:
    """
    A JSON value as the declared ``kind`` holds it: attrs classes built,
    lists made tuples.
    """
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(kind):
            if value is not None and attrs.has(member) and isinstance(value, dict):
                return _build(member, value)
        return _plain(value)
    if attrs.has(kind) and isinstance(value, dict):
        return _build(kind, value)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(kind)
        inner = args[0] if args else Any
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(inner, v) for v in value)
        return tuple(_value(a, v) for a, v in zip(args, value, strict=False))
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value

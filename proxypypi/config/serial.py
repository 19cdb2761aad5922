# -*- test-case-name: tests.test_workers -*-
"""
A `Config` as JSON and back: how the supervisor hands the configuration it
parsed (options, TOML file, environment) to the workers it starts, on
their standard input, so that every worker runs with exactly the same
settings and no secret (an upstream's credentials) shows in a process
list.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from proxypypi.config.model import Config, UpstreamConfig


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
    data["upstreams"] = tuple(
        tuple(UpstreamConfig(**member) for member in group) for group in data["upstreams"]
    )
    return Config(**{key: _frozen(value) for key, value in data.items()})


def _frozen(value: Any) -> Any:
    """
    JSON's lists as the tuples `Config` holds.
    """
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value

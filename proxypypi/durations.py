# -*- test-case-name: tests.test_policy_rules,tests.test_status -*-
"""
Durations in seconds, read from people (``7d``, ``36h``, ``90m``) and
written for them (``2 d 4 h``): the cooldown, its per-project exceptions,
an uptime.
"""

from __future__ import annotations

import math
import re

#: Seconds in each unit a duration may be written in.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

#: One or more ``<number><unit>`` parts (``1d12h``); a bare number is seconds.
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value: object) -> float:
    """
    Seconds from ``"7d"``, ``"36h"``, ``"90m"``, ``"1d12h"``, ``"45s"`` or a
    plain number of seconds (``3600``, ``"3600"``); ``0`` is allowed.

    :raises ValueError: naming the value and the forms accepted.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        seconds = math.nan
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(f"(?:{_PART.pattern})+", text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"{value!r} is not a duration; write it like 7d, 36h, 90m, 1d12h or a number "
            "of seconds"
        )
    return seconds


def human_duration(seconds: float) -> str:
    """
    A duration for people: ``42 s``, ``5 min``, ``3 h 12 min``, ``2 d 4 h``.
    """
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 3600:
        return f"{minutes} min"
    if s < 86400:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"

# -*- test-case-name: tests.test_config,tests.test_status -*-
"""
Sizes in bytes, read from people (``512M``) and written for them: compact in
settings and messages (``1 GiB``), with one decimal in tables (``1.5 KiB``).
"""

from __future__ import annotations

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

_LARGEST_FIRST = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


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


def format_size(value: int) -> str:
    """
    A setting or a limit: ``512 bytes``, ``1 GiB``, ``1.177 MiB``.
    """
    for unit, factor in _LARGEST_FIRST:
        if value >= factor:
            return f"{value / factor:.4g} {unit}"
    return f"{value} bytes"


def human_bytes(n: int | None) -> str:
    """
    A figure in a table: ``512 B``, ``1.5 KiB``, ``5.0 GiB``; ``unknown``
    for ``None``.
    """
    if n is None:
        return "unknown"
    for unit, factor in _LARGEST_FIRST:
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"

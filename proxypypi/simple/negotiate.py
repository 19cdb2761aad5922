# -*- test-case-name: tests.test_negotiate -*-
"""
PEP 691 content negotiation: which serialization of an index page to send.

Installers ask for JSON first and fall back to HTML with lower q-values;
poetry offers only JSON and ``*/*``.  A client that names no type (no
``Accept``, or only ``*/*``: curl, a browser) gets ``text/html``, as from
the public index and as PEP 691 advises.  The answer is always one of
three exact media types, because pip and uv reject pages whose
``Content-Type`` is anything else (``application/json`` included).
"""

from __future__ import annotations

import enum
import functools

#: PEP 691 JSON serialization, version 1.
JSON_V1 = "application/vnd.pypi.simple.v1+json"
#: PEP 691 HTML serialization, version 1.
HTML_V1 = "application/vnd.pypi.simple.v1+html"
#: The legacy PEP 503 media type, an alias of `HTML_V1`.
HTML = "text/html"

#: The ``latest`` meta-versions, answered with the concrete v1 types.
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}

#: What we can send, each with its rank among equal q-values when the
#: client named it (by type or ``type/*``), and when only ``*/*`` matched.
_OFFERS = ((JSON_V1, 2, 0), (HTML_V1, 1, 1), (HTML, 0, 2))


class Format(enum.Enum):
    """
    The two serializations of an index page.
    """

    JSON = "json"
    HTML = "html"


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """
    Split a media type or media range into its lowercase ``type/subtype``
    and its parameters (names lowercased, values unquoted).

    Malformed parameters are skipped, so a sloppy header never stops the
    caller from reading the type.
    """
    essence, *raw_params = value.split(";")
    params: dict[str, str] = {}
    for raw in raw_params:
        name, eq, param_value = raw.partition("=")
        name = name.strip().lower()
        if eq and name:
            params.setdefault(name, param_value.strip().strip('"'))
    return essence.strip().lower(), params


def _parse_range(part: str) -> tuple[str, float] | None:
    """
    One comma-separated element of an ``Accept`` header as
    ``(media range, q)``, or ``None`` when it is garbage.
    """
    media_range, params = parse_media_type(part)
    main, slash, sub = media_range.partition("/")
    if not (slash and main and sub) or "/" in sub or (main == "*" and sub != "*"):
        return None
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return None
    if not 0.0 <= q <= 1.0:
        return None
    return _ALIASES.get(media_range, media_range), q


def _specificity(media_range: str, offer: str) -> int:
    """
    How specifically ``media_range`` matches ``offer``: 3 for the exact
    type, 2 for ``type/*``, 1 for ``*/*`` and 0 for no match.
    """
    if media_range == offer:
        return 3
    if media_range == "*/*":
        return 1
    main, _, sub = media_range.partition("/")
    return 2 if sub == "*" and offer.startswith(main + "/") else 0


def _quality(ranges: list[tuple[str, float]], offer: str) -> tuple[int, float]:
    """
    How specifically the client named ``offer`` and the q-value it gave
    it: that of the most specific matching range (RFC 9110 §12.5.1), so
    ``text/html;q=0, */*`` refuses HTML; the highest q among equally
    specific ranges.
    """
    best = (0, 0.0)
    for media_range, q in ranges:
        specificity = _specificity(media_range, offer)
        if specificity:
            best = max(best, (specificity, q))
    return best


@functools.lru_cache(maxsize=256)
def negotiate(accept: str | None) -> str | None:
    """
    Choose the media type of an index page for an ``Accept`` header (or a
    ``?format=`` value, which the public index takes in its place).

    The highest q-value wins; among equal ones, a type the client named
    (``application/vnd.pypi.simple.v1+json``, ``application/*``) beats
    one only ``*/*`` admits.  Named ties go to JSON, then v1 HTML, then
    ``text/html`` (installers list JSON first); ``*/*`` alone, a missing
    or empty header, or one with nothing readable, is answered with
    ``text/html``.  The order of the header's elements means nothing.

    :param accept: the request's ``Accept`` header, if any.
    :returns: the exact ``Content-Type`` to send, or ``None`` when nothing
        we can produce is acceptable (answer 406).
    """
    ranges = [r for r in map(_parse_range, (accept or "").split(",")) if r is not None]
    if not ranges:
        ranges = [("*/*", 1.0)]
    best: tuple[float, int, int] = (0.0, 0, 0)
    chosen = None
    for offer, named_rank, wildcard_rank in _OFFERS:
        specificity, q = _quality(ranges, offer)
        rank = named_rank if specificity > 1 else wildcard_rank
        score = (q, min(specificity, 2), rank)
        if q > 0 and score > best:
            best, chosen = score, offer
    return chosen

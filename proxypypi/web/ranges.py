# -*- test-case-name: tests.test_ranges -*-
"""
HTTP byte ranges (RFC 9110 §14) and entity tags, as pure functions.

Installers ask for ranges in three shapes (``PROTOCOL.md`` §1.6 F3): uv
asks ``bytes=a-b`` (often past the end of a small wheel), poetry asks the
suffix ``bytes=-10000`` (often longer than the whole wheel) and pip and uv
resume with the open range ``bytes=N-``.  Ranges that reach past the end are
clamped, never rejected; only a start at or past the end is unsatisfiable
(``PROTOCOL.md`` §4 trap 18).

Deliberate simplifications, all allowed by RFC 9110 §14.2 (a server MAY
ignore ``Range``):

- several ranges (``bytes=0-1,5-6``) get the full file, so that no
  ``multipart/byteranges`` body is ever needed;
- a malformed header, or a unit other than ``bytes``, gets the full file;
- when the total size is unknown every range gets the full file: a suffix
  range cannot be located, and a ``206`` must state its last byte in
  ``Content-Range`` (``bytes N-*/*`` does not exist), which an open range
  ``bytes=N-`` on a file of unknown size cannot do.  In practice the size
  is almost always known (from the index's ``size`` or the upstream's
  ``Content-Length``), so this costs little.
"""

from __future__ import annotations

import enum
import re

import attrs

__all__ = [
    "FullReason",
    "FullResponse",
    "RangeResult",
    "SingleRange",
    "Unsatisfiable",
    "format_etag",
    "if_none_match_matches",
    "if_range_matches",
    "parse_range",
]


class FullReason(enum.Enum):
    """
    Why a request gets the whole file rather than a part of it; kept so that
    logs and tests can tell an absent header from an ignored one.
    """

    #: No ``Range`` header at all.
    NO_RANGE = "no-range"
    #: The header does not follow the RFC 9110 grammar.
    MALFORMED = "malformed"
    #: A range unit other than ``bytes``.
    UNSUPPORTED_UNIT = "unsupported-unit"
    #: More than one range; answering with the whole file is simpler than a
    #: ``multipart/byteranges`` body, and allowed.
    MULTIPLE_RANGES = "multiple-ranges"
    #: The total size is unknown, so the range cannot be resolved.
    UNKNOWN_SIZE = "unknown-size"
    #: A non-empty suffix range on an empty file: satisfiable by RFC 9110's
    #: definition, yet no ``Content-Range`` can describe zero bytes.
    EMPTY_FILE = "empty-file"


@attrs.frozen
class FullResponse:
    """
    Answer ``200`` with the whole file.

    :ivar reason: Why no part was selected.
    """

    reason: FullReason


@attrs.frozen
class SingleRange:
    """
    Answer ``206`` with the bytes ``start`` to ``end`` inclusive, already
    clamped to the file, as ``Content-Range: bytes start-end/size``.

    :ivar start: The first byte offset.
    :ivar end: The last byte offset, inclusive (HTTP's convention).
    :ivar size: The total size of the file.
    """

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        """
        The number of bytes in the range: the ``Content-Length`` of the 206.
        """
        return self.end - self.start + 1

    def content_range(self) -> bytes:
        """
        The ``Content-Range`` header value for this range.
        """
        return b"bytes %d-%d/%d" % (self.start, self.end, self.size)


@attrs.frozen
class Unsatisfiable:
    """
    Answer ``416`` with ``Content-Range: bytes */size``: the start lies at or
    beyond the end of the file, or the range is the empty suffix ``-0``.

    :ivar size: The total size of the file.
    """

    size: int

    def content_range(self) -> bytes:
        """
        The ``Content-Range`` header value for a ``416``.
        """
        return b"bytes */%d" % (self.size,)


#: What `parse_range` decided.
RangeResult = FullResponse | SingleRange | Unsatisfiable

# RFC 9110 §5.6.2 token, for the range unit.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# int-range / suffix-range; [0-9] rather than \d, which matches other scripts'
# digits that int() would accept.
_RANGE_SPEC = re.compile(r"(?P<first>[0-9]*)[ \t]*-[ \t]*(?P<last>[0-9]*)")
# RFC 9110 §8.8.3: entity-tag = [ weak ] opaque-tag, etagc = %x21 / %x23-7E / obs-text.
_OPAQUE_TAG = re.compile(r'"[\x21\x23-\x7e\x80-\xff]*"')
_ETAGC = re.compile(r"[\x21\x23-\x7e\x80-\xff]*")
# One element of an If-None-Match list, with the separators around it.
_ETAG_LIST_ITEM = re.compile(r'[ \t,]*(?P<tag>(?:W/)?"[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|$)')


#: More digits than any file size has (an exabyte has 19).
_MAX_DIGITS = 20


def parse_range(header: str | None, size: int | None) -> RangeResult:
    """
    Decide which part of a file a ``Range`` header asks for.

    :param header: The ``Range`` request header, or ``None`` when absent.
    :param size: The total size of the file, or ``None`` when not yet known
        (a download whose length was announced nowhere).
    :returns: `FullResponse` to answer ``200`` with everything,
        `SingleRange` to answer ``206``, or `Unsatisfiable` to answer
        ``416``.
    """
    if header is None:
        return FullResponse(FullReason.NO_RANGE)
    unit, sep, range_set = header.strip().partition("=")
    unit = unit.strip()
    if not sep or not _TOKEN.fullmatch(unit):
        return FullResponse(FullReason.MALFORMED)
    if unit.lower() != "bytes":
        return FullResponse(FullReason.UNSUPPORTED_UNIT)
    # RFC 9110 §5.6.1: recipients accept empty list elements ("a, , b").
    specs = [spec.strip(" \t") for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if not specs:
        return FullResponse(FullReason.MALFORMED)
    parsed: list[tuple[str | None, str | None]] = []
    for spec in specs:
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None:
            return FullResponse(FullReason.MALFORMED)
        first_digits, last_digits = _position(match["first"]), _position(match["last"])
        if first_digits is None and last_digits is None:
            return FullResponse(FullReason.MALFORMED)
        if (
            first_digits is not None
            and last_digits is not None
            and _order(last_digits) < _order(first_digits)
        ):
            return FullResponse(FullReason.MALFORMED)
        parsed.append((first_digits, last_digits))
    if len(parsed) > 1:
        return FullResponse(FullReason.MULTIPLE_RANGES)
    [(first_digits, last_digits)] = parsed
    first, last = _value(first_digits), _value(last_digits)
    if first is None:
        # A suffix range: the last ``last`` bytes.
        assert last is not None
        if last == 0:
            return Unsatisfiable(size) if size is not None else _unknown()
        if size is None:
            return _unknown()
        if size == 0:
            return FullResponse(FullReason.EMPTY_FILE)
        return SingleRange(start=max(size - last, 0), end=size - 1, size=size)
    if size is None:
        return _unknown()
    if first >= size:
        return Unsatisfiable(size)
    end = size - 1 if last is None else min(last, size - 1)
    return SingleRange(start=first, end=end, size=size)


def _position(digits: str) -> str | None:
    """
    A byte position as written, without leading zeros (``"0"`` for zero),
    or ``None`` when absent.  Kept as text until it is known to be small:
    ``int()`` refuses more than 4,300 digits, and a client may send 5,000.
    """
    return (digits.lstrip("0") or "0") if digits else None


def _order(digits: str) -> tuple[int, str]:
    """
    A key that orders positions (without leading zeros) as numbers.
    """
    return (len(digits), digits)


def _value(digits: str | None) -> int | None:
    """
    A position as a number; one past any real file's end when it has more
    digits than any file size can (`Unsatisfiable` as a start, clamped to
    the file as an end).
    """
    if digits is None:
        return None
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _unknown() -> FullResponse:
    return FullResponse(FullReason.UNKNOWN_SIZE)


def format_etag(etag: str) -> str:
    """
    The quoted strong entity tag for ``etag``, as sent in an ``ETag`` header.

    Accepts the opaque value either bare (``abc``) or already quoted
    (``"abc"``), so callers holding a sha256 hex digest need not quote it.

    :param etag: The entity tag, bare or quoted.
    :returns: The quoted form, e.g. ``"abc"``.
    :raises ValueError: for a weak tag (``W/"..."``) or characters an entity
        tag cannot hold (a double quote inside, spaces, control characters):
        file ETags must be strong, since ``If-Range`` compares strongly.
    """
    if _OPAQUE_TAG.fullmatch(etag):
        return etag
    if etag.startswith(("W/", "w/")) or not _ETAGC.fullmatch(etag):
        raise ValueError(f"not a valid strong entity tag: {etag!r}")
    return f'"{etag}"'


def if_range_matches(if_range: str | None, etag: str | None) -> bool:
    """
    Whether a ``Range`` may be honoured given the request's ``If-Range``.

    ``If-Range`` means "send me the part if the file is still the one I
    started with, otherwise the whole thing" (RFC 9110 §13.1.5); pip sends it
    with the ETag when it resumes a broken download.  Only a strong
    comparison is allowed, and since proxypypi validates with ETags alone, an
    ``If-Range`` holding a date never matches: the client then gets the whole
    file, which is always correct.

    :param if_range: The ``If-Range`` request header, or ``None`` when absent.
    :param etag: The file's entity tag, bare or quoted (see `format_etag`),
        or ``None`` when the file has none.
    :returns: ``True`` when there is no ``If-Range`` header or it strongly
        matches ``etag``; ``False`` when the full file must be sent instead.
    """
    if if_range is None:
        return True
    if etag is None:
        return False
    candidate = if_range.strip()
    if not _OPAQUE_TAG.fullmatch(candidate):
        # A weak tag, a date, or junk: none of them matches strongly.
        return False
    try:
        ours = format_etag(etag)
    except ValueError:
        return False
    return candidate == ours


def if_none_match_matches(if_none_match: str | None, etag: str | None) -> bool:
    """
    Whether ``If-None-Match`` names the file, so a ``GET`` or ``HEAD`` gets
    ``304 Not Modified`` (RFC 9110 §13.1.2).

    Uses the weak comparison the RFC prescribes for this header: ``W/"x"``
    matches ``"x"``.  A malformed list matches nothing, so the client gets
    the file, which is always safe.

    :param if_none_match: The ``If-None-Match`` request header, or ``None``.
    :param etag: The file's entity tag, bare or quoted, or ``None``.
    :returns: ``True`` when ``etag`` is listed, or the header is ``*``.
    """
    if if_none_match is None or etag is None:
        return False
    value = if_none_match.strip(" \t")
    if value == "*":
        return True
    try:
        ours = format_etag(etag)
    except ValueError:
        return False
    tags: list[str] = []
    position = 0
    while position < len(value):
        match = _ETAG_LIST_ITEM.match(value, position)
        if match is None or match.end() == position:
            return False
        tags.append(match["tag"].removeprefix("W/"))
        position = match.end()
    return ours in tags

# -*- test-case-name: tests.test_simple_parse -*-
"""
Upstream index pages (PEP 503 HTML, PEP 691 JSON) into the model.

Upstreams are not trusted.  A page is read as far as it makes sense, and a
link is dropped (with a warning for the caller to log) whenever keeping it
could make the proxy fetch from a non-HTTP URL, store a file under a
dangerous name or serve another project's file.  Only a body that is not an
index page at all raises `PageParseError`, so that an error page is never
mistaken for a project that lost all its files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from functools import partial
from html import unescape as html_unescape
from html.parser import HTMLParser
from typing import Any, TypeVar
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import attrs
import orjson
from packaging.utils import NormalizedName, canonicalize_name

from proxypypi.names import (
    InvalidDistFilename,
    belongs_to,
    is_safe_filename,
    parse_dist_filename,
    version_of,
)
from proxypypi.simple.model import (
    CoreMetadata,
    DistFile,
    ProjectPage,
    ProjectStatus,
    Yanked,
    merge_versions,
)
from proxypypi.simple.negotiate import JSON_V1, Format, parse_media_type

#: Our private per-file JSON key for `DistFile.removed_upstream`; clients
#: ignore keys starting with ``_`` (PEP 691).
REMOVED_UPSTREAM_KEY = "_proxypypi-removed-upstream"

#: Keys of the PEP 658 flag in JSON, newest first: PEP 714 renamed it, and
#: the reference index actually sends ``data-dist-info-metadata``.
_JSON_METADATA_KEYS = ("core-metadata", "dist-info-metadata", "data-dist-info-metadata")
_HTML_METADATA_KEYS = ("data-core-metadata", "data-dist-info-metadata")

#: Hex digest length of every fixed-size algorithm ``hashlib.new`` always
#: knows; the names PEP 691 allows and the proxy can verify.
_HEX_LENGTHS = {
    name: hashlib.new(name).digest_size * 2
    for name in hashlib.algorithms_guaranteed
    if not name.startswith("shake_")
}
_HEX = re.compile("[0-9a-f]*")
_SHA256 = re.compile("[0-9a-f]{64}")
_SCHEMES = frozenset({"http", "https"})
#: An absolute http(s) URL with a plain host name (no user, no IPv6
#: literal) and a path of printable ASCII but for quotes and backslashes.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?/[!#-\[\]-~]*\Z")
_BOM = b"\xef\xbb\xbf"

#: The most files a page may list: the largest pages of the public index
#: list some ten thousand, and each costs about a kilobyte to read, so a
#: page listing millions (hostile, or broken) is refused rather than read.
MAX_PAGE_FILES = 100_000

#: The most JSON values (counted by their separators and openings) a page
#: may hold: thirty per file at `MAX_PAGE_FILES` (an entry has about
#: fifteen).  Counted before the page is parsed, so a page of millions of
#: tiny values (``[[],[],...]``), each costing the parser fifty bytes, is
#: refused rather than built.
MAX_JSON_TOKENS = 30 * MAX_PAGE_FILES

#: Warnings kept per page; the rest are counted.
MAX_WARNINGS = 5

_T = TypeVar("_T")


class PageParseError(ValueError):
    """
    The body is not an index page at all, or is the page of another project.
    """


def _brief(value: object) -> str:
    """
    A log-safe rendering of an upstream value, cut short: attribute values
    can be arbitrarily large.
    """
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def ascii_int(text: str) -> int | None:
    """
    ``text`` as a non-negative integer, or ``None`` (also for numbers too
    long for ``int()``).
    """
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _check_api_version(version: object) -> None:
    """
    Refuse a page of a newer major version, as PEP 629 requires of clients:
    its fields may no longer mean what this module thinks they mean.
    """
    if isinstance(version, str):
        major = ascii_int(version.partition(".")[0].strip())
        if major is not None and major != 1:
            raise PageParseError(f"unsupported repository version {_brief(version)}")


def _status(status: object, reason: object) -> ProjectStatus | None:
    """
    A PEP 792 status from whichever spelling the upstream used.
    """
    if not isinstance(status, str) or not status:
        return None
    return ProjectStatus(status, reason if isinstance(reason, str) and reason else None)


@attrs.define
class _Collector:
    """
    The admission rules shared by both serializations, and the warnings
    they produce, for one page of one project.
    """

    page_url: str
    expected: NormalizedName
    #: The first `MAX_WARNINGS` warnings; `unshown` counts the rest.
    warnings: list[str] = attrs.field(factory=list)
    unshown: int = 0
    files: dict[str, DistFile] = attrs.field(factory=dict)
    #: The versions the admitted file names declare, in first-seen order;
    #: kept here so that no file name is parsed twice.
    file_versions: dict[str, None] = attrs.field(factory=dict)
    #: File entries met so far (JSON).
    entries: int = 0
    #: Files dropped because their names say they belong to another project.
    foreign: int = 0

    def warn(self, warning: str) -> None:
        """
        Note something dropped; a page dropping thousands of entries keeps
        only the first few words of it.
        """
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(warning)
        else:
            self.unshown += 1

    def all_warnings(self) -> list[str]:
        more = [f"and {self.unshown} more like these"] if self.unshown else []
        return self.warnings + more

    def resolve(self, href: str, what: str, base: str | None = None) -> tuple[str, str] | None:
        """
        The absolute URL (without fragment) and the fragment of a link, or
        ``None`` when the proxy must never fetch it (not http or https).

        :param base: what relative URLs resolve against, if not the page.
        """
        href = href.strip()
        if not href:
            self.warn(f"dropped {_brief(what)}: no URL")
            return None
        if _PLAIN_URL.match(href) is not None:
            # Most upstreams list plain absolute URLs: nothing to join or
            # take apart (the pattern admits only what urlsplit reads as
            # http(s) with a host).
            if "#" not in href:
                return href, ""  # not a copy: pages keep thousands of URLs
            url, _, fragment = href.partition("#")
            return url, fragment
        try:
            url, fragment = urldefrag(urljoin(base or self.page_url, href))
            scheme = urlsplit(url).scheme
        except ValueError:
            scheme = ""
        if scheme not in _SCHEMES:
            self.warn(f"dropped {_brief(what)}: not an http(s) URL: {_brief(href)}")
            return None
        return url, fragment

    def check(self, filename: str) -> bool:
        """
        Whether a file of this name may be on the page: a safe, printable
        name, of this project when the name says which project.
        """
        # version_of checks the name is safe first, so a version means safe.
        if version_of(filename, self.expected) is not None:
            if not filename.isprintable():
                self.warn(f"dropped {_brief(filename)}: unsafe file name")
                return False
        elif not (is_safe_filename(filename) and filename.isprintable()):
            self.warn(f"dropped {_brief(filename)}: unsafe file name")
            return False
        elif not belongs_to(filename, self.expected):
            try:
                other = parse_dist_filename(filename).project
            except InvalidDistFilename as e:
                # Not someone else's file: not a valid name at all.
                self.warn(f"dropped {_brief(filename)}: invalid file name ({e})")
                return False
            self.warn(f"dropped {_brief(filename)}: a file of {other}, not of {self.expected}")
            self.foreign += 1
            return False
        return True

    def add(self, f: DistFile) -> None:
        """
        Put a checked file on the page, unless one of its name is already.
        """
        if f.filename in self.files:
            self.warn(f"dropped {_brief(f.filename)}: duplicate file name")
            return
        self.files[f.filename] = f
        version = version_of(f.filename, self.expected)
        if version is not None:
            self.file_versions[version] = None

    def json_hashes(self, given: dict[Any, Any], filename: str, of: str = "") -> dict[str, str]:
        """
        `hashes` of a JSON ``hashes`` object.  The one nearly every file
        has, a lone lowercase sha256, is kept as the parser made it: it is
        already clean, and a page of thousands of files need not copy it.
        """
        if len(given) == 1:
            sha = given.get("sha256")
            if type(sha) is str and _SHA256.fullmatch(sha):
                return given
        return self.hashes(given.items(), filename, of)

    def hashes(
        self, pairs: Iterable[tuple[object, object]], filename: str, of: str = ""
    ) -> dict[str, str]:
        """
        The usable hashes among ``pairs``: a known algorithm with a hex
        digest of the right length, both lowercased.

        :param filename: whose hashes (for a warning).
        :param of: what of it, when not the file itself (``metadata``).
        """
        clean: dict[str, str] = {}
        for name, value in pairs:
            if isinstance(name, str) and isinstance(value, str):
                name, value = name.lower(), value.lower()
                if len(value) == _HEX_LENGTHS.get(name) and _HEX.fullmatch(value):
                    clean.setdefault(name, value)
                    continue
            what = f"{_brief(filename)} {of}".rstrip()
            self.warn(f"{what}: dropped hash {_brief(name)}={_brief(value)}")
        return clean

    def provenance(self, value: object, filename: str) -> str | None:
        """
        A PEP 740 provenance URL, which must be absolute https; clients fetch
        it directly, so anything else is dropped.
        """
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                parts = urlsplit(value)
            except ValueError:
                parts = None
            if parts is not None and parts.scheme == "https" and parts.netloc:
                return value
        self.warn(f"{_brief(filename)}: dropped provenance {_brief(value)}")
        return None

    def page(
        self, versions: Iterable[str], last_serial: int | None, status: ProjectStatus | None
    ) -> ProjectPage:
        """
        The finished page, with ``versions`` completed by the files' own
        versions (what `ProjectPage.all_versions` computes) so that the page
        round-trips through JSON unchanged.
        """
        all_versions = merge_versions(versions, self.file_versions)
        files = tuple(self.files.values())
        return ProjectPage(self.expected, files, all_versions, last_serial, status)


# JSON (PEP 691 / 700 / 714 / 740 / 792)


def _check_count(files: int) -> None:
    """
    :raises PageParseError: when a page lists more than `MAX_PAGE_FILES`.
    """
    if files > MAX_PAGE_FILES:
        raise PageParseError(f"lists {files} files, more than the {MAX_PAGE_FILES} accepted")


def _load_json_object(
    body: bytes, object_hook: Callable[[dict[str, Any]], object]
) -> dict[str, Any]:
    """
    The top-level JSON object of ``body``, each object in it through
    ``object_hook``.

    :raises PageParseError: for anything but a JSON object, or one of too
        many values (`MAX_JSON_TOKENS`).
    """
    tokens = body.count(b",") + body.count(b"{") + body.count(b"[")
    if tokens > MAX_JSON_TOKENS:
        raise PageParseError(f"holds {tokens} JSON values, more than {MAX_JSON_TOKENS}")
    try:
        # The standard library's parser, not orjson's: as fast on these
        # pages, its peak memory is 3.5 times the body where orjson's is 15
        # times (73 MB for a 5 MB page), and it takes an object hook.
        doc = json.loads(body.removeprefix(_BOM), object_hook=object_hook)
    except (ValueError, RecursionError) as e:
        raise PageParseError(f"not JSON: {_brief(str(e))}") from None
    if not isinstance(doc, dict):
        raise PageParseError("JSON page is not an object")
    return doc


def _field(doc: dict[str, Any], key: str, kind: type[_T], default: _T) -> _T:
    """
    ``doc[key]``, or ``default`` when absent.

    :raises PageParseError: when present with the wrong type.
    """
    value = doc.get(key, default)
    if not isinstance(value, kind):
        raise PageParseError(f"{key!r} is not a {kind.__name__}")
    return value


def _json_yanked(value: object) -> Yanked:
    """
    PEP 592 in JSON; an empty reason means yanked without one.
    """
    if isinstance(value, str):
        return value or True
    return bool(value)


def _json_size(value: object) -> int | None:
    """
    A PEP 700 size, which must be a non-negative integer.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _json_str(value: object) -> str | None:
    """
    ``value`` if it is a non-empty string (upstreams send ``null``).
    """
    return value if isinstance(value, str) and value else None


def _json_core_metadata(c: _Collector, entry: dict[str, Any], filename: str) -> CoreMetadata:
    """
    The PEP 658 flag under the first key present, newest spelling first.
    A dict whose hashes are all unusable is treated as no metadata: the
    proxy must not advertise what it cannot vouch for.
    """
    for key in _JSON_METADATA_KEYS:
        if key in entry:
            value = entry[key]
            break
    else:
        return False
    if isinstance(value, dict):
        return (c.json_hashes(value, filename, "metadata") or False) if value else True
    return value is True


def _json_file(c: _Collector, entry: dict[str, Any]) -> DistFile | None:
    """
    One file entry, checked, or ``None`` (dropped, with a warning).
    """
    filename, href = entry.get("filename"), entry.get("url")
    if not isinstance(filename, str) or not isinstance(href, str):
        c.warn(f"dropped file entry {_brief(filename)}: no filename or url")
        return None
    resolved = c.resolve(href, filename)
    if resolved is None or not c.check(filename):
        return None
    get = entry.get
    hashes = get("hashes")
    gpg_sig = get("gpg-sig")
    provenance = get("provenance")
    return DistFile(
        filename,
        resolved[0],
        c.json_hashes(hashes, filename) if isinstance(hashes, dict) else {},
        _json_str(get("requires-python")),
        _json_yanked(get("yanked")),
        _json_core_metadata(c, entry, filename),
        gpg_sig if isinstance(gpg_sig, bool) else None,
        _json_size(get("size")),
        _json_str(get("upload-time")),
        None if provenance is None else c.provenance(provenance, filename),
        get(REMOVED_UPSTREAM_KEY) is True,
    )


def parse_json_entry(
    entry: object, page_url: str, expected_name: NormalizedName
) -> DistFile | None:
    """
    One element of a JSON page's ``files``, admitted by the rules of a
    whole page (for an entry looked up alone in a stored page), or ``None``.
    """
    if not isinstance(entry, dict):
        return None
    return _json_file(_Collector(page_url, expected_name), entry)


def _json_status(doc: dict[str, Any], meta: dict[str, Any]) -> ProjectStatus | None:
    """
    PEP 792 status in any of its three spellings: ``project-status.status``
    (the spec text), ``project-status.state`` (PEP 792) or
    ``meta.project-status`` (the spec's example).
    """
    block = doc.get("project-status")
    if isinstance(block, dict):
        return _status(block.get("status") or block.get("state"), block.get("reason"))
    return _status(meta.get("project-status"), meta.get("project-status-reason"))


#: What `_json_object` makes of a file entry it dropped.
_DROPPED = object()


def _json_object(c: _Collector, obj: dict[str, Any]) -> object:
    """
    Each object of a JSON page as the parser completes it: a file entry
    becomes its `DistFile` there and then, so that a page of ten thousand
    entries never stands in memory as ten thousand dictionaries.  The
    parser cannot say where an object sits, so an object with a
    ``filename`` anywhere is read as an entry; only those in ``files``
    are listed.

    :raises PageParseError: past `MAX_PAGE_FILES` entries.
    """
    if "filename" not in obj:
        return obj
    c.entries += 1
    _check_count(c.entries)
    f = _json_file(c, obj)
    return _DROPPED if f is None else f


def _parse_json(c: _Collector, body: bytes, last_serial: int | None) -> ProjectPage:
    """
    A PEP 691 project page.
    """
    doc = _load_json_object(body, partial(_json_object, c))
    meta = _field(doc, "meta", dict, {})
    _check_api_version(meta.get("api-version"))
    name = _field(doc, "name", str, c.expected)
    if canonicalize_name(name) != c.expected:
        raise PageParseError(f"page of {_brief(name)}, expected {c.expected!r}")
    if "files" not in doc:
        raise PageParseError("no 'files' in JSON page")
    for item in _field(doc, "files", list, []):
        if isinstance(item, DistFile):
            c.add(item)
        elif isinstance(item, dict):
            c.warn(f"dropped file entry {_brief(item)}: no filename")
        elif item is not _DROPPED:
            c.warn(f"dropped file entry {_brief(item)}: not an object")
    versions = [v for v in _field(doc, "versions", list, []) if isinstance(v, str)]
    serial = doc.get("_last-serial")
    if isinstance(serial, int) and not isinstance(serial, bool) and serial >= 0:
        last_serial = serial
    return c.page(versions, last_serial, _json_status(doc, meta))


# HTML (PEP 503 / 592 / 629 / 658 / 714 / 740 / 792)

_Attrs = dict[str, str | None]


def _first_wins(attrs: list[tuple[str, str | None]]) -> _Attrs:
    """
    A tag's attributes; of duplicates the first counts, as in browsers.
    """
    values: _Attrs = {}
    for name, value in attrs:
        values.setdefault(name, value)
    return values


class _AnchorParser(HTMLParser):
    """
    Collects every ``<a>`` as its attributes and text.  Text runs until the
    next ``</a>`` or ``<a>``, so unclosed anchors still count.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[_Attrs, str]] = []
        self._attrs: _Attrs | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._finish_anchor()
            self._attrs = _first_wins(attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._finish_anchor()

    def handle_data(self, data: str) -> None:
        if self._attrs is not None:
            self._text.append(data)

    def close(self) -> None:
        super().close()
        self._finish_anchor()

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        """
        Skip ``<![keyword[`` sections the standard library does not know,
        where it would raise ``AssertionError`` on hostile input.
        """
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            end = self.rawdata.find(">", i)
            return -1 if end < 0 else end + 1

    def _finish_anchor(self) -> None:
        if self._attrs is not None:
            self.anchors.append((self._attrs, "".join(self._text).strip()))
            # As they come, not once the page is read: a page of millions
            # of anchors would cost gigabytes to read whole.
            _check_count(len(self.anchors))
        self._attrs, self._text = None, []


class _PageParser(_AnchorParser):
    """
    Also collects ``<meta name=... content=...>``, the first ``<base>`` and
    the ``<!--SERIAL n-->`` comment some indexes put on HTML pages.
    """

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.base: str | None = None
        self.serial: int | None = None
        self.tags = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        self.tags += 1
        values = _first_wins(attrs)
        if tag == "meta" and values.get("name") and values.get("content") is not None:
            self.meta.setdefault(str(values["name"]).lower(), str(values["content"]))
        elif tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"]

    def handle_comment(self, data: str) -> None:
        words = data.split()
        if self.serial is None and len(words) == 2 and words[0] == "SERIAL":
            self.serial = ascii_int(words[1])


def _decode_html(body: bytes, content_type: str) -> str:
    """
    The text of an HTML body in its declared charset (UTF-8 by default);
    undecodable bytes become U+FFFD rather than an error.
    """
    charset = parse_media_type(content_type)[1].get("charset", "utf-8")
    try:
        text = body.decode(charset, "replace")
    except LookupError:
        text = body.decode("utf-8", "replace")
    return text.removeprefix("\ufeff")


def _html_yanked(attrs: _Attrs) -> Yanked:
    """
    PEP 592: a bare or empty ``data-yanked`` means yanked without a reason.
    """
    if "data-yanked" not in attrs:
        return False
    return attrs["data-yanked"] or True


def _html_core_metadata(c: _Collector, attrs: _Attrs, filename: str) -> CoreMetadata:
    """
    PEP 658 / 714: ``true`` or ``<hashname>=<hex>``, newest spelling first;
    an unusable hash means no metadata (see `_json_core_metadata`).
    """
    for key in _HTML_METADATA_KEYS:
        if key in attrs:
            value = (attrs[key] or "true").strip()
            if value.lower() in ("true", "false"):
                return value.lower() == "true"
            name, _, digest = value.partition("=")
            return c.hashes([(name, digest)], filename, "metadata") or False
    return False


def _html_bool(value: str | None) -> bool | None:
    """
    ``data-gpg-sig``: ``true``, ``false`` or unknown.
    """
    if value is None or value.lower() not in ("true", "false"):
        return None
    return value.lower() == "true"


def _html_file(c: _Collector, base: str, attrs: _Attrs, text: str) -> None:
    """
    Admit one anchor.  The file name is the URL's last path segment, which
    PEP 503 says the anchor text must equal: the URL decides what is
    fetched, so it also decides what the file is called.
    """
    href = attrs.get("href")
    if href is None:
        c.warn(f"dropped anchor {_brief(text)}: no href")
        return
    resolved = c.resolve(href, text, base)
    if resolved is None:
        return
    url, fragment = resolved
    filename = unquote(urlsplit(url).path.rpartition("/")[2])
    if not filename:
        c.warn(f"dropped {_brief(href)}: the URL does not name a file")
        return
    if not c.check(filename):
        return
    name, eq, digest = fragment.partition("=")
    c.add(
        DistFile(
            filename=filename,
            url=url,
            hashes=c.hashes([(name, digest)], filename) if eq else {},
            requires_python=attrs.get("data-requires-python") or None,
            yanked=_html_yanked(attrs),
            core_metadata=_html_core_metadata(c, attrs, filename),
            gpg_sig=_html_bool(attrs.get("data-gpg-sig")),
            provenance=c.provenance(attrs.get("data-provenance"), filename),
        )
    )


def _html_base(page_url: str, base: str | None) -> str:
    """
    What relative links resolve against: the page URL, or the first
    ``<base href>`` resolved against it (as browsers and pip do).
    """
    if base and base.strip():
        try:
            return urljoin(page_url, base.strip())
        except ValueError:
            pass
    return page_url


def _feed(parser: HTMLParser, text: str, *, close: bool) -> None:
    """
    Feed ``parser``, turning the standard library's last-resort assertions
    into `PageParseError`.
    """
    try:
        parser.feed(text)
        if close:
            parser.close()
    except AssertionError as e:
        raise PageParseError(f"unparseable HTML: {_brief(str(e))}") from None


def _parse_html(
    c: _Collector, body: bytes, content_type: str, last_serial: int | None
) -> ProjectPage:
    """
    A PEP 503 project page.
    """
    parser = _PageParser()
    _feed(parser, _decode_html(body, content_type), close=True)
    if not parser.tags:
        # Even an empty project page has markup; a body with none (empty,
        # plain text, binary junk) is not a page.
        raise PageParseError("not an HTML page: no markup at all")
    _check_api_version(parser.meta.get("pypi:repository-version"))
    base = _html_base(c.page_url, parser.base)
    for attrs_, text in parser.anchors:
        _html_file(c, base, attrs_, text)
    if c.foreign and not c.files:
        # Every file is another project's: the upstream answered with the
        # wrong page; an empty page would hide this project's files.
        raise PageParseError(f"page of another project: no file of {c.expected!r} on it")
    status = _status(
        parser.meta.get("pypi:project-status"), parser.meta.get("pypi:project-status-reason")
    )
    serial = parser.serial if parser.serial is not None else last_serial
    return c.page((), serial, status)


def _format_of(body: bytes) -> Format:
    """
    Which serialization ``body`` is in, whatever its ``Content-Type`` says
    (mirrors label JSON pages ``text/html`` and the reverse): a JSON page
    starts with ``{``, which no HTML page does.
    """
    head = body[:1024].removeprefix(_BOM).lstrip()
    return Format.JSON if head.startswith(b"{") else Format.HTML


def parse_project_page(
    body: bytes,
    content_type: str,
    page_url: str,
    expected_name: NormalizedName,
    last_serial: int | None = None,
    *,
    framed: bool = True,
) -> tuple[ProjectPage, list[str]]:
    """
    Read an upstream project page.

    :param body: the response body.
    :param content_type: the response's ``Content-Type`` (may be empty).
    :param page_url: the URL the page was finally fetched from, after
        redirects; relative file URLs resolve against it.
    :param expected_name: the project asked for.
    :param last_serial: the ``X-PyPI-Last-Serial`` header, used when the
        body carries no serial.
    :param framed: false when the body ended with its connection, without
        a length: it may have been cut short, so an HTML page must end with
        its closing tag (a JSON page cut short is no JSON at all).
    :returns: the page (whose ``versions`` already include every file's
        version) and human-readable warnings about what was dropped.
    :raises PageParseError: when ``body`` is not a project page (for HTML:
        has no markup at all), a JSON page names another project, or an HTML
        page lists files of another project only, or may be cut short.
    """
    c = _Collector(page_url, expected_name)
    if _format_of(body) is Format.JSON:
        page = _parse_json(c, body, last_serial)
    else:
        if not framed and _HTML_END.search(body, max(0, len(body) - 4096)) is None:
            raise PageParseError(
                "the page ended with its connection, without a length or a closing tag: "
                "it may be cut short"
            )
        page = _parse_html(c, body, content_type, last_serial)
    return page, c.all_warnings()


# The project list (PEP 503 / 691 ``/simple/``)

#: One anchor of an HTML project list, its text captured.
_LIST_ANCHOR = re.compile(rb"<a\b[^>]*>([^<]*)</a\s*>", re.IGNORECASE)
#: One name of a JSON project list, its string's contents captured.
_LIST_NAME = re.compile(rb'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
#: What ends an HTML list, and a JSON one.
_HTML_END = re.compile(rb"</(?:body|html)\s*>", re.IGNORECASE)
_JSON_END = re.compile(rb"\]\s*\}$")
#: The longest entry of a list waited for across chunks; anything longer is
#: not a project's and is dropped.
_MAX_PENDING = 64 * 1024


class ProjectListScanner:
    """
    Incremental reader of a project list, which upstream can be tens of
    megabytes (the public index lists 900,000 names): feed it chunks as
    they arrive and get names back as soon as their entries close.  Chunks
    may split entries, names and UTF-8 sequences anywhere.

    The list is the one document read with a pattern rather than a
    parser: PEP 503 and 691 pin its shape (one anchor per project, or
    ``{"name": ...}`` entries) and its names are all it is needed for, and
    the standard library's HTML parser takes 12 s on this machine for the
    public index's list, where the pattern takes 0.2 s.  A hostile list
    gains nothing from fooling it: every name is checked and normalized
    before it is listed, and the list links to nothing but our own pages.

    :ivar json: reading a PEP 691 JSON list (else HTML); decided by the
        first byte that is not white space (mirrors label JSON lists
        ``text/html``), by the ``Content-Type`` only for a blank body.
    :ivar complete: the list's end was seen (an HTML list's closing tag, a
        JSON list's closing brace): a body cut short never passes for a
        whole list.
    """

    def __init__(self, content_type: str) -> None:
        self._labelled_json = parse_media_type(content_type)[0] == JSON_V1
        self._decided: bool | None = None
        self._pending = b""
        self.complete = False
        self._tail = b""

    @property
    def json(self) -> bool:
        return self._labelled_json if self._decided is None else self._decided

    def feed(self, chunk: bytes) -> list[str]:
        """
        :returns: the project names completed by ``chunk``.
        """
        if self._decided is None:
            head = (self._pending + chunk).removeprefix(_BOM).lstrip()
            if not head:
                self._pending += chunk
                return []
            self._decided = head.startswith(b"{")
        data = self._pending + chunk
        self._tail = (self._tail + chunk)[-16:]
        if self.json:
            names, end = self._json_names(data)
        else:
            names, end = self._html_names(data)
        self._pending = data[end:] if len(data) - end <= _MAX_PENDING else b""
        return names

    def close(self) -> list[str]:
        """
        :returns: the names still pending at the end of the body (none:
            an entry never closed is not one).
        """
        tail = self._tail.rstrip()
        pattern = _JSON_END if self.json else _HTML_END
        self.complete = pattern.search(tail) is not None
        return []

    def _html_names(self, data: bytes) -> tuple[list[str], int]:
        names = []
        end = 0
        for match in _LIST_ANCHOR.finditer(data):
            text = match.group(1).decode("utf-8", "replace").strip()
            if "&" in text:
                text = html_unescape(text)
            if text:
                names.append(text)
            end = match.end()
        # Keep what may be the start of an anchor split by the chunk.
        opening = max(data.rfind(b"<a", end), data.rfind(b"<A", end))
        if opening < 0:
            opening = data.rfind(b"<", end)
        return names, len(data) if opening < 0 else opening

    def _json_names(self, data: bytes) -> tuple[list[str], int]:
        names = []
        end = 0
        for match in _LIST_NAME.finditer(data):
            try:
                name = orjson.loads(b'"' + match.group(1) + b'"')
            except orjson.JSONDecodeError:
                name = None
            if isinstance(name, str) and name:
                names.append(name)
            end = match.end()
        # Keep what may be the start of an entry split by the chunk.
        opening = data.rfind(b'"name"', end)
        return names, max(end, len(data) - 16) if opening < 0 else opening

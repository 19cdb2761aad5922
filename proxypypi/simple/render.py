# -*- test-case-name: tests.test_simple_render -*-
"""
The model into our own index pages (PEP 691 JSON and PEP 503 HTML).

Only file URLs change on the way through the proxy (the caller decides them
with ``file_url``); everything else an upstream said is passed on unchanged,
PEP 740 provenance URLs included.  The ``.metadata`` URL is never written:
clients derive it as ``<file url>.metadata``.  Each page claims the lowest
repository version whose features it carries, and never more.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote

import orjson
from packaging.utils import canonicalize_name

from proxypypi.simple.model import CoreMetadata, DistFile, ProjectPage, ProjectStatus
from proxypypi.simple.parse import REMOVED_UPSTREAM_KEY

#: Chooses the URL a client is sent to for a file.
FileURL = Callable[[DistFile], str]

#: The start of every HTML page we write.
_HTML_HEAD = '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'


def _dumps(value: object) -> bytes:
    """
    Compact UTF-8 JSON, by orjson (thirteen times faster than the standard
    library on a large page).  A lone surrogate, which UTF-8 cannot hold,
    falls back to the standard library's ASCII escapes.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def _pick_hash(hashes: Mapping[str, str]) -> tuple[str, str] | None:
    """
    The hash to put in a ``#name=hex`` fragment or ``data-*`` attribute,
    which hold only one: sha256 when known (every client checks it),
    otherwise the first by name.
    """
    if "sha256" in hashes:
        return "sha256", hashes["sha256"]
    return min(hashes.items(), default=None)


# JSON


def _json_api_version(page: ProjectPage) -> str:
    """
    1.1 needs ``size`` on every file; 1.3 (provenance) and 1.4 (status)
    build on 1.1, so a page without sizes stays at 1.0 whatever it carries.
    """
    if any(f.size is None for f in page.files):
        return "1.0"
    if page.status is not None:
        return "1.4"
    if any(f.provenance is not None for f in page.files):
        return "1.3"
    return "1.1"


def _json_mapping(value: Mapping[str, str]) -> dict[str, str]:
    """
    A mapping as the JSON writer takes it: the parser's own dictionaries
    as they are (thousands per page, not copied), anything else copied.
    """
    return value if type(value) is dict else dict(value)


def _json_core_metadata(value: CoreMetadata) -> object:
    """
    The JSON value of a (true) PEP 658 flag.
    """
    return _json_mapping(value) if isinstance(value, Mapping) else True


def _json_file(f: DistFile, file_url: FileURL, private_keys: bool) -> dict[str, object]:
    """
    One element of ``files``; optional keys only when known.
    """
    entry: dict[str, object] = {
        "filename": f.filename,
        "url": file_url(f),
        "hashes": _json_mapping(f.hashes),
        "yanked": True if f.yanked == "" else f.yanked,  # a reason is never empty
    }
    if f.requires_python is not None:
        entry["requires-python"] = f.requires_python
    if f.core_metadata:
        # PEP 714: the new key only.  pip 22.3 to 23.1 (Debian 12 ships
        # 23.0.1) fail on every page whose JSON carries the old one.
        entry["core-metadata"] = _json_core_metadata(f.core_metadata)
    if f.gpg_sig is not None:
        entry["gpg-sig"] = f.gpg_sig
    if f.size is not None:
        entry["size"] = f.size
    if f.upload_time is not None:
        entry["upload-time"] = f.upload_time
    if f.provenance is not None:
        entry["provenance"] = f.provenance
    if private_keys and f.removed_upstream:
        entry[REMOVED_UPSTREAM_KEY] = True
    return entry


def _json_status(status: ProjectStatus) -> dict[str, str]:
    """
    PEP 792 status as the canonical spec text spells it.
    """
    block = {"status": status.status}
    if status.reason is not None:
        block["reason"] = status.reason
    return block


def render_project_json(
    page: ProjectPage, file_url: FileURL, *, private_keys: bool = True
) -> bytes:
    """
    A PEP 691 project page.

    ``project-status`` and ``provenance`` are written even at api-version
    1.0 (clients ignore what they do not know) so that a page stored this
    way loses nothing; they are only *claimed* on top of 1.1.

    :param file_url: the URL to list for a file; written as is.
    :param private_keys: also write our ``_proxypypi-*`` keys (for pages
        stored on disk; harmless but pointless for clients).
    :returns: UTF-8 JSON.
    """
    return render_project_jsons(page, [file_url], private_keys=private_keys)[0]


def render_project_jsons(
    page: ProjectPage, file_urls: Sequence[FileURL], *, private_keys: bool = True
) -> list[bytes]:
    """
    `render_project_json` once per URL scheme of ``file_urls``: the page is
    turned into JSON values once, and only each file's ``url`` is set anew
    for every other scheme (the stored page and the page clients get differ
    in nothing else).
    """
    files = [_json_file(f, file_urls[0], private_keys) for f in page.files]
    doc: dict[str, object] = {
        "meta": {"api-version": _json_api_version(page)},
        "name": page.name,
        "versions": list(page.all_versions()),
        "files": files,
    }
    if page.status is not None:
        doc["project-status"] = _json_status(page.status)
    if page.last_serial is not None:
        doc["_last-serial"] = page.last_serial
    out = [_dumps(doc)]
    for file_url in file_urls[1:]:
        for f, entry in zip(page.files, files, strict=True):
            entry["url"] = file_url(f)
        out.append(_dumps(doc))
    return out


# HTML


def _html_version(page: ProjectPage) -> str:
    """
    The repository version an HTML page claims: HTML has no 1.1 features,
    and stops at 1.4 (PEP 833).
    """
    if page.status is not None:
        return "1.4"
    if any(f.provenance is not None for f in page.files):
        return "1.3"
    return "1.0"


def _meta(name: str, content: str) -> str:
    return f'<meta name="{name}" content="{html.escape(content, quote=True)}">\n'


def _html_core_metadata(value: CoreMetadata) -> str:
    """
    ``data-core-metadata``: ``true`` or ``<hashname>=<hex>``.
    """
    chosen = _pick_hash(value) if isinstance(value, Mapping) else None
    return "true" if chosen is None else "=".join(chosen)


def _html_attributes(f: DistFile) -> list[tuple[str, str]]:
    """
    The ``data-*`` attributes of a file's anchor, unescaped.
    """
    attributes: list[tuple[str, str]] = []
    if f.requires_python is not None:
        attributes.append(("data-requires-python", f.requires_python))
    if f.yanked is not False:
        attributes.append(("data-yanked", "" if f.yanked is True else str(f.yanked)))
    if f.core_metadata:
        # PEP 714: HTML keeps the old attribute too, which every pip reads.
        value = _html_core_metadata(f.core_metadata)
        attributes += [("data-core-metadata", value), ("data-dist-info-metadata", value)]
    if f.gpg_sig is not None:
        attributes.append(("data-gpg-sig", "true" if f.gpg_sig else "false"))
    if f.provenance is not None:
        attributes.append(("data-provenance", f.provenance))
    return attributes


def _html_anchor(f: DistFile, file_url: FileURL) -> str:
    """
    One file's anchor, its href carrying a ``#name=hex`` fragment when any
    hash is known.
    """
    chosen = _pick_hash(f.hashes)
    href = file_url(f) + ("" if chosen is None else "#" + "=".join(chosen))
    attributes = "".join(
        f' {name}="{html.escape(value, quote=True)}"'
        for name, value in [("href", href), *_html_attributes(f)]
    )
    return f"<a{attributes}>{html.escape(f.filename)}</a><br>\n"


def render_project_html(page: ProjectPage, file_url: FileURL) -> bytes:
    """
    A PEP 503 project page, with the PEP 629 version and PEP 792 status
    meta tags.  The serial goes in a ``<!--SERIAL n-->`` comment.

    :param file_url: the URL to link a file to; the hash fragment is added.
    :returns: UTF-8 HTML5.
    """
    name = html.escape(page.name)
    parts = [_HTML_HEAD, _meta("pypi:repository-version", _html_version(page))]
    if page.status is not None:
        parts.append(_meta("pypi:project-status", page.status.status))
        if page.status.reason is not None:
            parts.append(_meta("pypi:project-status-reason", page.status.reason))
    parts.append(f"<title>Links for {name}</title>\n</head>\n<body>\n<h1>Links for {name}</h1>\n")
    parts += [_html_anchor(f, file_url) for f in page.files]
    parts.append("</body>\n</html>\n")
    if page.last_serial is not None:
        parts.append(f"<!--SERIAL {page.last_serial}-->\n")
    # Lone surrogates (possible in JSON input) become character references.
    return "".join(parts).encode("utf-8", "xmlcharrefreplace")


# The project list, in pieces the caller streams: head, entries, tail.


def project_list_html_head() -> bytes:
    """
    The start of the HTML project list.
    """
    return (
        _HTML_HEAD
        + _meta("pypi:repository-version", "1.0")
        + "<title>Simple index</title>\n</head>\n<body>\n"
    ).encode("utf-8")


def project_list_html_entry(name: str, normalized: str | None = None) -> bytes:
    """
    One project's anchor, linking to its normalized page ``<normalized>/``
    relative to the list, with the name as given as its text.

    :param normalized: the normalized name, when the caller has it.
    """
    href = quote(normalized or canonicalize_name(name), safe="") + "/"
    text = html.escape(name)
    return f'<a href="{html.escape(href, quote=True)}">{text}</a><br>\n'.encode(
        "utf-8", "xmlcharrefreplace"
    )


def project_list_html_tail() -> bytes:
    """
    The end of the HTML project list.
    """
    return b"</body>\n</html>\n"


def project_list_json_head() -> bytes:
    """
    The start of the JSON project list, up to the opening ``[``.
    """
    return b'{"meta":{"api-version":"1.0"},"projects":['


def project_list_json_entry(name: str, *, first: bool) -> bytes:
    """
    One element of ``projects``.

    :param first: whether this is the first entry; every other entry is
        preceded by the separating comma, so any number of entries between
        head and tail is valid JSON.
    """
    return (b"" if first else b",") + _dumps({"name": name})


def project_list_json_tail() -> bytes:
    """
    The end of the JSON project list.
    """
    return b"]}"

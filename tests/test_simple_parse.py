"""
Tests for `proxypypi.simple.parse`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from packaging.utils import NormalizedName
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.simple.model import DistFile, ProjectPage, ProjectStatus
from proxypypi.simple.negotiate import HTML, HTML_V1, JSON_V1
from proxypypi.simple.parse import (
    MAX_PAGE_FILES,
    MAX_WARNINGS,
    PageParseError,
    ProjectListScanner,
    parse_project_page,
)

NAME = NormalizedName("proto-beta")
PAGE = "https://mirror.example/simple/proto-beta/"
SHA = "ab" * 32
META_SHA = "cd" * 32
WHEEL = "proto_beta-1.0-py3-none-any.whl"
SDIST = "proto_beta-2.0.tar.gz"


def json_page(files: Sequence[object], **top: object) -> bytes:
    """
    A JSON project page for proto-beta with ``files`` and extra top-level keys.
    """
    doc: dict[str, object] = {"meta": {"api-version": "1.1"}, "name": "proto-beta", "files": files}
    doc.update(top)
    return json.dumps(doc).encode("utf-8")


def json_file(
    filename: str = WHEEL, url: str | None = None, /, **fields: object
) -> dict[str, object]:
    """
    A minimal JSON file entry, pointing at ``/files/<filename>`` by default.
    """
    entry: dict[str, object] = {"filename": filename, "url": url or f"/files/{filename}"}
    entry.update(fields)
    return entry


def parse_json(body: bytes, last_serial: int | None = None) -> tuple[ProjectPage, list[str]]:
    return parse_project_page(body, JSON_V1, PAGE, NAME, last_serial)


def parse_html(body: str, content_type: str = HTML) -> tuple[ProjectPage, list[str]]:
    return parse_project_page(body.encode("utf-8"), content_type, PAGE, NAME)


def filenames(page: ProjectPage) -> list[str]:
    return [f.filename for f in page.files]


class JSONPageTests(SynchronousTestCase):
    """
    `parse_project_page` on PEP 691 JSON.
    """

    def test_full_file_entry(self) -> None:
        """
        Every field of a file entry lands in the model; the URL is resolved
        against the page and loses its fragment.
        """
        entry = json_file(
            url=f"../../files/{WHEEL}#sha256={SHA}",
            hashes={"SHA256": SHA.upper()},
            **{
                "requires-python": ">=3.8",
                "yanked": "broken build",
                "core-metadata": {"sha256": META_SHA},
                "gpg-sig": False,
                "size": 1238,
                "upload-time": "2025-01-02T03:04:05.123456Z",
                "provenance": "https://mirror.example/integrity/x/provenance",
                "unknown-key": [1, 2],
            },
        )
        page, warnings = parse_json(json_page([entry], versions=["1.0", "0.9"]))
        self.assertEqual(warnings, [])
        self.assertEqual(
            page,
            ProjectPage(
                name=NAME,
                files=(
                    DistFile(
                        filename=WHEEL,
                        url=f"https://mirror.example/files/{WHEEL}",
                        hashes={"sha256": SHA},
                        requires_python=">=3.8",
                        yanked="broken build",
                        core_metadata={"sha256": META_SHA},
                        gpg_sig=False,
                        size=1238,
                        upload_time="2025-01-02T03:04:05.123456Z",
                        provenance="https://mirror.example/integrity/x/provenance",
                    ),
                ),
                versions=("1.0", "0.9"),
            ),
        )

    def test_minimal_entry_defaults(self) -> None:
        """
        Missing and ``null`` optional fields give the model's defaults.
        """
        entry = json_file(**{"requires-python": None, "provenance": None, "gpg-sig": None})
        (f,) = parse_json(json_page([entry]))[0].files
        self.assertEqual(f, DistFile(WHEEL, f"https://mirror.example/files/{WHEEL}"))

    def test_versions_include_file_versions(self) -> None:
        """
        The listed versions come first, completed by the files' own versions;
        non-string versions are skipped.
        """
        body = json_page([json_file(), json_file(SDIST)], versions=["3.0", 4, "1.0"])
        self.assertEqual(parse_json(body)[0].versions, ("3.0", "1.0", "2.0"))

    def test_versions_compared_as_versions(self) -> None:
        """
        The upstream's list is kept as it spelled it: a file whose version
        equals a listed one as a version (``0.6c1`` and the file's
        ``0.6rc1``) adds nothing; one the list lacks is added once.
        """
        body = json_page(
            [json_file("proto_beta-0.6c1.tar.gz"), json_file("proto_beta-2.0-py3-none-any.whl")],
            versions=["0.6c1", "1.0.0", "1.0"],
        )
        self.assertEqual(parse_json(body)[0].versions, ("0.6c1", "1.0.0", "1.0", "2.0"))

    def test_legacy_metadata_keys(self) -> None:
        """
        Both legacy spellings of the metadata key are read, and the PEP 714
        key wins when several are present.
        """
        files = [
            json_file(**{"dist-info-metadata": {"sha256": META_SHA}}),
            json_file(SDIST, **{"data-dist-info-metadata": True}),
            json_file(
                "proto_beta-3.0-py3-none-any.whl",
                **{"core-metadata": False, "data-dist-info-metadata": True},
            ),
            json_file("proto_beta-4.0-py3-none-any.whl", **{"core-metadata": {}}),
        ]
        page = parse_json(json_page(files))[0]
        self.assertEqual(
            [f.core_metadata for f in page.files], [{"sha256": META_SHA}, True, False, True]
        )

    def test_metadata_with_bad_hash_is_not_offered(self) -> None:
        """
        A metadata flag whose only hash is unusable counts as no metadata.
        """
        page, warnings = parse_json(json_page([json_file(**{"core-metadata": {"sha256": "zz"}})]))
        self.assertIs(page.files[0].core_metadata, False)
        self.assertEqual(len(warnings), 1)

    def test_yanked_values(self) -> None:
        """
        An empty yank reason means yanked without reason.
        """
        values = ["", True, False, "gone", None]
        files = [json_file(f"proto_beta-{i}.0.tar.gz", yanked=v) for i, v in enumerate(values)]
        page = parse_json(json_page(files))[0]
        self.assertEqual([f.yanked for f in page.files], [True, True, False, "gone", False])

    def test_project_status_spellings(self) -> None:
        """
        PEP 792 status is read from all three spellings in the sources.
        """
        quarantined = ProjectStatus("quarantined", "malware")
        spellings: list[dict[str, object]] = [
            {"project-status": {"status": "quarantined", "reason": "malware"}},
            {"project-status": {"state": "quarantined", "reason": "malware"}},
            {
                "meta": {
                    "api-version": "1.4",
                    "project-status": "quarantined",
                    "project-status-reason": "malware",
                }
            },
        ]
        for top in spellings:
            self.assertEqual(parse_json(json_page([], **top))[0].status, quarantined, top)
        archived = parse_json(json_page([], **{"project-status": {"status": "archived"}}))[0]
        self.assertEqual(archived.status, ProjectStatus("archived"))
        self.assertIsNone(parse_json(json_page([], **{"project-status": 7}))[0].status)

    def test_last_serial(self) -> None:
        """
        The body's ``_last-serial`` wins over the header's; the header fills in.
        """
        self.assertEqual(parse_json(json_page([], **{"_last-serial": 42}), 7)[0].last_serial, 42)
        self.assertEqual(parse_json(json_page([]), 7)[0].last_serial, 7)
        self.assertEqual(parse_json(json_page([], **{"_last-serial": "x"}), 7)[0].last_serial, 7)

    def test_removed_upstream_private_key(self) -> None:
        """
        Our private key marks a file as removed upstream; only ``true`` counts.
        """
        files = [
            json_file(**{"_proxypypi-removed-upstream": True}),
            json_file(SDIST, **{"_proxypypi-removed-upstream": "yes"}),
        ]
        page = parse_json(json_page(files))[0]
        self.assertEqual([f.removed_upstream for f in page.files], [True, False])

    def test_invalid_names_said_as_such(self) -> None:
        """
        A file name that is no valid wheel or sdist name is dropped as
        invalid, not as another project's; another project's is named.
        """
        files = [json_file("proto_beta-1.0_x_y-py3-none-any.whl"), json_file("evil-1.0.tar.gz"),
                 json_file(WHEEL)]  # fmt: skip
        page, warnings = parse_json(json_page(files))
        self.assertEqual([f.filename for f in page.files], [WHEEL])
        invalid = "dropped 'proto_beta-1.0_x_y-py3-none-any.whl': invalid file name (Invalid"
        self.assertTrue(warnings[0].startswith(invalid), warnings[0])
        foreign = "dropped 'evil-1.0.tar.gz': a file of evil, not of proto-beta"
        self.assertEqual(warnings[1], foreign)

    def test_hostile_links_dropped(self) -> None:
        """
        Non-http(s) URLs, unsafe or foreign names, duplicates and junk entries
        are dropped with one warning each; links to other hosts are kept.
        """
        files: list[object] = [
            json_file("proto_beta-1.0.tar.gz", "javascript:alert(1)"),
            json_file("proto_beta-1.1.tar.gz", "data:text/plain,hello"),
            json_file("proto_beta-1.2.tar.gz", "file:///etc/passwd"),
            json_file("proto_beta-1.3.tar.gz", "http://[::1/x"),
            json_file("proto_beta-1.4.tar.gz", "   "),
            json_file("../proto_beta-1.5.tar.gz"),
            json_file(".hidden"),
            json_file("proto_beta-1.6\u202e.tar.gz"),
            json_file("evil-1.0.tar.gz"),
            json_file(WHEEL, "http://other.example/a/" + WHEEL),
            json_file(WHEEL, "https://mirror.example/b/" + WHEEL),
            {"filename": SDIST},
            {"url": "/x"},
            "not an object",
        ]
        page, warnings = parse_json(json_page(files))
        self.assertEqual(page.files, (DistFile(WHEEL, "http://other.example/a/" + WHEEL),))
        # One warning per entry dropped: the first few said, the rest counted.
        self.assertEqual(len(warnings), MAX_WARNINGS + 1)
        self.assertEqual(warnings[-1], f"and {len(files) - 1 - MAX_WARNINGS} more like these")

    def test_bad_hashes_dropped(self) -> None:
        """
        Hashes that are not hex digests of a known algorithm are dropped, the
        file is kept.
        """
        hashes = {
            "sha256": "g" * 64,
            "md5": "ab" * 16,
            "sha512": "ab",
            "rot13": "ab" * 32,
            "sha1": 12,
        }
        page, warnings = parse_json(json_page([json_file(hashes=hashes)]))
        self.assertEqual(page.files[0].hashes, {"md5": "ab" * 16})
        self.assertEqual(len(warnings), 4)
        self.assertEqual(parse_json(json_page([json_file(hashes="x")]))[0].files[0].hashes, {})

    def test_odd_field_values(self) -> None:
        """
        Wrongly typed or invalid optional fields fall back to their defaults;
        provenance must be an absolute https URL.
        """
        entry = json_file(
            size=True,
            yanked=0,
            **{"gpg-sig": "yes", "upload-time": 5, "provenance": "http://mirror.example/p"},
        )
        f = parse_json(json_page([entry, json_file(SDIST, size=-1)]))[0].files[0]
        self.assertEqual((f.size, f.yanked, f.gpg_sig, f.upload_time), (None, False, None, None))
        self.assertIsNone(f.provenance)

    def test_huge_values_pass_through_briefly_warned(self) -> None:
        """
        Huge values are kept as given, and warnings about them stay short.
        """
        huge = ">=3.8," + "!=3.9.*," * 100_000
        entries = [json_file(**{"requires-python": huge}), json_file("x" * 10_000)]
        page, warnings = parse_json(json_page(entries))
        self.assertEqual(page.files[0].requires_python, huge)
        self.assertTrue(all(len(w) < 200 for w in warnings), warnings)

    def test_not_a_page(self) -> None:
        """
        Bodies that are no JSON page of this project raise `PageParseError`.
        """
        bodies = [
            b"{not json",
            b"\xff\xfe\x00garbage",
            b"[]",
            b'"string"',
            b"{}",
            b'{"files": {}}',
            b'{"files": [], "versions": "1.0"}',
            b'{"files": [], "meta": []}',
            b'{"files": [], "name": 5}',
            json_page([], name="proto-alpha"),
            json_page([], meta={"api-version": "2.0"}),
            b"[" * 100_000,
        ]
        for body in bodies:
            self.assertRaises(PageParseError, parse_json, body)

    def test_name_matches_after_normalization(self) -> None:
        """
        The page's name only has to normalize to the expected one.
        """
        self.assertEqual(parse_json(json_page([], name="Proto_Beta"))[0].name, NAME)

    def test_sniffs_unknown_content_type(self) -> None:
        """
        Whatever the content type says (nothing, plain JSON, HTML as some
        mirrors label everything), a body starting with ``{`` is JSON.
        """
        body = b"\xef\xbb\xbf  " + json_page([json_file()])
        for content_type in ("", "application/json", f"{JSON_V1}; charset=utf-8", HTML):
            page = parse_project_page(body, content_type, PAGE, NAME)[0]
            self.assertEqual(filenames(page), [WHEEL], content_type)
        html = f'<a href="/f/{WHEEL}">{WHEEL}</a>'.encode()
        self.assertEqual(filenames(parse_project_page(html, "", PAGE, NAME)[0]), [WHEEL])


    def test_too_many_files(self) -> None:
        """
        A page listing more files than any real project has is refused
        before any of them is read.
        """
        entry = {"filename": "x", "url": "/x"}
        with self.assertRaisesRegex(PageParseError, "more than the 100000 accepted"):
            parse_json(json_page([entry] * (MAX_PAGE_FILES + 1)))


class HTMLPageTests(SynchronousTestCase):
    """
    `parse_project_page` on PEP 503 HTML.
    """

    def test_full_anchor(self) -> None:
        """
        Every PEP 503 / 592 / 658 / 714 / 740 attribute lands in the model,
        unescaped, with the URL resolved and the fragment turned into a hash.
        """
        body = f"""<!DOCTYPE html><html><head>
        <meta name="pypi:repository-version" content="1.4">
        <meta name="pypi:project-status" content="deprecated">
        <meta name="pypi:project-status-reason" content="use &quot;gamma&quot;">
        </head><body>
        <a href="../../files/{WHEEL}#sha256={SHA}" data-requires-python="&gt;=3.8"
           data-yanked="old &amp; bad" data-core-metadata="sha256={META_SHA}"
           data-gpg-sig="true" data-provenance="https://mirror.example/prov">{WHEEL}</a>
        </body></html><!--SERIAL 99-->"""
        page, warnings = parse_html(body, HTML_V1)
        self.assertEqual(warnings, [])
        expected = DistFile(
            filename=WHEEL,
            url=f"https://mirror.example/files/{WHEEL}",
            hashes={"sha256": SHA},
            requires_python=">=3.8",
            yanked="old & bad",
            core_metadata={"sha256": META_SHA},
            gpg_sig=True,
            provenance="https://mirror.example/prov",
        )
        self.assertEqual(
            page,
            ProjectPage(
                NAME, (expected,), ("1.0",), 99, ProjectStatus("deprecated", 'use "gamma"')
            ),
        )

    def test_flags_and_legacy_attributes(self) -> None:
        """
        A bare or empty ``data-yanked`` means yanked; ``true`` metadata and the
        legacy ``data-dist-info-metadata`` spelling are read.
        """
        body = f"""
        <a href="/f/{WHEEL}" data-yanked data-dist-info-metadata="true">x</a>
        <a href="/f/{SDIST}" data-yanked="" data-dist-info-metadata="sha256={META_SHA}">x</a>
        """
        a, b = parse_html(body)[0].files
        self.assertEqual((a.yanked, a.core_metadata), (True, True))
        self.assertEqual((b.yanked, b.core_metadata), (True, {"sha256": META_SHA}))

    def test_filename_from_url(self) -> None:
        """
        When the anchor text disagrees with the URL, the URL's percent-decoded
        last segment names the file.
        """
        body = '<a href="/f/proto_beta-1.1%2Blocal-py3-none-any.whl?x=1">lies.whl</a>'
        (f,) = parse_html(body)[0].files
        self.assertEqual(f.filename, "proto_beta-1.1+local-py3-none-any.whl")
        self.assertEqual(
            f.url, "https://mirror.example/f/proto_beta-1.1%2Blocal-py3-none-any.whl?x=1"
        )

    def test_legacy_formats_kept(self) -> None:
        """
        Files whose names are neither wheel nor sdist are kept, unversioned.
        """
        names = ["proto_beta-0.1-py2.7.egg", "proto-beta-0.1.win32.exe", "proto-beta-0.1.tar.bz2"]
        body = "".join(f'<a href="/f/{n}">{n}</a>' for n in names)
        page = parse_html(body)[0]
        self.assertEqual(filenames(page), names)
        self.assertEqual(page.versions, ())

    def test_hostile_anchors_dropped(self) -> None:
        """
        Anchors without href, with non-http(s) URLs, unsafe or foreign names,
        URLs naming no file, and duplicates are dropped with one warning each.
        """
        body = f"""
        <a name="top">no href</a>
        <a href="javascript:alert(1)">{WHEEL}</a>
        <a href="data:application/zip;base64,AAAA">{SDIST}</a>
        <a href="/f/..%2F..%2Fetc%2Fpasswd">passwd</a>
        <a href="/f/.htaccess">.htaccess</a>
        <a href="/f/evil-1.0.tar.gz">evil-1.0.tar.gz</a>
        <a href="/f/">nothing</a>
        <a href="#sha256={SHA}">fragment only</a>
        <a href="http://other.example/{WHEEL}">{WHEEL}</a>
        <a href="/f/{WHEEL}">{WHEEL}</a>
        """
        page, warnings = parse_html(body)
        self.assertEqual(page.files, (DistFile(WHEEL, f"http://other.example/{WHEEL}"),))
        self.assertEqual(warnings[MAX_WARNINGS:], [f"and {9 - MAX_WARNINGS} more like these"])

    def test_bad_fragments(self) -> None:
        """
        Fragments that are not a hex digest of a known algorithm give no hash;
        the file is kept.
        """
        fragments = ["sha256=xyz", "sha256=" + "ab" * 31, "egg=proto", "md5=", "junk", ""]
        body = "".join(
            f'<a href="/f/proto_beta-{i}.0.tar.gz#{frag}">x</a>' for i, frag in enumerate(fragments)
        )
        page, warnings = parse_html(body)
        self.assertEqual([dict(f.hashes) for f in page.files], [{}] * len(fragments))
        self.assertEqual(len(warnings), 4)

    def test_bad_metadata_hash_means_no_metadata(self) -> None:
        """
        A metadata attribute with an unusable hash is not passed on.
        """
        body = f'<a href="/f/{WHEEL}" data-core-metadata="sha256=nothex">x</a>'
        page, warnings = parse_html(body)
        self.assertIs(page.files[0].core_metadata, False)
        self.assertEqual(len(warnings), 1)

    def test_broken_html(self) -> None:
        """
        Unclosed tags, odd declarations and stray markup do not stop parsing.
        """
        body = (
            f"<html><![foo[ <a href='/x/a.zip'> ]]><body><p><b><a href=/f/{WHEEL}>{WHEEL}"
            f"<a href='/f/{SDIST}' data-requires-python='&lt;4'>{SDIST}</b><!-- <a href=/f/z.egg>"
            "</div></a></a><a href="
        )
        page = parse_html(body)[0]
        self.assertEqual(filenames(page), [WHEEL, SDIST])
        self.assertEqual(page.files[1].requires_python, "<4")

    def test_undecodable_bytes(self) -> None:
        """
        Invalid UTF-8 becomes replacement characters instead of an error.
        """
        body = b"\xff\xfe<a href='/f/" + WHEEL.encode() + b"'>\xc3(</a>\x80"
        page = parse_project_page(body, HTML, PAGE, NAME)[0]
        self.assertEqual(filenames(page), [WHEEL])

    def test_declared_charset(self) -> None:
        """
        The charset of the content type decodes the body; unknown ones fall
        back to UTF-8.
        """
        body = '<a href="/f/proto_beta-1.0.tar.gz" data-yanked="caf\xe9">x</a>'
        page = parse_project_page(body.encode("latin-1"), f"{HTML}; charset=latin-1", PAGE, NAME)
        self.assertEqual(page[0].files[0].yanked, "caf\xe9")
        page = parse_project_page(body.encode("utf-8"), f"{HTML}; charset=bogus", PAGE, NAME)
        self.assertEqual(page[0].files[0].yanked, "caf\xe9")

    def test_base_href(self) -> None:
        """
        Relative links resolve against ``<base href>`` when the page has one.
        """
        body = f'<a href="{WHEEL}">x</a><base href="https://cdn.example/p/">'
        self.assertEqual(parse_html(body)[0].files[0].url, f"https://cdn.example/p/{WHEEL}")

    def test_serial_header_fallback(self) -> None:
        """
        Without a ``SERIAL`` comment the header's serial is used.
        """
        body = b"<!--SERIAL 99999999999999999999999999x--><p>no files</p>"
        self.assertEqual(parse_project_page(body, HTML, PAGE, NAME, 5)[0].last_serial, 5)

    def test_newer_major_version_refused(self) -> None:
        """
        A page claiming repository version 2 is not interpreted.
        """
        body = '<meta name="pypi:repository-version" content="2.0"><a href="/a.zip">a</a>'
        self.assertRaises(PageParseError, parse_html, body)


class ProjectListTests(SynchronousTestCase):
    """
    `ProjectListScanner`, HTML and JSON.
    """

    BODY = (
        '<!DOCTYPE html><html><body>\n<a href="/simple/proto-alpha/">Proto_Alpha</a>\n'
        '<A HREF="/simple/zebra/">z\u00e9bra\u2603</A >\n<a href="x/">  </a>'
        '<a href="/c/">C&amp;D</a><a href="/y/">never closed'
    ).encode()
    NAMES = ["Proto_Alpha", "z\u00e9bra\u2603", "C&D"]

    def scan(self, body: bytes, content_type: str = "text/html", step: int = 0) -> list[str]:
        scanner = ProjectListScanner(content_type)
        names: list[str] = []
        step = step or len(body)
        for i in range(0, len(body), step):
            names += scanner.feed(body[i : i + step])
        return names + scanner.close()

    def test_whole_body(self) -> None:
        """
        Every closed anchor's text is returned, in order, entities decoded;
        blank ones and an anchor never closed are not names.
        """
        self.assertEqual(self.scan(self.BODY), self.NAMES)

    def test_byte_by_byte(self) -> None:
        """
        Chunks splitting tags, names and UTF-8 sequences give the same names.
        """
        self.assertEqual(self.scan(self.BODY, step=1), self.NAMES)

    def test_names_returned_as_completed(self) -> None:
        """
        A name is returned by the feed that closes its anchor, not before.
        """
        scanner = ProjectListScanner("text/html")
        self.assertEqual(scanner.feed(b"<a href=a/>al"), [])
        self.assertEqual(scanner.feed(b"pha</a><a href=b/>be"), ["alpha"])
        self.assertEqual(scanner.feed(b"ta</a></body>"), ["beta"])
        self.assertEqual(scanner.close(), [])
        self.assertTrue(scanner.complete)

    def test_cut_short_is_not_complete(self) -> None:
        """
        A list whose end never came (the connection cut) is not complete,
        HTML or JSON; one that ends is.
        """
        for body, content_type, complete in (
            (self.BODY, "text/html", False),
            (self.BODY + b"</body></html>", "text/html", True),
            (b'{"projects": [{"name": "a"}', JSON_V1, False),
            (b'{"projects": [{"name": "a"}]}\n', JSON_V1, True),
        ):
            scanner = ProjectListScanner(content_type)
            scanner.feed(body)
            scanner.close()
            self.assertEqual(scanner.complete, complete, body)

    def test_json_list(self) -> None:
        """
        ``projects[].name`` are returned, escapes decoded, whatever the chunks;
        malformed entries are skipped.
        """
        body = json.dumps(
            {
                "meta": {"api-version": "1.0"},
                "projects": [{"name": "Alpha"}, {"name": 3}, "beta", {}, {"name": 'ga"mma'}],
            }
        ).encode()
        for step in (0, 1, 7):
            self.assertEqual(self.scan(body, JSON_V1, step), ["Alpha", 'ga"mma'])

    def test_json_recognised_whatever_the_content_type(self) -> None:
        """
        A JSON list sent as HTML (or as nothing) is read as JSON: the first
        byte tells.
        """
        body = b'\n  {"projects": [{"name": "alpha"}]}'
        for content_type in ("text/html", ""):
            self.assertEqual(self.scan(body, content_type), ["alpha"])

"""
Tests for `proxypypi.simple.render`.
"""

from __future__ import annotations

import json

import attrs
from packaging.utils import NormalizedName
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.simple.model import DistFile, ProjectPage, ProjectStatus
from proxypypi.simple.negotiate import HTML, JSON_V1
from proxypypi.simple.parse import ProjectListScanner, parse_project_page
from proxypypi.simple.render import (
    project_list_html_entry,
    project_list_html_head,
    project_list_html_tail,
    project_list_json_entry,
    project_list_json_head,
    project_list_json_tail,
    render_project_html,
    render_project_json,
)

NAME = NormalizedName("proto-beta")
PAGE = "https://mirror.example/simple/proto-beta/"
SHA = "ab" * 32
META_SHA = "cd" * 32
WHEEL = "proto_beta-1.1+local-py3-none-any.whl"
SDIST = "proto_beta-1.0.tar.gz"
PROVENANCE = "https://mirror.example/integrity/proto-beta/1.1/provenance"

FULL = DistFile(
    filename=WHEEL,
    url=f"https://mirror.example/files/{WHEEL}",
    hashes={"sha256": SHA, "md5": "ef" * 16},
    requires_python=">=3.8",
    yanked='broken "build" <b>',
    core_metadata={"sha256": META_SHA},
    gpg_sig=False,
    size=1238,
    upload_time="2025-01-02T03:04:05.123456Z",
    provenance=PROVENANCE,
    removed_upstream=True,
)
PLAIN = DistFile(SDIST, f"https://mirror.example/files/{SDIST}", size=10)


def local_url(f: DistFile) -> str:
    """
    A proxy-local relative file URL, as the caller would build it.
    """
    return f"../../files/{f.filename}"


def upstream_url(f: DistFile) -> str:
    return f.url


def rendered_json(page: ProjectPage, **kwargs: bool) -> dict[str, object]:
    return json.loads(render_project_json(page, local_url, **kwargs))  # type: ignore[no-any-return]


def api_version(page: ProjectPage) -> object:
    return rendered_json(page)["meta"]


class JSONRenderTests(SynchronousTestCase):
    """
    `render_project_json`.
    """

    def test_full_page(self) -> None:
        """
        Every field is written under its PEP 691 key, with the rewritten URL,
        both metadata keys, the private key, the serial and the status.
        """
        page = ProjectPage(NAME, (FULL,), ("0.9",), 42, ProjectStatus("deprecated", "use x"))
        self.assertEqual(
            rendered_json(page),
            {
                "meta": {"api-version": "1.4"},
                "name": "proto-beta",
                "versions": ["0.9", "1.1+local"],
                "files": [
                    {
                        "filename": WHEEL,
                        "url": f"../../files/{WHEEL}",
                        "hashes": {"sha256": SHA, "md5": "ef" * 16},
                        "requires-python": ">=3.8",
                        "yanked": 'broken "build" <b>',
                        "core-metadata": {"sha256": META_SHA},
                        "gpg-sig": False,
                        "size": 1238,
                        "upload-time": "2025-01-02T03:04:05.123456Z",
                        "provenance": PROVENANCE,
                        "_proxypypi-removed-upstream": True,
                    }
                ],
                "project-status": {"status": "deprecated", "reason": "use x"},
                "_last-serial": 42,
            },
        )

    def test_minimal_file(self) -> None:
        """
        Unknown optional fields are omitted; ``hashes`` and ``yanked`` never are.
        """
        page = ProjectPage(NAME, (DistFile(SDIST, "u"),))
        self.assertEqual(
            rendered_json(page)["files"],
            [{"filename": SDIST, "url": f"../../files/{SDIST}", "hashes": {}, "yanked": False}],
        )

    def test_metadata_without_hash(self) -> None:
        """
        Metadata offered without a hash is ``true``, under PEP 714's key
        alone: pip 22.3 to 23.1 fail on pages with the old one.
        """
        page = ProjectPage(NAME, (attrs.evolve(PLAIN, core_metadata=True),))
        files: list[dict[str, object]] = rendered_json(page)["files"]  # type: ignore[assignment]
        (entry,) = files
        self.assertIs(entry["core-metadata"], True)
        self.assertNotIn("dist-info-metadata", entry)

    def test_api_version_claims(self) -> None:
        """
        1.1 needs every size; 1.3 and 1.4 are claimed only on top of 1.1.
        """
        unsized = attrs.evolve(PLAIN, size=None)
        status = ProjectStatus("archived")
        cases = [
            (ProjectPage(NAME), "1.1"),
            (ProjectPage(NAME, (PLAIN,)), "1.1"),
            (ProjectPage(NAME, (PLAIN, unsized)), "1.0"),
            (ProjectPage(NAME, (FULL, PLAIN)), "1.3"),
            (ProjectPage(NAME, (PLAIN,), status=status), "1.4"),
            (ProjectPage(NAME, (unsized, FULL), status=status), "1.0"),
        ]
        for page, version in cases:
            self.assertEqual(api_version(page), {"api-version": version}, page)

    def test_unclaimed_features_still_written(self) -> None:
        """
        At 1.0, sizes that are known, versions, status and provenance are still
        written, so a stored page loses nothing.
        """
        unsized = attrs.evolve(FULL, size=None)
        page = ProjectPage(NAME, (unsized, PLAIN), status=ProjectStatus("archived"))
        doc = rendered_json(page)
        files: list[dict[str, object]] = doc["files"]  # type: ignore[assignment]
        self.assertEqual([f.get("size") for f in files], [None, 10])
        self.assertEqual(files[0]["provenance"], PROVENANCE)
        self.assertEqual(doc["versions"], ["1.1+local", "1.0"])
        self.assertEqual(doc["project-status"], {"status": "archived"})

    def test_private_keys_optional(self) -> None:
        """
        Without private keys, the removed-upstream mark is not written.
        """
        body = render_project_json(ProjectPage(NAME, (FULL,)), local_url, private_keys=False)
        self.assertNotIn(b"_proxypypi", body)

    def test_compact_ascii(self) -> None:
        """
        The JSON is compact and ASCII, even for lone surrogates.
        """
        page = ProjectPage(NAME, (attrs.evolve(PLAIN, yanked="caf\xe9 \ud800"),))
        body = render_project_json(page, local_url)
        self.assertNotIn(b", ", body)
        self.assertNotIn(b": ", body)
        self.assertTrue(body.isascii())
        self.assertEqual(json.loads(body)["files"][0]["yanked"], "caf\xe9 \ud800")

    def test_versions_add_only_releases_the_upstream_dropped(self) -> None:
        """
        ``versions`` is the upstream's list plus the version of a stored
        file whose release it no longer lists, compared as versions.
        """
        kept = DistFile("proto_beta-0.9c1-py3-none-any.whl", "u", removed_upstream=True)
        listed = DistFile("proto_beta-1.0rc1.tar.gz", "u")
        page = ProjectPage(NAME, (listed, kept), ("1.0c1", "1.1"))
        self.assertEqual(rendered_json(page)["versions"], ["1.0c1", "1.1", "0.9rc1"])

    def test_round_trip(self) -> None:
        """
        A page rendered with its upstream URLs parses back equal, private
        markers included.
        """
        legacy = DistFile("proto_beta-0.1-py2.7.egg", "http://other.example/x.egg", yanked=True)
        page = ProjectPage(
            NAME,
            (FULL, PLAIN, legacy, attrs.evolve(PLAIN, filename="proto_beta-3.0.zip")),
            ("0.5", "1.1+local", "1.0", "3.0"),
            7,
            ProjectStatus("quarantined"),
        )
        body = render_project_json(page, upstream_url)
        self.assertEqual(parse_project_page(body, JSON_V1, PAGE, NAME), (page, []))

    def test_round_trip_of_parsed_page(self) -> None:
        """
        A page parsed from HTML (no versions listed) survives storage as JSON.
        """
        html = f'<a href="/f/{WHEEL}#sha256={SHA}" data-yanked>x</a><a href="/f/{SDIST}">y</a>'
        page = parse_project_page(html.encode(), HTML, PAGE, NAME)[0]
        body = render_project_json(page, upstream_url)
        self.assertEqual(parse_project_page(body, JSON_V1, PAGE, NAME)[0], page)


class HTMLRenderTests(SynchronousTestCase):
    """
    `render_project_html`.
    """

    def test_document(self) -> None:
        """
        The page is an HTML5 document with title, heading, version meta tag
        and one anchor per file, linking to the rewritten URL with a sha256
        fragment and escaped attributes.
        """
        body = render_project_html(ProjectPage(NAME, (FULL, PLAIN)), local_url).decode()
        self.assertTrue(body.startswith("<!DOCTYPE html>"))
        for expected in [
            '<meta name="pypi:repository-version" content="1.3">',
            "<title>Links for proto-beta</title>",
            "<h1>Links for proto-beta</h1>",
            f'<a href="../../files/{WHEEL}#sha256={SHA}" data-requires-python="&gt;=3.8" '
            'data-yanked="broken &quot;build&quot; &lt;b&gt;" '
            f'data-core-metadata="sha256={META_SHA}" data-dist-info-metadata="sha256={META_SHA}" '
            f'data-gpg-sig="false" data-provenance="{PROVENANCE}">{WHEEL}</a>',
            f'<a href="../../files/{SDIST}">{SDIST}</a>',
        ]:
            self.assertIn(expected, body)
        self.assertNotIn(".metadata", body)

    def test_version_and_status(self) -> None:
        """
        HTML claims 1.0, 1.3 with provenance and 1.4 with a status, and
        carries the status meta tags.
        """
        status = ProjectStatus("quarantined", 'bad "stuff"')
        cases = [
            (ProjectPage(NAME, (PLAIN,)), "1.0"),
            (ProjectPage(NAME, (FULL,)), "1.3"),
            (ProjectPage(NAME, (PLAIN,), status=status), "1.4"),
        ]
        for page, version in cases:
            body = render_project_html(page, local_url).decode()
            self.assertIn(f'<meta name="pypi:repository-version" content="{version}">', body)
        self.assertIn('<meta name="pypi:project-status" content="quarantined">', body)
        self.assertIn(
            '<meta name="pypi:project-status-reason" content="bad &quot;stuff&quot;">', body
        )

    def test_fragment_choice(self) -> None:
        """
        Without sha256 another known hash goes in the fragment; without any
        hash there is no fragment; a bare yank is an empty attribute.
        """
        other = attrs.evolve(PLAIN, hashes={"sha512": "12" * 64, "md5": "34" * 16}, yanked=True)
        body = render_project_html(ProjectPage(NAME, (other,)), local_url).decode()
        self.assertIn(f'href="../../files/{SDIST}#md5={"34" * 16}" data-yanked=""', body)

    def test_hostile_values_escaped(self) -> None:
        """
        Markup in any value or in the rewritten URL is escaped, and parses back
        unchanged.
        """
        evil = '"><script>alert(1)</script>'
        f = attrs.evolve(
            FULL, requires_python=evil, yanked=evil, provenance=None, removed_upstream=False
        )
        body = render_project_html(ProjectPage(NAME, (f,)), lambda f: f.url + "?" + evil)
        self.assertNotIn(b"<script>", body)
        (parsed,) = parse_project_page(body, HTML, PAGE, NAME)[0].files
        self.assertEqual((parsed.requires_python, parsed.yanked), (evil, evil))

    def test_round_trip(self) -> None:
        """
        Parsing the HTML gives the page back, up to what HTML cannot carry:
        sizes, upload times, private markers, hashes beyond the first and
        versions without files.
        """
        page = ProjectPage(
            NAME, (FULL, PLAIN), ("0.5",), 9, ProjectStatus("deprecated", "use gamma")
        )
        body = render_project_html(page, upstream_url)
        parsed, warnings = parse_project_page(body, HTML, PAGE, NAME)
        carried = [
            attrs.evolve(
                f,
                hashes={"sha256": SHA} if f.hashes else {},
                size=None,
                upload_time=None,
                removed_upstream=False,
            )
            for f in page.files
        ]
        expected = ProjectPage(NAME, tuple(carried), ("1.1+local", "1.0"), 9, page.status)
        self.assertEqual((parsed, warnings), (expected, []))


class ProjectListRenderTests(SynchronousTestCase):
    """
    The streamed project list pieces.
    """

    NAMES = ["Proto_Alpha", "z\u00e9bra", 'a"<b>']

    def test_html_list(self) -> None:
        """
        Each name links to its normalized page and reads back as given.
        """
        body = (
            project_list_html_head()
            + b"".join(map(project_list_html_entry, self.NAMES))
            + project_list_html_tail()
        )
        self.assertIn(b'<a href="proto-alpha/">Proto_Alpha</a>', body)
        self.assertIn(b'<meta name="pypi:repository-version" content="1.0">', body)
        scanner = ProjectListScanner("text/html")
        self.assertEqual(scanner.feed(body) + scanner.close(), self.NAMES)
        self.assertTrue(scanner.complete)

    def test_json_list(self) -> None:
        """
        Head, any number of entries and tail form a valid JSON project list.
        """
        for count in range(4):
            names = self.NAMES[:count]
            body = (
                project_list_json_head()
                + b"".join(project_list_json_entry(n, first=i == 0) for i, n in enumerate(names))
                + project_list_json_tail()
            )
            self.assertEqual(
                json.loads(body),
                {"meta": {"api-version": "1.0"}, "projects": [{"name": n} for n in names]},
            )
            scanner = ProjectListScanner("application/vnd.pypi.simple.v1+json")
            self.assertEqual(scanner.feed(body) + scanner.close(), names)
            self.assertTrue(scanner.complete)

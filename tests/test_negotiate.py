"""
Tests for `proxypypi.simple.negotiate`.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.simple.negotiate import (
    HTML,
    HTML_V1,
    JSON_V1,
    negotiate,
    parse_media_type,
)

#: The index ``Accept`` headers real installers sent (PROTOCOL.md §3.1).
PIP_26_3 = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"  # noqa: E501
UV_0_13_9 = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"  # noqa: E501
POETRY_2_5_1 = "application/vnd.pypi.simple.v1+json, */*;q=0.1"


class NegotiateTests(SynchronousTestCase):
    """
    Tests for `negotiate`.
    """

    def test_installers_get_json(self) -> None:
        """
        pip, uv and poetry, as observed, are all answered with JSON.
        """
        for accept in (PIP_26_3, UV_0_13_9, POETRY_2_5_1):
            self.assertEqual(negotiate(accept), JSON_V1, accept)

    def test_html_only_clients(self) -> None:
        """
        A client asking only for one HTML type gets exactly that type.
        """
        self.assertEqual(negotiate("text/html"), HTML)
        self.assertEqual(negotiate(HTML_V1), HTML_V1)

    def test_nothing_acceptable(self) -> None:
        """
        Plain JSON and an explicit refusal of everything mean 406.
        """
        self.assertIsNone(negotiate("application/json"))
        self.assertIsNone(negotiate("*/*;q=0"))
        self.assertIsNone(negotiate("image/png, text/plain"))

    def test_missing_header_is_wildcard(self) -> None:
        """
        No or an empty ``Accept`` header counts as ``*/*``, which gets
        ``text/html``, as from the public index (curl, browsers).
        """
        for accept in (None, "", "   ", "*/*", "*/*;q=0.8"):
            self.assertEqual(negotiate(accept), HTML, accept)

    def test_named_beats_wildcard(self) -> None:
        """A type the client named wins over what only ``*/*`` admits at the same q."""
        self.assertEqual(negotiate(f"{JSON_V1}, */*"), JSON_V1)
        self.assertEqual(negotiate(f"*/*, {HTML_V1}"), HTML_V1)

    def test_highest_q_wins_regardless_of_order(self) -> None:
        """
        The q-value decides, not the position in the header.
        """
        self.assertEqual(negotiate(f"{JSON_V1};q=0.5, text/html"), HTML)
        self.assertEqual(negotiate(f"text/html, {JSON_V1};q=0.5"), HTML)
        self.assertEqual(negotiate(f"text/html;q=0.9, {HTML_V1};q=0.95"), HTML_V1)

    def test_ties_prefer_json_then_v1_html(self) -> None:
        """
        Equal q-values go to JSON, then v1 HTML, then ``text/html``.
        """
        self.assertEqual(negotiate(f"text/html, {HTML_V1}, {JSON_V1}"), JSON_V1)
        self.assertEqual(negotiate(f"text/html, {HTML_V1}"), HTML_V1)

    def test_type_wildcards(self) -> None:
        """
        ``text/*`` matches only ``text/html``; ``application/*`` prefers JSON.
        """
        self.assertEqual(negotiate("text/*"), HTML)
        self.assertEqual(negotiate("application/*"), JSON_V1)
        self.assertEqual(negotiate("application/*;q=0.1, text/*"), HTML)

    def test_most_specific_range_decides(self) -> None:
        """
        An explicit ``q=0`` for a type refuses it even when a wildcard accepts all.
        """
        self.assertEqual(negotiate(f"*/*, {JSON_V1};q=0"), HTML)
        self.assertEqual(negotiate(f"{JSON_V1};q=0, {HTML_V1};q=0, */*"), HTML)
        self.assertIsNone(negotiate("application/*;q=0, text/html;q=0, */*"))

    def test_latest_aliases(self) -> None:
        """
        The ``latest`` meta-versions are answered with the concrete v1 types.
        """
        self.assertEqual(negotiate("application/vnd.pypi.simple.latest+json"), JSON_V1)
        self.assertEqual(negotiate("application/vnd.pypi.simple.latest+html"), HTML_V1)

    def test_case_whitespace_and_params(self) -> None:
        """
        Types compare case-insensitively and other parameters are ignored.
        """
        accept = "  Application/VND.PyPI.Simple.V1+HTML ; charset=utf-8 ;  Q=0.7 , TEXT/HTML;q=0.3"
        self.assertEqual(negotiate(accept), HTML_V1)

    def test_garbage_parts_ignored(self) -> None:
        """
        Malformed elements are skipped without spoiling the valid ones.
        """
        accept = f"garbage, ;;;, /, */json, text/html;q=abc, {JSON_V1};q=2, {HTML_V1};q=0.4"
        self.assertEqual(negotiate(accept), HTML_V1)
        self.assertEqual(negotiate(f"{JSON_V1};q=nan, text/html;q=0.1"), HTML)

    def test_only_garbage_is_wildcard(self) -> None:
        """
        A header with no readable element at all is treated as absent.
        """
        self.assertEqual(negotiate(",,, nonsense ,"), HTML)


class MediaTypeTests(SynchronousTestCase):
    """
    Tests for `parse_media_type`.
    """

    def test_parse_media_type(self) -> None:
        """
        The type is lowercased and parameters split, unquoted and kept first-wins.
        """
        self.assertEqual(
            parse_media_type('Text/HTML; Charset="UTF-8"; bogus; charset=latin-1'),
            ("text/html", {"charset": "UTF-8"}),
        )


"""
Project and file names.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.names import InvalidDistFilename, is_safe_filename, normalize, parse_dist_filename


class NameTests(SynchronousTestCase):
    def test_normalize(self) -> None:
        """Names normalize per PEP 503; impossible names give None."""
        self.assertEqual(normalize("Proto__Alpha.x"), "proto-alpha-x")
        for bad in ("", "..", "-a", "a/b", "a b", "x" * 300, "é"):
            self.assertIsNone(normalize(bad), bad)

    def test_safe_filename(self) -> None:
        """Separators, traversal, hidden and control characters are unsafe."""
        self.assertTrue(is_safe_filename("proto_beta-1.1+local-py3-none-any.whl"))
        for bad in ("", "..", ".hidden", "a/b", "a\\b", "a\x00b", "a\nb"):
            self.assertFalse(is_safe_filename(bad), bad)

    def test_parse_dist_filename(self) -> None:
        """Wheels and sdists parse; other names are refused."""
        w = parse_dist_filename("Proto_Beta-1!1.1+local-py3-none-any.whl")
        self.assertEqual(
            (w.project, str(w.version), w.kind), ("proto-beta", "1!1.1+local", "wheel")
        )
        s = parse_dist_filename("proto-gamma-2.0.tar.gz")
        self.assertEqual((s.project, str(s.version), s.kind), ("proto-gamma", "2.0", "sdist"))
        for bad in ("x.exe", "../a-1.0.tar.gz", "a.whl"):
            with self.assertRaises(InvalidDistFilename):
                parse_dist_filename(bad)

    def test_ambiguous_sdists(self) -> None:
        """Old sdists whose names contain dashes belong to their project, with the right version."""
        from proxypypi.names import belongs_to, version_of

        self.assertTrue(belongs_to("cffi-1.0.2-2.tar.gz", "cffi"))  # type: ignore[arg-type]
        self.assertEqual(version_of("cffi-1.0.2-2.tar.gz", "cffi"), "1.0.2.post2")  # type: ignore[arg-type]
        self.assertFalse(belongs_to("other-1.0.tar.gz", "cffi"))  # type: ignore[arg-type]
        self.assertFalse(belongs_to("other-1.0-py3-none-any.whl", "cffi"))  # type: ignore[arg-type]
        self.assertTrue(belongs_to("cffi-0.1.win32.exe", "cffi"))  # type: ignore[arg-type]

"""
Tests for `proxypypi.web.ranges`.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.web.ranges import (
    FullReason,
    FullResponse,
    SingleRange,
    Unsatisfiable,
    format_etag,
    if_none_match_matches,
    if_range_matches,
    parse_range,
)


class ParseRangeFullTests(SynchronousTestCase):
    """
    Requests that get the whole file.
    """

    def test_no_header(self) -> None:
        """
        Without a Range header the whole file is sent.
        """
        self.assertEqual(parse_range(None, 10), FullResponse(FullReason.NO_RANGE))

    def test_no_header_unknown_size(self) -> None:
        """
        Without a Range header the size does not matter.
        """
        self.assertEqual(parse_range(None, None), FullResponse(FullReason.NO_RANGE))

    def test_malformed(self) -> None:
        """
        Headers that do not follow the grammar are ignored.
        """
        for header in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=1-a",
            "bytes=5-2",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=1_0-20",
            "bytes=\u0661-2",
            "bytes=,",
            "bytes=1",
            "=0-1",
            "by tes=0-1",
            "bytes=0-1;x",
        ]:
            with self.subTest(header=header):
                self.assertEqual(parse_range(header, 10), FullResponse(FullReason.MALFORMED))

    def test_other_unit(self) -> None:
        """
        A unit other than bytes is ignored.
        """
        self.assertEqual(parse_range("items=0-1", 10), FullResponse(FullReason.UNSUPPORTED_UNIT))

    def test_multiple_ranges(self) -> None:
        """
        Several ranges get the whole file rather than a multipart body.
        """
        for header in ["bytes=0-1,3-4", "bytes=0-1, -2", "bytes=0-,0-"]:
            with self.subTest(header=header):
                self.assertEqual(parse_range(header, 10), FullResponse(FullReason.MULTIPLE_RANGES))

    def test_multiple_ranges_with_one_malformed(self) -> None:
        """
        A malformed element makes the whole header malformed.
        """
        self.assertEqual(parse_range("bytes=0-1,x", 10), FullResponse(FullReason.MALFORMED))

    def test_unknown_size(self) -> None:
        """
        Without the total size no range can be resolved, so the whole file is sent.
        """
        for header in ["bytes=0-1", "bytes=5-", "bytes=-10", "bytes=-0"]:
            with self.subTest(header=header):
                self.assertEqual(parse_range(header, None), FullResponse(FullReason.UNKNOWN_SIZE))

    def test_unknown_size_still_rejects_malformed(self) -> None:
        """
        Malformed headers are reported as such even when the size is unknown.
        """
        self.assertEqual(parse_range("bytes=x", None), FullResponse(FullReason.MALFORMED))

    def test_suffix_on_empty_file(self) -> None:
        """
        A non-empty suffix of an empty file cannot be described, so the empty file is sent whole.
        """
        self.assertEqual(parse_range("bytes=-5", 0), FullResponse(FullReason.EMPTY_FILE))


class ParseRangeSingleTests(SynchronousTestCase):
    """
    Requests that get one part of the file.
    """

    def test_closed_range(self) -> None:
        """
        ``bytes=a-b`` selects a to b inclusive.
        """
        result = parse_range("bytes=2-5", 10)
        self.assertEqual(result, SingleRange(start=2, end=5, size=10))
        assert isinstance(result, SingleRange)
        self.assertEqual(result.length, 4)
        self.assertEqual(result.content_range(), b"bytes 2-5/10")

    def test_single_byte(self) -> None:
        """
        ``bytes=a-a`` selects one byte.
        """
        self.assertEqual(parse_range("bytes=0-0", 10), SingleRange(0, 0, 10))

    def test_last_byte(self) -> None:
        """
        The last byte alone can be asked for.
        """
        self.assertEqual(parse_range("bytes=9-9", 10), SingleRange(9, 9, 10))

    def test_closed_range_clamped(self) -> None:
        """
        A range past the end is clamped to the end, as uv asks for small wheels.
        """
        self.assertEqual(parse_range("bytes=0-999999", 10), SingleRange(0, 9, 10))

    def test_whole_file_as_range(self) -> None:
        """
        uv's ``bytes=0-<size-1>`` is answered as a 206 for the whole file.
        """
        result = parse_range("bytes=0-1205", 1206)
        self.assertEqual(result, SingleRange(0, 1205, 1206))
        assert isinstance(result, SingleRange)
        self.assertEqual(result.length, 1206)

    def test_open_range(self) -> None:
        """
        ``bytes=N-`` selects N to the end, as pip and uv resume.
        """
        self.assertEqual(parse_range("bytes=4-", 10), SingleRange(4, 9, 10))

    def test_open_range_from_zero(self) -> None:
        """
        ``bytes=0-`` selects the whole file.
        """
        self.assertEqual(parse_range("bytes=0-", 10), SingleRange(0, 9, 10))

    def test_suffix_range(self) -> None:
        """
        ``bytes=-N`` selects the last N bytes.
        """
        self.assertEqual(parse_range("bytes=-3", 10), SingleRange(7, 9, 10))

    def test_suffix_longer_than_file(self) -> None:
        """
        Poetry's ``bytes=-10000`` on a 1.2 kB wheel selects the whole file as a 206.
        """
        self.assertEqual(parse_range("bytes=-10000", 1200), SingleRange(0, 1199, 1200))

    def test_suffix_equal_to_file(self) -> None:
        """
        A suffix exactly as long as the file selects all of it.
        """
        self.assertEqual(parse_range("bytes=-10", 10), SingleRange(0, 9, 10))

    def test_large_numbers(self) -> None:
        """
        Numbers beyond 64 bits are clamped, not rejected.
        """
        self.assertEqual(parse_range("bytes=0-" + "9" * 30, 10), SingleRange(0, 9, 10))

    def test_thousands_of_digits(self) -> None:
        """
        Positions of 5,000 digits (past ``int()``'s limit) are read as
        numbers larger than any file; leading zeros count for nothing.
        """
        huge = "9" * 5000
        self.assertEqual(parse_range(f"bytes=0-{huge}", 10), SingleRange(0, 9, 10))
        self.assertEqual(parse_range(f"bytes=-{huge}", 10), SingleRange(0, 9, 10))
        self.assertEqual(parse_range(f"bytes={'0' * 5000}3-4", 10), SingleRange(3, 4, 10))
        self.assertEqual(
            parse_range(f"bytes={huge}-{'9' * 4999}", 10), FullResponse(FullReason.MALFORMED)
        )

    def test_unit_case_insensitive(self) -> None:
        """
        The range unit is compared case-insensitively.
        """
        self.assertEqual(parse_range("Bytes=1-2", 10), SingleRange(1, 2, 10))

    def test_whitespace_tolerated(self) -> None:
        """
        Optional whitespace around the list and its elements is accepted.
        """
        for header in [" bytes=1-2 ", "bytes= 1-2", "bytes=1 - 2", "bytes=1-2,", "bytes=, 1-2"]:
            with self.subTest(header=header):
                self.assertEqual(parse_range(header, 10), SingleRange(1, 2, 10))

    def test_large_wheel_tail(self) -> None:
        """
        uv's request for the last 16 KiB of a 3 MB wheel is honoured as sent.
        """
        self.assertEqual(
            parse_range("bytes=2985852-3002235", 3002236),
            SingleRange(2985852, 3002235, 3002236),
        )


class ParseRangeUnsatisfiableTests(SynchronousTestCase):
    """
    Requests answered with 416.
    """

    def test_start_at_end(self) -> None:
        """
        A start equal to the size selects nothing.
        """
        result = parse_range("bytes=10-", 10)
        self.assertEqual(result, Unsatisfiable(10))
        assert isinstance(result, Unsatisfiable)
        self.assertEqual(result.content_range(), b"bytes */10")

    def test_start_beyond_end(self) -> None:
        """
        A start past the end selects nothing, with or without a last position.
        """
        for header in ["bytes=11-", "bytes=20-30"]:
            with self.subTest(header=header):
                self.assertEqual(parse_range(header, 10), Unsatisfiable(10))

    def test_start_of_thousands_of_digits(self) -> None:
        """
        A start of 5,000 digits is past the end of any file: 416, as for any
        start past the end (it used to be a 500).
        """
        self.assertEqual(parse_range(f"bytes={'5' * 5000}-", 10), Unsatisfiable(10))
        self.assertEqual(parse_range(f"bytes={'5' * 5000}-{'6' * 5000}", 10), Unsatisfiable(10))

    def test_empty_suffix(self) -> None:
        """
        ``bytes=-0`` selects nothing.
        """
        self.assertEqual(parse_range("bytes=-0", 10), Unsatisfiable(10))

    def test_any_start_on_empty_file(self) -> None:
        """
        Every start is at or past the end of an empty file.
        """
        self.assertEqual(parse_range("bytes=0-", 0), Unsatisfiable(0))


class FormatETagTests(SynchronousTestCase):
    """
    Tests for `format_etag`.
    """

    def test_bare(self) -> None:
        """
        A bare value is quoted.
        """
        self.assertEqual(format_etag("abc123"), '"abc123"')

    def test_quoted(self) -> None:
        """
        An already quoted value is kept.
        """
        self.assertEqual(format_etag('"abc123"'), '"abc123"')

    def test_invalid(self) -> None:
        """
        Weak tags and characters an entity tag cannot hold are refused.
        """
        for etag in ['W/"abc"', "a b", 'a"b', "a\x00b", '"a"b"']:
            with self.subTest(etag=etag):
                self.assertRaises(ValueError, format_etag, etag)


class IfRangeTests(SynchronousTestCase):
    """
    Tests for `if_range_matches`.
    """

    def test_absent(self) -> None:
        """
        Without If-Range the range is honoured.
        """
        self.assertTrue(if_range_matches(None, "abc"))
        self.assertTrue(if_range_matches(None, None))

    def test_same_etag(self) -> None:
        """
        The file's own strong ETag matches, whether given bare or quoted.
        """
        self.assertTrue(if_range_matches('"abc"', "abc"))
        self.assertTrue(if_range_matches('"abc"', '"abc"'))
        self.assertTrue(if_range_matches(' "abc" ', "abc"))

    def test_other_etag(self) -> None:
        """
        Another ETag does not match.
        """
        self.assertFalse(if_range_matches('"abd"', "abc"))

    def test_unquoted(self) -> None:
        """
        An unquoted value is not an entity tag and does not match.
        """
        self.assertFalse(if_range_matches("abc", "abc"))

    def test_weak(self) -> None:
        """
        A weak tag never matches: If-Range needs the strong comparison.
        """
        self.assertFalse(if_range_matches('W/"abc"', "abc"))

    def test_date(self) -> None:
        """
        A date never matches, since files are validated by ETag alone.
        """
        self.assertFalse(if_range_matches("Wed, 21 Oct 2015 07:28:00 GMT", "abc"))

    def test_no_etag(self) -> None:
        """
        A file without an ETag matches no If-Range.
        """
        self.assertFalse(if_range_matches('"abc"', None))

    def test_invalid_etag(self) -> None:
        """
        An ETag that cannot be formatted matches nothing rather than raising.
        """
        self.assertFalse(if_range_matches('"a b"', "a b"))


class IfNoneMatchTests(SynchronousTestCase):
    """
    Tests for `if_none_match_matches`.
    """

    def test_absent(self) -> None:
        """
        Without If-None-Match nothing matches.
        """
        self.assertFalse(if_none_match_matches(None, "abc"))

    def test_no_etag(self) -> None:
        """
        A file without an ETag matches nothing.
        """
        self.assertFalse(if_none_match_matches('"abc"', None))
        self.assertFalse(if_none_match_matches("*", None))

    def test_star(self) -> None:
        """
        ``*`` matches any file that has an ETag.
        """
        self.assertTrue(if_none_match_matches("*", "abc"))

    def test_listed(self) -> None:
        """
        The ETag matches wherever it appears in the list.
        """
        for header in ['"abc"', '"x", "abc"', '"abc","x"', ' "x" ,"abc" ', '"x",,"abc",']:
            with self.subTest(header=header):
                self.assertTrue(if_none_match_matches(header, "abc"))

    def test_weak_comparison(self) -> None:
        """
        A weak tag with the same value matches: If-None-Match compares weakly.
        """
        self.assertTrue(if_none_match_matches('W/"abc"', "abc"))

    def test_comma_inside_tag(self) -> None:
        """
        Commas inside a quoted tag do not split it.
        """
        self.assertTrue(if_none_match_matches('"a,b"', '"a,b"'))
        self.assertFalse(if_none_match_matches('"a,b"', "a"))

    def test_not_listed(self) -> None:
        """
        Other ETags do not match.
        """
        self.assertFalse(if_none_match_matches('"x", "y"', "abc"))

    def test_malformed(self) -> None:
        """
        A malformed list matches nothing, so the file is sent.
        """
        for header in ["abc", '"abc" "x"', '"abc', "", ","]:
            with self.subTest(header=header):
                self.assertFalse(if_none_match_matches(header, "abc"))

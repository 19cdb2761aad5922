"""
Property-based tests of every parser of client input (issue 14): whatever
a client sends, each gives its documented answer or its documented
rejection, never another exception, and what it returns keeps its
invariants.

The runs are deterministic (``derandomize``) and small, so CI is stable
and the whole module takes a few seconds; a failure prints the smallest
input that breaks the property.
"""

from __future__ import annotations

import os
import re
import tempfile

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.names import (
    MAX_FILENAME_BYTES,
    MAX_PROJECT_NAME_BYTES,
    InvalidDistFilename,
    is_safe_filename,
    normalize,
    parse_dist_filename,
)
from proxypypi.private.auth import parse_basic
from proxypypi.private.model import UploadRejected
from proxypypi.simple.negotiate import HTML, HTML_V1, JSON_V1, negotiate
from proxypypi.web.form import BodyRejected, FormReceiver, SpooledFile
from proxypypi.web.legacy import validate_form
from proxypypi.web.ranges import (
    FullResponse,
    SingleRange,
    Unsatisfiable,
    if_none_match_matches,
    if_range_matches,
    parse_range,
)
from proxypypi.web.simple import accepts_gzip
from tests.support.uploads import BOUNDARY, multipart

#: Small, repeatable runs.
quick = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Text as it comes in a header: latin-1, as twisted.web decodes it.
header_text = st.text(st.characters(max_codepoint=0xFF), max_size=80)

#: Byte positions, small and absurd (thousands of digits).
digits = st.one_of(
    st.integers(0, 10**6).map(str),
    st.integers(1, 5000).map(lambda n: "9" * n),
    st.integers(1, 50).map(lambda n: "0" * n + "7"),
)
range_header = st.one_of(
    header_text,
    st.builds(
        lambda unit, specs: f"{unit}={','.join(specs)}",
        st.sampled_from(["bytes", "Bytes", "items", "bytes "]),
        st.lists(
            st.builds(
                lambda a, b, ws: f"{a}{ws}-{ws}{b}",
                st.one_of(st.just(""), digits),
                st.one_of(st.just(""), digits),
                st.sampled_from(["", " ", "\t"]),
            ),
            min_size=1,
            max_size=3,
        ),
    ),
)


class RangeProperties(SynchronousTestCase):
    @quick
    @given(range_header, st.one_of(st.none(), st.integers(0, 10**12)))
    def test_any_range_header(self, header: str, size: int | None) -> None:
        """
        Every header gets the whole file, a range inside the file, or 416
        naming its size; with no size known, always the whole file.
        """
        result = parse_range(header, size)
        self.assertIsInstance(result, FullResponse | SingleRange | Unsatisfiable)
        if size is None:
            self.assertIsInstance(result, FullResponse)
        if isinstance(result, SingleRange):
            assert size is not None
            self.assertTrue(0 <= result.start <= result.end < size)
            self.assertEqual(result.size, size)
            self.assertEqual(result.length, result.end - result.start + 1)
        if isinstance(result, Unsatisfiable):
            self.assertEqual(result.size, size)

    @quick
    @given(header_text, st.one_of(st.none(), st.text(max_size=20)))
    def test_any_conditional_header(self, header: str, etag: str | None) -> None:
        """If-Range and If-None-Match answer yes or no to anything."""
        self.assertIsInstance(if_range_matches(header, etag), bool)
        self.assertIsInstance(if_none_match_matches(header, etag), bool)


media = st.sampled_from(
    [JSON_V1, HTML_V1, HTML, "application/json", "*/*", "text/*", "image/png", "a/b/c"]
)
accept_header = st.one_of(
    header_text,
    st.lists(
        st.builds(
            lambda m, q: m + q,
            media,
            st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=nan", ";q=1e999", ";q=-1", ";q"]),
        ),
        max_size=5,
    ).map(", ".join),
)


class NegotiationProperties(SynchronousTestCase):
    @quick
    @given(st.one_of(st.none(), accept_header))
    def test_any_accept(self, accept: str | None) -> None:
        """One of the three page types, or ``None`` (406); never an error."""
        self.assertIn(negotiate(accept), (JSON_V1, HTML_V1, HTML, None))

    @quick
    @given(st.one_of(st.none(), st.binary(max_size=60), accept_header.map(str.encode)))
    def test_any_accept_encoding(self, header: bytes | None) -> None:
        """gzip is accepted or not; never an error."""
        self.assertIsInstance(accepts_gzip(header), bool)

    @quick
    @given(st.one_of(st.none(), st.binary(max_size=80)))
    def test_any_authorization(self, header: bytes | None) -> None:
        """Basic credentials come out with a user name, or not at all."""
        credentials = parse_basic(header)
        if credentials is not None:
            self.assertTrue(credentials.username)


name_text = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}[A-Za-z0-9]", fullmatch=True),
    st.integers(190, 260).map(lambda n: "a" * n),
)


class NameProperties(SynchronousTestCase):
    @quick
    @given(name_text)
    def test_project_names(self, name: str) -> None:
        """
        A name normalizes to a PEP 503 name short enough to store (and
        normalizing it again changes nothing), or to ``None``.
        """
        normal = normalize(name)
        if normal is not None:
            self.assertRegex(normal, r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
            self.assertLessEqual(len(normal), MAX_PROJECT_NAME_BYTES)
            self.assertEqual(normalize(normal), normal)

    @quick
    @given(
        st.one_of(
            st.text(max_size=60),
            st.builds(
                lambda n, v, s: f"{n}-{v}{s}",
                name_text,
                st.from_regex(r"[0-9][0-9a-z.!+]{0,10}", fullmatch=True),
                st.sampled_from([".tar.gz", ".zip", "-py3-none-any.whl", ".whl", ".exe"]),
            ),
        )
    )
    def test_file_names(self, filename: str) -> None:
        """
        A safe name is one path segment, not hidden, without control
        characters, short enough for a file system; a parsed distribution
        name is safe and names a normalized project.
        """
        if is_safe_filename(filename):
            self.assertIsNone(re.search(r"[\x00-\x1f\x7f/\\]", filename))
            self.assertFalse(filename.startswith("."))
            self.assertLessEqual(len(filename.encode("utf-8", "replace")), MAX_FILENAME_BYTES)
        try:
            dist = parse_dist_filename(filename)
        except InvalidDistFilename:
            return
        self.assertTrue(is_safe_filename(filename))
        self.assertEqual(normalize(dist.project), dist.project)
        self.assertIn(dist.kind, ("wheel", "sdist"))


def _valid_body() -> bytes:
    fields = [("name", "corp-lib"), ("version", "1.0"), (":action", "file_upload")]
    return multipart(fields, ("corp_lib-1.0-py3-none-any.whl", b"PK\x03\x04" + b"z" * 200))


mutated_body = st.builds(
    lambda body, cuts: _mutate(body, cuts),
    st.just(_valid_body()),
    st.lists(st.tuples(st.integers(0, 600), st.binary(max_size=8)), max_size=4),
)


def _mutate(body: bytes, cuts: list[tuple[int, bytes]]) -> bytes:
    """``body`` with bytes replaced at a few places."""
    data = bytearray(body)
    for at, junk in cuts:
        data[at : at + len(junk)] = junk
    return bytes(data)


#: Fields of the upload form, and one it does not know.
FORM_FIELDS = [
    "name",
    "version",
    ":action",
    "protocol_version",
    "filetype",
    "sha256_digest",
    "md5_digest",
    "requires_python",
    "x",
]


class MultipartProperties(SynchronousTestCase):
    def setUp(self) -> None:
        self.spool = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, self.spool)

    @quick
    @given(
        st.one_of(st.binary(max_size=400), mutated_body),
        st.lists(st.integers(1, 64), min_size=1, max_size=8),
        st.integers(1, 300),
    )
    @example(_valid_body(), [7], 10_000)
    def test_any_body(self, body: bytes, splits: list[int], max_file: int) -> None:
        """
        Any body, cut anywhere: feeding raises only the 413 that stops the
        body; at the end the form has an error (400, 413) or fields, and
        at most one spool file exists, which ``discard`` removes.
        """
        receiver = FormReceiver.for_content_type(
            f"multipart/form-data; boundary={BOUNDARY}".encode(), self.spool, max_file
        )
        position = 0
        stopped = False
        for i in range(len(body)):
            step = splits[i % len(splits)]
            if position >= len(body):
                break
            try:
                receiver.feed(body[position : position + step])
            except BodyRejected as e:
                self.assertEqual(e.code, 413)
                stopped = True
                break
            position += step
        if not stopped:
            receiver.finish()
        if receiver.error is not None:
            self.assertIn(receiver.error.code, (400, 413))
            self.assertEqual(receiver.fields, {})
            self.assertEqual(os.listdir(self.spool), [])
        self.assertLessEqual(len(os.listdir(self.spool)), 1)
        if receiver.content is not None:
            self.assertLessEqual(receiver.content.size, max_file)
            try:
                validate_form(receiver.fields, receiver.content, "alice")
            except UploadRejected as e:
                self.assertEqual(e.code, 400)
        receiver.discard()
        self.assertEqual(os.listdir(self.spool), [])

    @quick
    @given(
        st.dictionaries(
            st.sampled_from(FORM_FIELDS),
            st.lists(st.text(max_size=70), max_size=2),
        ),
        st.text(max_size=60),
    )
    def test_any_form(self, fields: dict[str, list[str]], filename: str) -> None:
        """
        Any form gets one refusal, or an upload whose file name is safe and
        names its normalized project.
        """
        try:
            upload = validate_form(fields, SpooledFile(filename, "/nonexistent", 10), "alice")
        except UploadRejected as e:
            self.assertEqual(e.code, 400)
            return
        self.assertTrue(is_safe_filename(upload.filename))
        self.assertEqual(parse_dist_filename(upload.filename).project, upload.project)

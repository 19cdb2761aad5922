# -*- test-case-name: tests.test_upload -*-
"""
An upload's ``multipart/form-data`` body, parsed incrementally as it
arrives (``multipart.PushMultipartParser``, a sans-I/O parser that treq
already depends on): the one file part, ``content``, is written to a spool
file in ``DATA/tmp/`` chunk by chunk, and the small text fields are kept in
memory under a cap.
"""

from __future__ import annotations

import os
import secrets
from typing import IO

import attrs
from multipart import (  # type: ignore[import-untyped]
    MultipartError,
    MultipartSegment,
    ParserLimitReached,
    PushMultipartParser,
)
from multipart import parse_options_header as _parse_options_header
from twisted.logger import Logger

from proxypypi.cache.storage import PARTIAL_SUFFIX, remove_quietly, write_all
from proxypypi.sizes import format_size

#: Bytes of form fields (everything but the file) kept in memory at most;
#: twine sends the long description as a field.
MAX_FIELDS_SIZE = 4 * 1024 * 1024

#: Room for multipart framing (boundaries, part headers) on top of the file
#: Form parts accepted at most (twine repeats a field per classifier).
MAX_PARTS = 1000

#: The form field holding the distribution file.
CONTENT_FIELD = "content"

#: Chunk size when a form is parsed from an already buffered body.
_CHUNK = 64 * 1024

_log = Logger()


class BodyRejected(Exception):
    """
    The body cannot be accepted.

    :ivar code: the HTTP status to answer (400 or 413).
    :ivar message: one line saying why.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def media_type(value: bytes | None) -> tuple[str, dict[str, str]]:
    """
    The lower-cased media type of a ``Content-Type`` value and its options.
    """
    if not value:
        return "", {}
    kind, options = _parse_options_header(value.decode("latin-1"))
    return kind, options



@attrs.define(eq=False)
class SpooledFile:
    """
    The file part of an upload, complete in a spool file.

    :ivar filename: the file name exactly as the client sent it.
    :ivar path: the spool file.
    """

    filename: str
    path: str
    size: int


@attrs.define(eq=False)
class FormReceiver:
    """
    Takes a ``multipart/form-data`` body chunk by chunk: text fields into
    memory, the ``content`` file into a spool file.

    After `finish`, either `error` says why the body is unusable or
    `fields` and `content` hold the form.
    """

    boundary: str
    spool_dir: str
    max_file_size: int
    max_fields_size: int = MAX_FIELDS_SIZE
    log = Logger()

    fields: dict[str, list[str]] = attrs.field(factory=dict)
    content: SpooledFile | None = None
    error: BodyRejected | None = None
    _parser: PushMultipartParser | None = None
    _segment: MultipartSegment | None = None
    _value: bytearray = attrs.field(factory=bytearray)
    _fields_size: int = 0
    _fd: int | None = None
    _path: str | None = None
    _file_size: int = 0
    _finished: bool = False

    def __attrs_post_init__(self) -> None:
        try:
            self._parser = PushMultipartParser(
                self.boundary, max_segment_count=MAX_PARTS, strict=False
            )
        except MultipartError as e:
            self.error = BodyRejected(400, f"bad multipart boundary: {e}")

    @classmethod
    def for_content_type(
        cls, content_type: bytes | None, spool_dir: str, max_file_size: int
    ) -> FormReceiver:
        """
        A receiver for a body of this ``Content-Type``; one that already
        holds an error when the body is not ``multipart/form-data``.
        """
        kind, options = media_type(content_type)
        if kind != "multipart/form-data":
            receiver = cls("-", spool_dir, max_file_size)
            receiver._fail(
                BodyRejected(
                    400,
                    "uploads must be multipart/form-data (the legacy upload API), "
                    f"not {kind or 'a body without Content-Type'}",
                )
            )
            return receiver
        boundary = options.get("boundary", "")
        receiver = cls(boundary or "-", spool_dir, max_file_size)
        if not boundary:
            receiver._fail(BodyRejected(400, "multipart/form-data without a boundary"))
        return receiver

    def feed(self, data: bytes) -> None:
        """
        Take the next chunk of the body.

        :raises BodyRejected: (413) when the file or the fields exceed
            their limits; the caller must stop reading the body.
        """
        if self.error is not None or self._parser is None or not data:
            return
        try:
            for event in self._parser.parse(data):
                if isinstance(event, MultipartSegment):
                    self._start(event)
                elif event is None:
                    self._end()
                else:
                    self._data(event)
        except BodyRejected as e:
            self._fail(e)
            if e.code == 413:
                raise
        except ParserLimitReached as e:
            self._fail(BodyRejected(400, f"malformed multipart body: {e}"))
        except MultipartError as e:
            self._fail(BodyRejected(400, f"malformed multipart body: {e}"))
        except OSError as e:
            self.log.error("cannot spool an upload: {error}", error=e.strerror)
            self._fail(BodyRejected(507, f"cannot store the upload here: {e.strerror}"))

    def finish(self) -> None:
        """
        The body is complete: check that the multipart stream was too.
        """
        if self._finished:
            return
        self._finished = True
        if self.error is not None or self._parser is None:
            return
        try:
            self._parser.close()
        except MultipartError:
            self._fail(
                BodyRejected(
                    400, "truncated body: the multipart data ends before its last boundary"
                )
            )

    def take_content(self) -> SpooledFile | None:
        """
        Hand the spooled file over to the caller, who must remove or keep
        it from then on.
        """
        content, self.content = self.content, None
        return content

    def discard(self) -> None:
        """
        Remove whatever was spooled and not taken.  Safe to call twice.
        """
        self._close()
        for path in (self._path, self.content.path if self.content else None):
            if path is not None:
                remove_quietly(path)
        self._path = None
        self.content = None

    # Parser events

    def _start(self, segment: MultipartSegment) -> None:
        self._segment = segment
        self._value = bytearray()
        if segment.name != CONTENT_FIELD:
            return
        if segment.filename is None:
            raise BodyRejected(400, "the content field must be a file")
        # The parser turns a Windows path into its last part; such a name
        # must be refused, not cleaned up.
        if "\\" in (segment.header("Content-Disposition") or ""):
            raise BodyRejected(
                400,
                f"file name {segment.filename!r} must be a bare file name: "
                "no path separators or '..'",
            )
        if self.content is not None or self._path is not None:
            raise BodyRejected(400, "one file per upload: the content field came twice")
        name = f"upload-{secrets.token_hex(12)}{PARTIAL_SUFFIX}"
        path = os.path.join(self.spool_dir, name)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._path = path
        self._file_size = 0

    def _data(self, chunk: bytes) -> None:
        if self._fd is not None:
            self._file_size += len(chunk)
            if self._file_size > self.max_file_size:
                raise BodyRejected(
                    413,
                    f"upload larger than this index accepts ({format_size(self.max_file_size)}, "
                    "see --max-upload-size)",
                )
            write_all(self._fd, chunk)
            return
        self._fields_size += len(chunk)
        if self._fields_size > self.max_fields_size:
            raise BodyRejected(
                413, f"form fields larger than {format_size(self.max_fields_size)} in all"
            )
        self._value += chunk

    def _end(self) -> None:
        segment, self._segment = self._segment, None
        assert segment is not None
        if self._fd is not None:
            assert self._path is not None and segment.filename is not None
            self._close()
            self.content = SpooledFile(segment.filename, self._path, self._file_size)
            self._path = None
            return
        try:
            value = bytes(self._value).decode("utf-8")
        except UnicodeDecodeError:
            raise BodyRejected(400, f"form field {segment.name!r} is not UTF-8") from None
        self.fields.setdefault(segment.name or "", []).append(value)
        self._value = bytearray()

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _fail(self, error: BodyRejected) -> None:
        if self.error is None:
            self.error = error
        self.discard()
        self.fields = {}


def receive_buffered(
    content: IO[bytes], content_type: bytes | None, spool_dir: str, max_file_size: int
) -> FormReceiver:
    """
    Parse a body twisted.web already buffered (``request.content``), for a
    request that did not stream it (a site built without
    `SpoolingRequest`).  Blocking: run it in a thread.
    """
    receiver = FormReceiver.for_content_type(content_type, spool_dir, max_file_size)
    content.seek(0)
    try:
        while chunk := content.read(_CHUNK):
            receiver.feed(chunk)
    except BodyRejected:
        pass
    receiver.finish()
    return receiver



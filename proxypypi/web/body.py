# -*- test-case-name: tests.test_upload -*-
"""
Request bodies: bounded, and uploads streamed to disk as they arrive.

twisted.web reads a whole request body before any resource sees the
request, and by default it also parses a ``multipart/form-data`` body into
``request.args`` *in memory*.  For uploads of up to a gigabyte both are
wrong, so `SpoolingRequest` takes over the body as it is received:

- the size limit is enforced from the ``Content-Length`` header before a
  byte of the body is read, and again on every chunk (a chunked body has no
  length to check up front; ``Content-Length`` framing is enforced by
  ``HTTPChannel`` itself, so a forged length can only cut a body short,
  which the multipart parser then reports as truncated);
- a multipart body is parsed incrementally (``multipart.PushMultipartParser``,
  a sans-I/O parser that treq already depends on): the one file part,
  ``content``, is written to a spool file in ``DATA/tmp/`` chunk by chunk,
  and the small text fields are kept in memory under a cap;
- a body over a limit is answered with ``413`` at once and the connection
  closed, so no more bytes come in;
- nothing is written at all for an upload without credentials (or when
  uploads are disabled), and the credentials are checked while the body
  arrives: once they turn out wrong, the rest is only counted.  The answer
  (``401``) still waits for the end of the body, like any other.

Spool files are removed when the request ends, unless an upload took
ownership of them (`FormReceiver.take_content`); ``DATA/tmp/`` is emptied
at start-up after a crash.  Hashing and validation happen later, off the
reactor thread.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from io import BytesIO
from typing import IO, Any, cast

import attrs
from multipart import (  # type: ignore[import-untyped]
    MultipartError,
    MultipartSegment,
    ParserLimitReached,
    PushMultipartParser,
)
from multipart import parse_options_header as _parse_options_header
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.server import Request

from proxypypi.cache.storage import PARTIAL_SUFFIX, Runner, write_all

#: Bytes of form fields (everything but the file) kept in memory at most;
#: twine sends the long description as a field.
MAX_FIELDS_SIZE = 4 * 1024 * 1024

#: Room for multipart framing (boundaries, part headers) on top of the file
#: and the fields.
FRAMING_ALLOWANCE = 64 * 1024

#: The largest body of any other request (JSON for the yank API).
MAX_OTHER_BODY = 64 * 1024

#: Form parts accepted at most (twine repeats a field per classifier).
MAX_PARTS = 1000

#: The form field holding the distribution file.
CONTENT_FIELD = "content"

#: `SpoolingRequest.checked_user` until the credentials are checked.
NOT_CHECKED = object()

#: Chunk size when a form is parsed from an already buffered body.
_CHUNK = 64 * 1024

_log = Logger()


def _human(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


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


@attrs.frozen
class BodyPolicy:
    """
    How a site treats request bodies.

    :ivar spool_dir: where upload files are written while they arrive (on
        the same file system as the storage, so committing is a rename).
    :ivar max_upload_size: the largest distribution file accepted.
    :ivar uploads_enabled: whether anyone may upload at all; when not,
        multipart bodies are counted but never written anywhere.
    """

    spool_dir: str
    max_upload_size: int
    uploads_enabled: bool = True
    max_fields_size: int = MAX_FIELDS_SIZE
    max_other_body: int = MAX_OTHER_BODY
    #: Checks an ``Authorization`` header (firing with the user or
    #: ``None``) while the body arrives, so that a body sent with wrong
    #: credentials stops being written to disk as soon as that is known.
    authenticate: Callable[[bytes | None], Deferred[Any]] | None = None

    @property
    def max_form_body(self) -> int:
        return self.max_upload_size + self.max_fields_size + FRAMING_ALLOWANCE

    def too_large(self) -> str:
        return (
            f"upload larger than this index accepts ({_human(self.max_upload_size)}, "
            "see --max-upload-size)"
        )


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
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
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
        self._path = os.path.join(self.spool_dir, name)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._file_size = 0

    def _data(self, chunk: bytes) -> None:
        if self._fd is not None:
            self._file_size += len(chunk)
            if self._file_size > self.max_file_size:
                raise BodyRejected(
                    413,
                    f"upload larger than this index accepts ({_human(self.max_file_size)}, "
                    "see --max-upload-size)",
                )
            write_all(self._fd, chunk)
            return
        self._fields_size += len(chunk)
        if self._fields_size > self.max_fields_size:
            raise BodyRejected(
                413, f"form fields larger than {_human(self.max_fields_size)} in all"
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


def _raw_response(code: int, phrase: str, message: str) -> bytes:
    body = (message + "\n").encode("utf-8")
    head = (
        f"HTTP/1.1 {code} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Cache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def reason_phrase(message: str) -> bytes:
    """
    A one-line message as an HTTP reason phrase (twine and uv show it):
    printable ASCII only.
    """
    text = "".join(c if " " <= c <= "~" else "?" for c in message.strip())
    return text[:300].encode("ascii")


class SpoolingRequest(Request):
    """
    A request whose body is bounded and, for uploads, streamed to a spool
    file, following the `BodyPolicy` of its site (``site.body_policy``).
    Without a policy it behaves as twisted.web's own request, except that
    it never parses forms into memory.

    :ivar form: the upload form being received, if this is an upload whose
        body is worth keeping (uploads enabled, credentials sent).
    :ivar body_rejected: the body broke a limit; the request was answered
        and will not be processed.
    :ivar checked_user: what checking the credentials of an upload gave
        (the user or ``None``), once known; `NOT_CHECKED` before.
    """

    form: FormReceiver | None = None
    body_rejected: bool = False
    checked_user: object = NOT_CHECKED
    _limit: int | None = None
    _received: int = 0
    _discarding: bool = False
    _too_large: str = "request body too large"

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(channel, *args, **kwargs)

    @property
    def body_policy(self) -> BodyPolicy | None:
        policy = getattr(getattr(self.channel, "site", None), "body_policy", None)
        return policy if isinstance(policy, BodyPolicy) else None

    def gotLength(self, length: int | None) -> None:
        policy = self.body_policy
        if policy is None or length == 0:
            # No body (every GET): nothing to bound or spool.
            super().gotLength(length)
            return
        content_type = self.requestHeaders.getRawHeaders(b"content-type", [b""])[0]
        is_form = media_type(content_type)[0] == "multipart/form-data"
        self._limit = policy.max_form_body if is_form else policy.max_other_body
        if is_form:
            self._too_large = policy.too_large()
        if length is not None and length > self._limit:
            self.content = cast(Any, BytesIO())
            self._reject(413, self._too_large)
            return
        if not is_form:
            super().gotLength(length)
            return
        self.content = cast(Any, BytesIO())
        if not (policy.uploads_enabled and self.requestHeaders.hasHeader(b"authorization")):
            # Nobody could be allowed to upload this: count it, keep nothing.
            self._discarding = True
            return
        form = FormReceiver.for_content_type(content_type, policy.spool_dir, policy.max_upload_size)
        self.form = form
        self.notifyFinish().addBoth(lambda _: form.discard())
        if policy.authenticate is not None:
            header = self.requestHeaders.getRawHeaders(b"authorization", [b""])[0]
            policy.authenticate(header).addCallback(self._credentials_checked)

    def _credentials_checked(self, user: object) -> None:
        self.checked_user = user
        if user is None and self.form is not None:
            # Nobody to upload for: keep counting the body, write nothing.
            self.form.discard()
            self.form = None
            self._discarding = True

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_rejected:
            return
        self._received += len(data)
        if self._limit is not None and self._received > self._limit:
            self._reject(413, self._too_large)
            return
        if self.form is not None:
            try:
                self.form.feed(data)
            except BodyRejected as e:
                self._reject(e.code, e.message)
            return
        if self._discarding:
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.body_rejected:
            return
        if self.form is not None:
            self.form.finish()
        super().requestReceived(command, path, version)

    def _reject(self, code: int, message: str) -> None:
        """
        Answer now, before the body is complete, and close the connection
        so that no more of it comes in.
        """
        self.body_rejected = True
        if self.form is not None:
            self.form.discard()
        # Answered already: no "100 Continue" may follow.
        self.requestHeaders.removeHeader(b"expect")
        _log.info("refused a request body: {message}", message=message)
        transport = self.channel.transport
        if transport is not None:
            phrase = reason_phrase(message).decode("ascii")
            transport.write(_raw_response(code, phrase, message))
        self.channel.loseConnection()


def form_of(request: Any, policy: BodyPolicy, run: Runner) -> Deferred[FormReceiver | None]:
    """
    The upload form of ``request``: the one `SpoolingRequest` received
    while the body arrived, or, for any other request, one parsed now (in
    a thread) from the body twisted.web buffered.

    :returns: a Deferred firing with the form; with ``None`` only for a
        `SpoolingRequest` whose multipart body was not kept (it came
        without credentials).
    """
    content_type = request.getHeader(b"content-type")
    if isinstance(request, SpoolingRequest) and request.body_policy is not None:
        form = request.form
        if form is None and media_type(content_type)[0] != "multipart/form-data":
            # Not an upload at all; say so.
            form = FormReceiver.for_content_type(
                content_type, policy.spool_dir, policy.max_upload_size
            )
        return succeed(form)
    d: Deferred[FormReceiver] = run(
        receive_buffered, request.content, content_type, policy.spool_dir, policy.max_upload_size
    )

    def cleanup(form: FormReceiver) -> FormReceiver | None:
        request.notifyFinish().addBoth(lambda _: form.discard())
        return form

    return d.addCallback(cleanup)


__all__ = [
    "BodyPolicy",
    "BodyRejected",
    "FormReceiver",
    "SpooledFile",
    "SpoolingRequest",
    "form_of",
    "reason_phrase",
]

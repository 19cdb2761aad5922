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
  uploads are disabled), and nothing either before its credentials are
  checked: until then the connection is paused (the few bytes already
  read are held in memory) and ``Expect: 100-continue`` is not answered,
  so made-up credentials cannot fill the disk while bcrypt is busy.  With
  wrong ones the body is only counted; the answer (``401``) still waits
  for the end of the body, like any other.

Spool files are removed when the request ends, unless an upload took
ownership of them (`FormReceiver.take_content`); ``DATA/tmp/`` is emptied
at start-up after a crash.  Hashing and validation happen later, off the
reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.server import Request

from proxypypi.cache.storage import Runner
from proxypypi.internals import request_gone
from proxypypi.private.auth import User
from proxypypi.sizes import format_size
from proxypypi.web.errors import raw_response
from proxypypi.web.form import (
    MAX_FIELDS_SIZE,
    BodyRejected,
    FormReceiver,
    media_type,
    receive_buffered,
)

#: and the fields.
FRAMING_ALLOWANCE = 64 * 1024

#: The largest body of any other request (JSON for the yank API).
MAX_OTHER_BODY = 64 * 1024

#: `SpoolingRequest.checked_user` until the credentials are checked.
NOT_CHECKED = object()

#: Body bytes an upload may hold in memory while its credentials are
#: checked.  The connection is paused meanwhile, so what arrives is at most
#: what the last read had (64 KiB); more means a transport that does not
#: pause, and the upload is refused.
MAX_HELD = 1024 * 1024

#: The answer to ``Expect: 100-continue`` once the credentials are checked.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_log = Logger()


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
    #: Checks the credentials of an upload as soon as its headers are in
    #: (firing with the `User`, or anything else when there is none), so
    #: that no byte of its body is written before that is known.
    authenticate: Callable[[Any], Deferred[Any]] | None = None

    @property
    def max_form_body(self) -> int:
        return self.max_upload_size + self.max_fields_size + FRAMING_ALLOWANCE

    def too_large(self) -> str:
        return (
            f"upload larger than this index accepts ({format_size(self.max_upload_size)}, "
            "see --max-upload-size)"
        )



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
    #: Body chunks received while the credentials are being checked.
    _held: list[bytes] | None = None
    _held_size: int = 0
    #: The request's end, when it came before the credentials' verdict.
    _postponed: tuple[bytes, bytes, bytes] | None = None
    #: ``100 Continue`` is owed once the credentials are checked.
    _continue: bool = False

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
            self._held = []
            checked = policy.authenticate(self)
            if not checked.called:
                self._hold()
            checked.addCallback(self._credentials_checked)

    def _hold(self) -> None:
        """
        Receive no more of the body until the credentials are checked.
        """
        transport: Any = self.channel.transport
        if transport is not None:
            transport.pauseProducing()
        expect = self.requestHeaders.getRawHeaders(b"expect", [b""])[0]
        if expect.lower() == b"100-continue":
            # twisted.web would answer it right after the headers.
            self.requestHeaders.removeHeader(b"expect")
            self._continue = True

    def _credentials_checked(self, user: object) -> None:
        self.checked_user = user
        held, self._held = self._held or [], None
        if request_gone(self) or self.body_rejected:
            return
        if not isinstance(user, User) and self.form is not None:
            # Nobody to upload for: keep counting the body, write nothing.
            self.form.discard()
            self.form = None
            self._discarding = True
        transport: Any = self.channel.transport
        if self._continue and transport is not None:
            self._continue = False
            transport.write(CONTINUE)
        for chunk in held:
            self._take(chunk)
        if transport is not None:
            transport.resumeProducing()
        if self._postponed is not None:
            ended, self._postponed = self._postponed, None
            self.requestReceived(*ended)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_rejected:
            return
        self._received += len(data)
        if self._limit is not None and self._received > self._limit:
            self._reject(413, self._too_large)
            return
        if self._held is not None:
            self._held.append(data)
            self._held_size += len(data)
            if self._held_size > MAX_HELD:
                self._reject(503, "the upload came faster than its credentials could be checked")
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        """
        Spool, count or buffer a chunk of the body, once it may be kept.
        """
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
        if self._held is not None:
            self._postponed = (command, path, version)
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
            transport.write(raw_response(code, phrase, message))
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


__all__ = ["BodyPolicy", "SpoolingRequest", "form_of", "reason_phrase"]

# -*- test-case-name: tests.test_upload -*-
"""
The legacy upload API, as twine and ``uv publish`` speak it: ``POST /``,
``/legacy`` or ``/legacy/`` (never a redirect: twine refuses to follow one
for a POST), ``multipart/form-data`` with ``:action=file_upload``.

Checks come in an order that gives nothing away: uploads disabled (403),
then credentials (401, the same answer for any fault), then the body, the
form, the file.  Each refusal is one line, in the body and in the status
line's reason phrase, and nothing of a refused upload stays on disk.
An identical re-upload answers 200, so twine's retries after a 5xx are
harmless; a different file under an existing name answers 409, which
``twine upload --skip-existing`` understands.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from proxypypi.private.auth import User
from proxypypi.private.model import UploadRejected
from proxypypi.web.body import BodyPolicy, form_of
from proxypypi.web.deferred import render_async
from proxypypi.web.errors import ErrorResource, Page
from proxypypi.web.guard import answer, check_credentials, writer
from proxypypi.web.legacy import refusal, validate_form
from proxypypi.web.proxy import Proxy

_log = Logger()


def body_policy(proxy: Proxy) -> BodyPolicy:
    """
    How the site treats request bodies for this proxy: uploads spool into
    ``DATA/tmp/`` (so committing them is a rename) up to the upload limit.
    """
    return BodyPolicy(
        spool_dir=proxy.storage.tmp_dir,
        max_upload_size=proxy.config.max_upload_size,
        uploads_enabled=proxy.auth is not None,
        authenticate=(lambda request: check_credentials(proxy, request))
        if proxy.auth is not None
        else None,
    )


class UploadResource(Page):
    """
    ``/legacy/`` (and ``POST /``, which the root hands here).
    """

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"" and not request.postpath:
            return self
        return ErrorResource(404, "no such page; uploads go to / or /legacy/")

    def render_POST(self, request: IRequest) -> int:
        return render_async(request, lambda: self._upload(request))

    async def _upload(self, request: IRequest) -> bytes:
        user = await writer(self.proxy, request)
        if not isinstance(user, User):
            return user
        form = await form_of(request, body_policy(self.proxy), self.proxy.storage.run)
        if form is None:
            return answer(request, 400, "the upload body was not received")
        if form.error is not None:
            return answer(request, form.error.code, form.error.message)
        try:
            upload = validate_form(form.fields, form.content, user.name)
            form.take_content()
            if "attestations" in form.fields:
                _log.info(
                    "ignoring the attestations sent with {filename}: this index does "
                    "not verify or publish them",
                    filename=upload.filename,
                )
            result = await self.proxy.private.add(upload)
        except UploadRejected as e:
            message = refusal(e)
            _log.info("refused an upload by {user}: {message}", user=user.name, message=message)
            return answer(request, e.code, message)
        except OSError as e:
            _log.failure("cannot store an upload")
            return answer(request, 507, f"cannot store the upload here: {e.strerror}")
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        what = "already here, identical" if result.existing else "stored"
        body = f"{result.file.filename}: {what} (sha256 {result.file.sha256})\n".encode()
        request.setHeader(b"content-length", b"%d" % len(body))
        return body

# -*- test-case-name: tests.test_index,tests.test_web -*-
"""
The forms a project page is served in: JSON or HTML (PEP 691), each plain
or gzip-compressed.

Pages from the upstreams keep each form in a file of its own beside the
stored page, ``DATA/pages/_forms/<project>.<suffix>``, rendered when first
asked for and sent from the file (sendfile on plain TCP); the operating
system's page cache keeps the hot ones in memory.  Private pages, small and
few, keep their forms in memory (`MemoryForms`).

File URLs in every form point at this proxy (``../../files/<project>/
<file>``); the upstream's URLs never reach a client.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Iterable
from urllib.parse import quote

import attrs
from isal import isal_zlib

from proxypypi.policy.decision import Held
from proxypypi.simple.model import DistFile, ProjectPage
from proxypypi.simple.negotiate import JSON_V1
from proxypypi.simple.render import render_project_html, render_project_json

#: gzip level of compressed forms, on ISA-L's scale (0 to 3).  Measured on
#: an 8,000-file JSON page of 4.3 MB: the standard zlib at level 3 took
#: 16.3 ms for 587 kB, ISA-L at level 1 3.2 ms for 535 kB (its level 3,
#: 10.4 ms for 569 kB, is no better); zlib's level 6 is 40 ms.
GZIP_LEVEL = 1

#: File names that stand in a URL as they are (what ``quote`` leaves).
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~+!-]*")

#: The directory of the forms, under the pages directory; project names
#: never start with ``_``, so it cannot be a project's.
FORMS_DIR = "_forms"

#: Where an offline proxy keeps its forms: they list only stored files, so
#: they must not be served once the proxy is online again.
OFFLINE_FORMS_DIR = "_offline"


class Form(enum.Enum):
    """
    One form of a page; the value is its file's suffix.
    """

    JSON = "json"
    JSON_GZ = "json.gz"
    HTML = "html"
    HTML_GZ = "html.gz"

    @property
    def is_json(self) -> bool:
        return self in (Form.JSON, Form.JSON_GZ)

    @property
    def gzipped(self) -> bool:
        return self in (Form.JSON_GZ, Form.HTML_GZ)

    @property
    def plain(self) -> Form:
        """
        The uncompressed form with the same content.
        """
        return Form.JSON if self.is_json else Form.HTML

    @classmethod
    def of(cls, media_type: str, gzipped: bool) -> Form:
        """
        The form for a negotiated media type (both HTML types share one)
        and whether the client accepts gzip.
        """
        if media_type == JSON_V1:
            return cls.JSON_GZ if gzipped else cls.JSON
        return cls.HTML_GZ if gzipped else cls.HTML


def local_url(f: DistFile, project: str) -> str:
    """
    A file's URL on this proxy, relative to its page.
    """
    name = f.filename
    if _URL_SAFE.fullmatch(name) is None:
        name = quote(name, safe="+!")
    return f"../../files/{project}/{name}"


def compressor() -> isal_zlib.Compress:
    """
    A gzip compressor (ISA-L's, which releases the GIL as it works).
    """
    return isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)


def compress(body: bytes) -> bytes:
    """
    ``body`` gzip-compressed, with no file name or time in the header, so
    the same content always gives the same bytes.
    """
    gzip = compressor()
    return gzip.compress(body) + gzip.flush()


def render(
    page: ProjectPage, forms: Iterable[Form], json_body: bytes | None = None
) -> dict[Form, bytes]:
    """
    The bytes of ``forms`` of ``page``; each content rendered once, however
    many of its forms are asked for.  Blocking for a large page: a thread's
    work.

    :param json_body: the JSON content, when the caller rendered it already.
    """
    wanted = set(forms)
    out: dict[Form, bytes] = {}
    for plain, gzipped in ((Form.JSON, Form.JSON_GZ), (Form.HTML, Form.HTML_GZ)):
        if plain not in wanted and gzipped not in wanted:
            continue
        if plain is Form.JSON:
            body = json_body or render_project_json(page, lambda f: local_url(f, page.name))
        else:
            body = render_project_html(page, lambda f: local_url(f, page.name))
        if plain in wanted:
            out[plain] = body
        if gzipped in wanted:
            out[gzipped] = compress(body)
    return out


def form_path(forms_dir: str, project: str, form: Form | str) -> str:
    """
    The file of one form of a stored page (or, given a suffix, of
    another file kept with them).
    """
    suffix = form.value if isinstance(form, Form) else form
    return os.path.join(forms_dir, f"{project}.{suffix}")


def file_etag(size: int, mtime_ns: int, inode: int) -> str:
    """
    The entity tag of a form's file: it changes whenever the file is
    replaced (forms are rewritten only when their bytes change), and every
    process sharing the storage computes the same one.
    """
    return f'"{inode:x}-{mtime_ns:x}-{size:x}"'


@attrs.frozen
class Rendered:
    """
    A form held in memory, with its entity tag.
    """

    body: bytes
    etag: str


@attrs.define(eq=False)
class MemoryForms:
    """
    The forms of a small page kept in memory (a private project), each
    rendered when first asked for.

    :ivar held: what the policy left out of ``page``.
    """

    page: ProjectPage
    held: Held = attrs.field(factory=Held)
    _rendered: dict[Form, Rendered] = attrs.field(factory=dict)

    def get(self, form: Form) -> Rendered:
        found = self._rendered.get(form)
        if found is None:
            body = render(self.page, [form])[form]
            tag = hashlib.sha256(body).hexdigest()[:32]
            found = self._rendered[form] = Rendered(body, f'"{tag}"')
        return found


@attrs.define(eq=False)
class SmallForms:
    """
    The bytes of small forms asked for lately, least recently used dropped
    first past ``budget``: a hot index page is answered from memory, where
    opening and reading its file for each request would cost more than the
    rest of the request.  Each is keyed by its file's path and identity
    (inode, modification time, size), so a form rewritten (by this process
    or another sharing the storage) is read anew; the ``stat`` that tells
    is made for every request anyway.
    """

    budget: int = 8 * 1024 * 1024
    #: Forms larger than this are sent from their files.
    largest: int = 256 * 1024
    _entries: OrderedDict[str, tuple[tuple[int, int, int], bytes]] = attrs.field(
        factory=OrderedDict
    )
    _size: int = 0

    def bytes_of(self, path: str, identity: tuple[int, int, int]) -> bytes | None:
        """
        The bytes of the form at ``path`` whose file is ``identity``
        (inode, modification time, size): from memory, or read now (from
        the page cache: it was just written or served); ``None`` when too
        large, or unreadable.
        """
        found = self._entries.get(path)
        if found is not None and found[0] == identity:
            self._entries.move_to_end(path)
            return found[1]
        size = identity[2]
        if size > self.largest:
            return None
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_ino != identity[0]:
                    return None
                data = f.read(size + 1)
        except OSError:
            return None
        if len(data) != size:
            return None
        self._keep(path, identity, data)
        return data

    def _keep(self, path: str, identity: tuple[int, int, int], data: bytes) -> None:
        old = self._entries.pop(path, None)
        if old is not None:
            self._size -= len(old[1])
        self._entries[path] = (identity, data)
        self._size += len(data)
        while self._size > self.budget:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._size -= len(dropped)

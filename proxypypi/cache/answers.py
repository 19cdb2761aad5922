# -*- test-case-name: tests.test_index,tests.test_web -*-
"""
A form of a page made ready to send: its bytes when memory has them (a
small form, or one the disk would not take), else its file, with its
entity tag.
"""

from __future__ import annotations

import hashlib

import attrs

from proxypypi.cache.complete import CompleteFile
from proxypypi.cache.forms import Form, SmallForms, file_etag
from proxypypi.cache.pagememory import PageFacts
from proxypypi.cache.pagestore import PageStore


@attrs.frozen
class Answer:
    """
    A form of a page, ready to send, with its entity tag: its bytes when
    held in memory (a small form, or one the disk would not take), else
    its file.

    :ivar cache: ``hit``, ``stale`` or ``miss`` (fetched for this request).
    :ivar source: the form's file (none when the disk would not take it).
    :ivar body: the form's bytes, when memory has them: sent rather than
        the file.
    """

    facts: PageFacts
    form: Form
    etag: str
    cache: str
    source: CompleteFile | None = None
    body: bytes | None = None


def answer_of(
    store: PageStore, small: SmallForms, facts: PageFacts, form: Form, cache: str
) -> Answer | None:
    """
    ``form`` of the page of ``facts``, if it is there to send: in the
    facts (while the disk takes no writes), or on disk (one ``stat``).
    """
    body = facts.rendered.get(form)
    if body is not None:
        # Only while the disk takes no writes: not worth remembering.
        tag = hashlib.sha256(body).hexdigest()[:32]
        return Answer(facts, form, f'"{tag}"', cache, body=body)
    path = store.form_path(facts.name, form)
    source = CompleteFile.at(path)
    if source is None:
        return None
    etag = file_etag(source.size, source.mtime_ns, source.identity[1])
    body = small.bytes_of(path, (source.identity[1], source.mtime_ns, source.size))
    return Answer(facts, form, etag, cache, source=source, body=body)

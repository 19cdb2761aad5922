# -*- test-case-name: tests.test_coremetadata -*-
"""
Who takes the core metadata out of a wheel just stored: told of each file
the download manager commits, it extracts a wheel's METADATA when its
page offers none (`proxypypi.cache.coremetadata`), then has the page
rendered again so that it offers it from then on.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from proxypypi.cache.coremetadata import WheelMetadataError, extract_metadata
from proxypypi.cache.pages import PageCache
from proxypypi.cache.storage import FileKey, Storage
from proxypypi.names import normalize


@attrs.define
class MetadataExtractor:
    """
    Offers the core metadata of stored wheels whose upstream offers none.
    """

    storage: Storage
    pages: PageCache
    log = Logger()

    def stored(self, key: FileKey) -> None:
        """
        ``key`` was just stored: extract its metadata in the background if
        it is a wheel whose page offers none.
        """
        if not key.filename.endswith(".whl"):
            return
        d = Deferred.fromCoroutine(self._extract(key))
        d.addErrback(
            lambda f: self.log.failure("cannot offer the core metadata of {file}", f,
                                       file=key.filename)  # fmt: skip
        )

    async def _extract(self, key: FileKey) -> None:
        name = normalize(key.project)
        if name is None:
            return
        _, listed = await self.pages.entry(name, key.filename)
        if listed is None or listed.core_metadata:
            return
        path = self.storage.file_path(key.project, key.filename)
        try:
            await self.storage.run(extract_metadata, path, key.filename)
        except WheelMetadataError as e:
            self.log.warn("no core metadata to offer for {file}: {error}", file=key.filename,
                          error=str(e))  # fmt: skip
            return
        await self.pages.offer_metadata(name)

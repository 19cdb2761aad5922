# -*- test-case-name: tests.test_upload -*-
"""
The private tree on disk (``DATA/private/<project>/``): reading a
project's page, and putting an upload's files in place.  Blocking: called
through the storage's runner, or at start-up.
"""

from __future__ import annotations

import json
import os

from packaging.utils import NormalizedName

from proxypypi.cache.storage import fsync_dir, write_atomically
from proxypypi.names import METADATA_SUFFIX
from proxypypi.private.model import PAGE_FILE, PrivateFile, PrivateProject, first_uploaders


def read_project(directory: str, name: NormalizedName) -> PrivateProject | None:
    """
    The private project whose page is in ``directory``, or ``None`` when
    there is none (blocking).

    :raises ValueError: (or ``KeyError``, ``TypeError``, ``OSError``) for a
        damaged page.
    """
    page = os.path.join(directory, PAGE_FILE)
    if not os.path.isfile(page):
        return None
    with open(page, "rb") as f:
        doc = json.load(f)
    files = [PrivateFile.from_json(item) for item in doc["files"]]
    owners = doc.get("owners")
    if owners is None:
        owners = first_uploaders(files)
    elif not all(isinstance(o, str) for o in owners):
        raise TypeError("owners must be user names")
    return PrivateProject.build(name, files, owners)



def commit_upload(
    root: str, project: str, filename: str, spool: str, metadata: str | None, page: bytes
) -> None:
    """
    Rename an upload's (already fsynced) spool files into place, then
    write the project's page.
    """
    directory = os.path.join(root, project)
    os.makedirs(directory, exist_ok=True)
    os.replace(spool, os.path.join(directory, filename))
    meta_path = os.path.join(directory, filename + METADATA_SUFFIX)
    if metadata is not None:
        os.replace(metadata, meta_path)
    else:
        try:
            os.unlink(meta_path)  # an overwritten wheel's, say
        except FileNotFoundError:
            pass
    fsync_dir(directory)
    fsync_dir(root)
    write_atomically(os.path.join(directory, PAGE_FILE), page)

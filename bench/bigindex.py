"""
A static upstream index at the public index's real sizes, written to a
directory for nginx to serve (so the upstream costs nothing):

- ``simple/index.html``: the project list, ``--list-names`` names (the public
  index lists over 900,000), with a ``.gz`` beside it;
- ``simple/<project>/index.json``: PEP 691 pages (api-version 1.1, sizes,
  upload times, core metadata for wheels) for ``--pages`` projects whose
  file counts add up to ``--page-files``, the largest with
  ``--largest-page`` files, as a grpcio or botocore page has; each with a
  ``.gz`` beside it.

File names are realistic (an sdist and a spread of wheel tags per
release), hashes are distinct, and everything is deterministic for a
seed, so two runs measure the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from collections.abc import Iterator

import attrs

#: Wheel tags of one release of a compiled project, as grpcio publishes.
_TAGS = (
    "cp{v}-cp{v}-manylinux_2_17_x86_64.manylinux2014_x86_64",
    "cp{v}-cp{v}-manylinux_2_17_aarch64.manylinux2014_aarch64",
    "cp{v}-cp{v}-musllinux_1_1_x86_64",
    "cp{v}-cp{v}-musllinux_1_1_i686",
    "cp{v}-cp{v}-macosx_10_9_universal2",
    "cp{v}-cp{v}-win_amd64",
    "cp{v}-cp{v}-win32",
    "cp{v}-cp{v}-linux_armv7l",
)
_PYTHONS = ("38", "39", "310", "311", "312", "313")

#: The project list's HTML head and tail, as the public index writes them.
_LIST_HEAD = (
    '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
    'content="1.1">\n    <title>Simple index</title>\n  </head>\n  <body>\n'
)
_LIST_TAIL = "  </body>\n</html>\n"


@attrs.frozen
class Page:
    """
    One generated project page.
    """

    project: str
    files: int
    path: str


def _releases(rng: random.Random) -> Iterator[str]:
    """
    Version strings, oldest first, with the odd pre-release.
    """
    major = 0
    while True:
        major += 1
        for minor in range(12):
            for patch in range(4):
                yield f"{major}.{minor}.{patch}"
                if rng.random() < 0.15:
                    yield f"{major}.{minor}.{patch + 1}rc1"


def page_doc(project: str, files: int, seed: int) -> dict[str, object]:
    """
    The PEP 691 page of ``project`` with exactly ``files`` files.
    """
    rng = random.Random(seed)
    dist = project.replace("-", "_")
    entries: list[dict[str, object]] = []
    versions: list[str] = []
    for version in _releases(rng):
        if len(entries) >= files:
            break
        versions.append(version)
        names = [f"{dist}-{version}.tar.gz"]
        for tag in _TAGS:
            for python in _PYTHONS:
                names.append(f"{dist}-{version}-{tag.format(v=python)}.whl")
        for name in names[: files - len(entries)]:
            digest = hashlib.sha256(f"{seed}/{name}".encode()).hexdigest()
            wheel = name.endswith(".whl")
            metadata = {"sha256": hashlib.sha256(digest.encode()).hexdigest()} if wheel else False
            entries.append(
                {
                    "core-metadata": metadata,
                    "data-dist-info-metadata": metadata,
                    "filename": name,
                    "hashes": {"sha256": digest},
                    "requires-python": ">=3.8",
                    "size": rng.randrange(50_000, 9_000_000),
                    "upload-time": f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
                    f"T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00.{rng.randrange(10**6):06d}Z",
                    "url": f"https://files.example/packages/{digest[:2]}/{digest[2:4]}/"
                    f"{digest[4:]}/{name}",
                    "yanked": False,
                }
            )
    return {
        "meta": {"api-version": "1.1", "_last-serial": seed},
        "name": project,
        "files": entries,
        "versions": versions,
    }


def page_sizes(pages: int, total: int, largest: int) -> list[int]:
    """
    File counts of ``pages`` pages adding up to ``total``: one of
    ``largest`` files, the rest falling off as real projects do.
    """
    rest = total - largest
    weights = [1.0 / (i + 1) for i in range(pages - 1)]
    scale = rest / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    sizes[0] += rest - sum(sizes)
    return [largest, *sizes]


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".gz", "wb") as f:
        f.write(gzip.compress(data, 6, mtime=0))


def write_index(
    root: str, *, pages: int, page_files: int, largest_page: int, list_names: int, seed: int = 1
) -> list[Page]:
    """
    Write the index under ``root`` (``root/simple/...``).

    :returns: the pages, largest first.
    """
    written = []
    for i, files in enumerate(page_sizes(pages, page_files, largest_page)):
        project = f"big-project-{i:02d}"
        path = os.path.join(root, "simple", project, "index.json")
        body = json.dumps(page_doc(project, files, seed + i), separators=(",", ":")).encode()
        _write(path, body)
        written.append(Page(project, files, path))
    names = [p.project for p in written]
    names += [f"project-{i:07d}" for i in range(list_names - len(names))]
    anchors = "".join(f'    <a href="/simple/{n}/">{n}</a><br/>\n' for n in names)
    _write(
        os.path.join(root, "simple", "index.html"),
        (_LIST_HEAD + anchors + _LIST_TAIL).encode(),
    )
    return written

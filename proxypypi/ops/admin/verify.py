# -*- test-case-name: tests.test_admin -*-
"""
``proxypypi-admin verify``: re-hash every stored file against the hash its
project page promised, move mismatches to ``DATA/quarantine/<project>/``,
and report (with ``--repair``: remove) leftovers: zero-byte files, foreign
files and temporary files a crash left behind.

Every change is one ``rename`` or ``unlink``, each atomic, so it is safe
next to a running service: a quarantined or removed upstream file is simply
fetched again on its next request.  Temporary files younger than
``--min-age`` may belong to a running download and are left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from typing import TextIO

import attrs

from proxypypi.cache.storage import PARTIAL_SUFFIX
from proxypypi.names import (
    METADATA_SUFFIX,
    InvalidDistFilename,
    is_safe_filename,
    normalize,
    parse_dist_filename,
)
from proxypypi.ops.admin.common import AdminError, entries, walk

#: Seconds a temporary file must be left untouched before it counts as a
#: leftover; a live download writes to its partial file far more often.
DEFAULT_MIN_AGE = 3600.0

#: Hash algorithms tried, best first, when a page lists several.
_PREFERRED = ("sha256", "sha512", "sha384", "blake2b", "sha224", "sha1", "md5")

#: (algorithm, hex digest) a file must match, or ``None`` when a page lists
#: the file without any usable hash.
Expected = tuple[str, str] | None



# Pages


def _best_hash(hashes: object) -> Expected:
    if not isinstance(hashes, dict):
        return None
    for name in _PREFERRED:
        digest = hashes.get(name)
        if isinstance(digest, str) and digest:
            return name, digest.lower()
    return None


def page_hashes(raw: bytes) -> dict[str, Expected]:
    """
    The hash every file listed on a stored page must match, keyed by file
    name, with ``<filename>.metadata`` keyed to the PEP 658 core-metadata
    hash.  Reads the JSON directly, so file URLs are irrelevant: upstream
    pages as the service stores them (PEP 691, ``hashes`` and
    ``core-metadata``) and private pages (``.page.json``: flat ``sha256``
    and ``metadata-sha256``, see `proxypypi.private.store`).

    :raises ValueError: when ``raw`` is not such a page.
    """
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise ValueError("not a project page (no files list)")
    out: dict[str, Expected] = {}
    for entry in doc["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            continue
        filename = entry["filename"]
        if "hashes" in entry:
            out[filename] = _best_hash(entry["hashes"])
        else:
            out[filename] = _best_hash({"sha256": entry.get("sha256")})
        if entry.get("metadata-sha256"):
            out[filename + METADATA_SUFFIX] = _best_hash({"sha256": entry["metadata-sha256"]})
        for key in ("core-metadata", "data-dist-info-metadata", "dist-info-metadata"):
            metadata = entry.get(key)
            if metadata:
                out[filename + METADATA_SUFFIX] = _best_hash(metadata)
                break
    return out


def _file_digest(path: str, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _is_dist_name(filename: str) -> bool:
    try:
        parse_dist_filename(filename.removesuffix(METADATA_SUFFIX))
    except InvalidDistFilename:
        return False
    return True



@attrs.define
class Finding:
    """
    One thing ``verify`` reports.

    :ivar kind: ``mismatch``, ``unverified``, ``zero-byte``, ``foreign``,
        ``temporary`` or ``damaged-page``.
    :ivar path: relative to the storage directory.
    :ivar action: what was done about it, if anything.
    """

    kind: str
    path: str
    detail: str
    action: str = ""

    def line(self) -> str:
        text = f"{self.kind.upper():<12} {self.path}: {self.detail}"
        return f"{text}; {self.action}" if self.action else text


#: Leftovers ``--repair`` removes.
_REMOVABLE = ("zero-byte", "foreign", "temporary")


@attrs.define
class Verifier:
    """
    One ``verify`` run over the storage directory ``root``.
    """

    root: str
    repair: bool = False
    min_age: float = DEFAULT_MIN_AGE
    now: float = attrs.field(factory=time.time)
    findings: list[Finding] = attrs.field(factory=list)
    checked: int = 0
    verified: int = 0

    def run(self) -> list[Finding]:
        if not os.path.isdir(self.root):
            raise AdminError(f"{self.root} is not a directory; give the service's --storage")
        self._files()
        self._private()
        self._pages()
        self._tmp()
        return self.findings

    @property
    def mismatches(self) -> int:
        return sum(1 for f in self.findings if f.kind == "mismatch")

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def _report(self, kind: str, path: str, detail: str) -> Finding:
        finding = Finding(kind, self._rel(path), detail)
        self.findings.append(finding)
        if self.repair and kind in _REMOVABLE:
            try:
                os.unlink(path)
                finding.action = "removed"
            except OSError as e:
                finding.action = f"cannot remove: {e.strerror}"
        return finding

    def _quarantine(self, project: str, path: str) -> str:
        """
        Move ``path`` to ``quarantine/<project>/`` (atomic rename), never
        overwriting an earlier quarantined file.
        """
        directory = os.path.join(self.root, "quarantine", project)
        os.makedirs(directory, exist_ok=True)
        name = os.path.basename(path)
        dest = os.path.join(directory, name)
        n = 0
        while os.path.lexists(dest):
            n += 1
            dest = os.path.join(directory, f"{name}.{n}")
        os.rename(path, dest)
        return self._rel(dest)

    def _check(self, project: str, path: str, expected: Expected, listed: bool) -> None:
        self.checked += 1
        if expected is None:
            why = "listed without a hash" if listed else "no page lists it"
            self.findings.append(Finding("unverified", self._rel(path), f"no hash known ({why})"))
            return
        algorithm, want = expected
        try:
            got = _file_digest(path, algorithm)
        except FileNotFoundError:
            self.checked -= 1  # evicted by a running service meanwhile
            return
        except (OSError, ValueError) as e:
            self.findings.append(Finding("unverified", self._rel(path), f"cannot hash: {e}"))
            return
        if got == want:
            self.verified += 1
            return
        finding = Finding(
            "mismatch", self._rel(path), f"{algorithm} is {got}, the page says {want}"
        )
        self.findings.append(finding)
        try:
            finding.action = "moved to " + self._quarantine(project, path)
        except OSError as e:
            finding.action = f"cannot quarantine: {e.strerror}"

    def _old_enough(self, path: str) -> bool:
        try:
            return self.now - os.lstat(path).st_mtime >= self.min_age
        except OSError:
            return False

    def _load_hashes(self, *pages: str) -> dict[str, Expected]:
        hashes: dict[str, Expected] = {}
        for page in pages:
            try:
                with open(page, "rb") as f:
                    hashes.update(page_hashes(f.read()))
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                # Reported once, by _pages (upstream) or not at all (private
                # pages in a layout we do not know).
                continue
        return hashes

    def _files(self) -> None:
        files = os.path.join(self.root, "files")
        for project in entries(files):
            if not project.is_dir(follow_symlinks=False):
                self._report("foreign", project.path, "not inside a project directory")
                continue
            normal = normalize(project.name) == project.name
            hashes = self._load_hashes(os.path.join(self.root, "pages", project.name + ".json"))
            for entry in entries(project.path):
                self._upstream_file(project.name, normal, entry, hashes)

    def _upstream_file(
        self, project: str, normal: bool, entry: os.DirEntry[str], hashes: dict[str, Expected]
    ) -> None:
        name, path = entry.name, entry.path
        try:
            size = entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            return  # evicted by a running service meanwhile
        if entry.is_dir(follow_symlinks=False) or entry.is_symlink():
            self.findings.append(
                Finding("foreign", self._rel(path), "not a regular file (left in place)")
            )
        elif name.endswith(PARTIAL_SUFFIX):
            if self._old_enough(path):
                self._report("temporary", path, "temporary file left by a crash")
        elif size == 0:
            self._report("zero-byte", path, "empty file")
        elif not normal:
            self._report("foreign", path, "project directory name is not normalized")
        elif not is_safe_filename(name) or (name not in hashes and not _is_dist_name(name)):
            self._report("foreign", path, "not a distribution file name")
        else:
            self._check(project, path, hashes.get(name), name in hashes)

    def _private(self) -> None:
        """
        Private uploads are only hash-checked (and quarantined on a
        mismatch); their directory is private storage's business, so
        nothing else in it is reported or removed.
        """
        private = os.path.join(self.root, "private")
        for project in entries(private):
            if not project.is_dir(follow_symlinks=False):
                continue
            pages = [e.path for e in entries(project.path) if e.name.endswith(".json")]
            hashes = self._load_hashes(*pages)
            for entry in walk(project.path):
                name = entry.name
                if name.endswith(".json") or name.startswith(".") or name.endswith(PARTIAL_SUFFIX):
                    continue
                self._check(
                    os.path.join("private", project.name),
                    entry.path,
                    hashes.get(name),
                    name in hashes,
                )

    def _pages(self) -> None:
        pages = os.path.join(self.root, "pages")
        for entry in entries(pages):
            name, path = entry.name, entry.path
            if name.endswith(PARTIAL_SUFFIX):
                if self._old_enough(path):
                    self._report("temporary", path, "temporary file left by a crash")
            elif not name.endswith(".json") or not entry.is_file(follow_symlinks=False):
                self._report("foreign", path, "not a page")
            else:
                try:
                    with open(path, "rb") as f:
                        page_hashes(f.read())
                except (OSError, ValueError) as e:
                    finding = Finding("damaged-page", self._rel(path), f"unreadable: {e}")
                    self.findings.append(finding)
                    if self.repair:
                        finding.action = "moved to " + self._quarantine(name[:-5], path)

    def _tmp(self) -> None:
        for entry in entries(os.path.join(self.root, "tmp")):
            if entry.is_file(follow_symlinks=False) and self._old_enough(entry.path):
                self._report("temporary", entry.path, "temporary file left by a crash")

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        parts = [f"{self.checked} files checked, {self.verified} verified"]
        parts += [f"{n} {kind}" for kind, n in sorted(counts.items())]
        leftovers = sum(n for kind, n in counts.items() if kind in _REMOVABLE)
        if leftovers and not self.repair:
            parts.append("run with --repair to remove the leftovers")
        return "; ".join(parts)



def verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    verifier = Verifier(args.storage, repair=args.repair, min_age=args.min_age)
    for finding in verifier.run():
        print(finding.line(), file=out)
    print(verifier.summary(), file=out)
    return 1 if verifier.mismatches else 0



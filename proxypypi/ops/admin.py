# -*- test-case-name: tests.test_admin -*-
"""
``proxypypi-admin``: housekeeping for a proxypypi storage directory.

A plain command-line program, independent of twistd and of the reactor, so
it works on the storage of a stopped service as well as a running one:

``verify``
    re-hash every stored file against the hash its project page promised,
    move mismatches to ``DATA/quarantine/<project>/``, and report (with
    ``--repair``: remove) leftovers: zero-byte files, foreign files and
    temporary files a crash left behind.
``stats``
    projects, files and bytes, upstream cache and private uploads apart.
``prefetch``
    warm the cache through a running service by having pip download a set
    of requirements (dependencies included) through it.

Every change ``verify`` makes is one ``rename`` or ``unlink``, each atomic,
so it is safe next to a running service: a quarantined or removed upstream
file is simply fetched again on its next request.  Temporary files younger
than ``--min-age`` may belong to a running download and are left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

import attrs

from proxypypi.cache.storage import PARTIAL_SUFFIX
from proxypypi.names import (
    METADATA_SUFFIX,
    InvalidDistFilename,
    is_safe_filename,
    normalize,
    parse_dist_filename,
)

__all__ = ["main"]

#: Seconds a temporary file must be left untouched before it counts as a
#: leftover; a live download writes to its partial file far more often.
DEFAULT_MIN_AGE = 3600.0

#: Hash algorithms tried, best first, when a page lists several.
_PREFERRED = ("sha256", "sha512", "sha384", "blake2b", "sha224", "sha1", "md5")

#: (algorithm, hex digest) a file must match, or ``None`` when a page lists
#: the file without any usable hash.
Expected = tuple[str, str] | None


class AdminError(Exception):
    """
    The command cannot run; the message says why.
    """


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


# verify


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
        for project in _entries(files):
            if not project.is_dir(follow_symlinks=False):
                self._report("foreign", project.path, "not inside a project directory")
                continue
            normal = normalize(project.name) == project.name
            hashes = self._load_hashes(os.path.join(self.root, "pages", project.name + ".json"))
            for entry in _entries(project.path):
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
        for project in _entries(private):
            if not project.is_dir(follow_symlinks=False):
                continue
            pages = [e.path for e in _entries(project.path) if e.name.endswith(".json")]
            hashes = self._load_hashes(*pages)
            for entry in _walk(project.path):
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
        for entry in _entries(pages):
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
        for entry in _entries(os.path.join(self.root, "tmp")):
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


def _entries(directory: str) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _walk(directory: str) -> Iterator[os.DirEntry[str]]:
    for entry in _entries(directory):
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path)
        elif entry.is_file(follow_symlinks=False):
            yield entry


def verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    verifier = Verifier(args.storage, repair=args.repair, min_age=args.min_age)
    for finding in verifier.run():
        print(finding.line(), file=out)
    print(verifier.summary(), file=out)
    return 1 if verifier.mismatches else 0


# stats


def _count(entries: Iterator[os.DirEntry[str]]) -> tuple[int, int]:
    n = size = 0
    for entry in entries:
        n += 1
        size += entry.stat(follow_symlinks=False).st_size
    return n, size


def collect_stats(root: str) -> dict[str, Any]:
    """
    Counts and sizes of everything in the storage directory ``root``.
    """
    if not os.path.isdir(root):
        raise AdminError(f"{root} is not a directory; give the service's --storage")
    upstream_projects = upstream_files = upstream_bytes = metadata_files = 0
    for project in _entries(os.path.join(root, "files")):
        files = [e for e in _walk(project.path)] if project.is_dir() else []
        if files:
            upstream_projects += 1
        for entry in files:
            upstream_files += 1
            upstream_bytes += entry.stat(follow_symlinks=False).st_size
            metadata_files += entry.name.endswith(METADATA_SUFFIX)
    private_projects = private_files = private_bytes = 0
    for project in _entries(os.path.join(root, "private")):
        if not project.is_dir():
            continue
        files = [
            e
            for e in _walk(project.path)
            if not e.name.endswith(".json") and not e.name.startswith(".")
        ]
        private_projects += bool(files)
        n, size = _count(iter(files))
        private_files += n
        private_bytes += size
    pages = sum(1 for e in _entries(os.path.join(root, "pages")) if e.name.endswith(".json"))
    quarantined = _count(_walk(os.path.join(root, "quarantine")))
    temporary = _count(_walk(os.path.join(root, "tmp")))
    return {
        "storage": os.path.abspath(root),
        "projects": {"upstream": upstream_projects, "private": private_projects},
        "pages": pages,
        "files": {
            "upstream": {
                "count": upstream_files,
                "bytes": upstream_bytes,
                "metadata": metadata_files,
            },
            "private": {"count": private_files, "bytes": private_bytes},
        },
        "quarantine": {"count": quarantined[0], "bytes": quarantined[1]},
        "temporary": {"count": temporary[0], "bytes": temporary[1]},
        "bytes": upstream_bytes + private_bytes + quarantined[1] + temporary[1],
    }


def human(size: float) -> str:
    """
    ``1536`` → ``"1.5 KiB"``.
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def stats(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    s = collect_stats(args.storage)
    if args.json:
        print(json.dumps(s, indent=1), file=out)
        return 0
    up, private = s["files"]["upstream"], s["files"]["private"]
    rows = [
        ("storage", s["storage"]),
        ("projects", f"{s['projects']['upstream']} upstream, {s['projects']['private']} private"),
        ("pages", str(s["pages"])),
        (
            "upstream",
            f"{up['count']} files ({up['metadata']} of them .metadata), {human(up['bytes'])}",
        ),
        ("private", f"{private['count']} files, {human(private['bytes'])}"),
        ("quarantine", f"{s['quarantine']['count']} files, {human(s['quarantine']['bytes'])}"),
        ("temporary", f"{s['temporary']['count']} files, {human(s['temporary']['bytes'])}"),
        ("total", human(s["bytes"])),
    ]
    for name, value in rows:
        print(f"{name:<11} {value}", file=out)
    return 0


# prefetch


def pip_command(
    index_url: str,
    dest: str,
    requirement_files: Sequence[str],
    requirements: Sequence[str],
    extra: Sequence[str] = (),
) -> list[str]:
    """
    The pip invocation that downloads ``requirements`` (and their
    dependencies) through the proxy: this interpreter's pip, isolated from
    the user's pip configuration (so no other index is consulted), no pip
    cache (every file must come through the proxy), no self-version check.
    """
    argv = [
        sys.executable,
        "-m",
        "pip",
        "--isolated",
        "--disable-pip-version-check",
        "--no-input",
        "download",
        "--no-cache-dir",
        "--progress-bar",
        "off",
        "--index-url",
        index_url,
        "--dest",
        dest,
    ]
    host = urlsplit(index_url).hostname
    if urlsplit(index_url).scheme == "http" and host:
        argv += ["--trusted-host", host]
    for path in requirement_files:
        argv += ["--requirement", path]
    return argv + list(requirements) + list(extra)


@attrs.define
class Progress:
    """
    What pip said so far, shown on one self-rewriting line when ``err`` is
    a terminal, as plain lines otherwise.
    """

    err: TextIO
    started: float = attrs.field(factory=time.monotonic)
    collected: int = 0
    saved: list[str] = attrs.field(factory=list)
    _spin: int = 0

    @property
    def interactive(self) -> bool:
        return self.err.isatty()

    def feed(self, line: str) -> None:
        text = line.strip()
        if text.startswith("Collecting "):
            self.collected += 1
        elif text.startswith(("Saved ", "File was already downloaded ")):
            name = os.path.basename(text.rsplit(" ", 1)[1])
            self.saved.append(name)
            if not self.interactive:
                print(f"[{len(self.saved)}] {name}", file=self.err, flush=True)
        if self.interactive:
            self._spin += 1
            elapsed = time.monotonic() - self.started
            spinner = "|/-\\"[self._spin % 4]
            print(
                f"\r{spinner} {self.collected} requirements, "
                f"{len(self.saved)} files, {elapsed:.0f}s",
                end="",
                file=self.err,
                flush=True,
            )

    def done(self) -> None:
        if self.interactive:
            print(file=self.err)


def prefetch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.requirements and not args.requirement:
        raise AdminError("nothing to prefetch: give requirements, or -r FILE")
    parts = urlsplit(args.index_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AdminError(f"--index-url {args.index_url!r} is not an http(s) URL")
    with tempfile.TemporaryDirectory(prefix="proxypypi-prefetch-") as scratch:
        dest = args.dest or scratch
        argv = pip_command(args.index_url, dest, args.requirement, args.requirements, args.extra)
        progress = Progress(err)
        tail: deque[str] = deque(maxlen=40)
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip("\n"))
            progress.feed(line)
        code = process.wait()
        progress.done()
        elapsed = time.monotonic() - progress.started
        size = sum(
            os.path.getsize(os.path.join(dest, n))
            for n in set(progress.saved)
            if os.path.isfile(os.path.join(dest, n))
        )
    if code != 0:
        print("pip failed; its last lines:", file=err)
        for line in tail:
            print("  " + line, file=err)
        print(
            f"prefetch failed after {elapsed:.1f}s ({len(progress.saved)} files fetched "
            f"before the failure)",
            file=out,
        )
        return code or 1
    print(
        f"prefetched {len(progress.saved)} files ({human(size)}) through "
        f"{args.index_url} in {elapsed:.1f}s",
        file=out,
    )
    return 0


# The command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxypypi-admin", description="Housekeeping for a proxypypi storage directory."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser(
        "verify",
        help="re-hash stored files, quarantine mismatches, report leftovers",
        description="Re-hash every stored file against its project page; move mismatches "
        "to DATA/quarantine/<project>/ (exit code 1 when there was any); report zero-byte, "
        "foreign and temporary leftovers, and remove them with --repair.",
    )
    p.add_argument("--storage", required=True, help="the service's storage directory")
    p.add_argument("--repair", action="store_true", help="remove leftovers")
    p.add_argument(
        "--min-age",
        type=float,
        default=DEFAULT_MIN_AGE,
        metavar="SECONDS",
        help="temporary files untouched for less than this may be in use and are "
        f"left alone [{DEFAULT_MIN_AGE:.0f}]",
    )
    p.set_defaults(func=verify)

    p = commands.add_parser("stats", help="projects, files and bytes")
    p.add_argument("--storage", required=True, help="the service's storage directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=stats)

    p = commands.add_parser(
        "prefetch",
        help="warm the cache through a running service",
        description="Download requirements and all their dependencies with pip through a "
        "running proxy, so it fetches and stores every file pip needs.  Arguments after "
        "-- go to pip download (e.g. -- --platform manylinux2014_x86_64 --only-binary :all:).",
    )
    p.add_argument("requirements", nargs="*", help="requirement specifiers")
    p.add_argument(
        "-r", "--requirement", action="append", default=[], metavar="FILE",
        help="a requirements file (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--index-url",
        default="http://127.0.0.1:3141/simple/",
        help="the proxy's simple index [http://127.0.0.1:3141/simple/]",
    )
    p.add_argument("--dest", help="keep the downloaded files here (default: discard them)")
    p.set_defaults(func=prefetch)
    return parser


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """
    Run one command; the console script ``proxypypi-admin``.

    :returns: the exit code: 0, 1 (``verify`` found mismatches, or the
        command failed), 2 (bad usage).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, extra = args_list[:cut], args_list[cut + 1 :]
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = _parser().parse_args(args_list)
    args.extra = extra
    try:
        code: int = args.func(args, out, err)
    except AdminError as e:
        print(f"proxypypi-admin {args.command}: {e}", file=err)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

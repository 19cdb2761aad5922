# -*- test-case-name: tests.test_downloads,tests.test_crash -*-
"""
The on-disk layout, and writes that survive a crash.

::

    DATA/files/<project>/<filename>     complete, hash-verified files
    DATA/pages/<project>.json           the last page fetched for a project
    DATA/tmp/                           partial downloads; emptied at start-up

Every write is temp file + fsync + rename, so a crash leaves the old state
or the new one, never a mix.  Slow calls (fsync, directory scans) run in a
dedicated thread pool, never on the reactor thread.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxypypi.names import is_safe_filename, normalize

T = TypeVar("T")

#: Runs a blocking callable off the reactor thread; ``deferToThreadPool``
#: bound to the disk pool in the service, a synchronous stand-in in tests.
Runner = Callable[..., "Deferred[Any]"]

PARTIAL_SUFFIX = ".part"

_log = Logger()


@attrs.frozen
class FileKey:
    """
    A stored (or to be stored) upstream file: ``DATA/files/<project>/<filename>``.
    """

    project: str
    filename: str


class StorageError(Exception):
    """
    The storage directory cannot be used; the message says why and how to fix it.
    """


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stored_projects(files_dir: str) -> Iterator[os.DirEntry[str]]:
    """
    The project directories under ``files_dir``: those named by a
    normalized project name.  Reads the one directory, no file in it.
    Blocking.
    """
    try:
        projects = list(os.scandir(files_dir))
    except FileNotFoundError:
        return
    for project in projects:
        if project.is_dir(follow_symlinks=False) and normalize(project.name) == project.name:
            yield project


def project_files(directory: str) -> Iterator[tuple[str, os.stat_result]]:
    """
    Every file the service may have stored in one project's ``directory``:
    with a safe name, not a partial download.  Yields (filename, stat).
    Blocking.
    """
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not is_safe_filename(name) or name.endswith(PARTIAL_SUFFIX):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                yield name, entry.stat(follow_symlinks=False)
        except OSError:
            continue


def stored_files(files_dir: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """
    Every file the service may have stored under ``files_dir`` (see
    `stored_projects` and `project_files`).  Yields (project, filename,
    stat).  Anything else is not ours (see ``proxypypi-admin verify``).
    Blocking.
    """
    for project in stored_projects(files_dir):
        for name, st in project_files(project.path):
            yield project.name, name, st


def unlink_all(paths: Iterable[str]) -> None:
    """
    Remove files, ignoring those already gone.  Blocking.
    """
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def remove_quietly(path: str) -> None:
    """
    Remove a file that is no longer wanted (a spool file, say), for code
    that is already handling a failure: one already gone is fine, and one
    that cannot be removed (a read-only or failing disk) is logged, not
    raised over the error being answered.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        _log.warn("cannot remove {path}: {error}", path=path, error=e.strerror)


#: What a file is written from: its bytes, or its chunks in order (a large
#: page and its small closing chunk, never joined).
Chunks = bytes | tuple[bytes | memoryview, ...]


def write_all(fd: int, data: bytes | memoryview) -> None:
    """
    Write all of ``data`` to ``fd`` (``os.write`` may write less than asked).
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_synced(path: str, data: Chunks, exclusive: bool = False) -> None:
    """
    Write ``data`` to ``path`` and fsync it; ``exclusive`` refuses an existing
    file.  Blocking.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        for chunk in (data,) if isinstance(data, bytes) else data:
            write_all(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: Chunks) -> None:
    """
    Replace ``path`` with ``data`` so that a crash leaves either the old
    content or the new one.  Blocking: call it through a `Runner`.
    """
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{secrets.token_hex(8)}{PARTIAL_SUFFIX}")
    try:
        write_synced(tmp, data, exclusive=True)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    os.replace(tmp, path)
    fsync_dir(directory)


def _remove(path: str) -> None:
    """
    Remove a file or a directory tree (``tmp/`` holds both).
    """
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


@attrs.frozen
class Claim:
    """
    This process's claim on a download: its partial file, open for writing
    at its end (a claim taken over from a dead holder holds its bytes).
    """

    fd: int
    path: str

    def size(self) -> int:
        return os.fstat(self.fd).st_size


@attrs.define
class Storage:
    """
    The storage directory of one service.

    :ivar root: the directory (``--storage``).
    :ivar run: how blocking work is sent off the reactor thread.
    :ivar write_error: why the last write failed (disk full, read-only),
        until a write succeeds again; reported by ``/health``.
    :ivar free_bytes: free space at the last check.
    """

    root: str
    run: Runner
    write_error: str | None = None
    free_bytes: int | None = None
    log = Logger()

    def failed_write(self, error: OSError) -> None:
        """
        Note that storing something failed, so ``/health`` can tell.
        """
        reason = error.strerror or str(error)
        if self.write_error is None:
            self.log.error(
                "cannot write to the storage {root}: {reason}; cached files are still "
                "served, and writing resumes by itself once the cause is fixed",
                root=self.root,
                reason=reason,
            )
        self.write_error = reason

    def wrote(self) -> None:
        """
        Note that a write succeeded: the storage is writable again.
        """
        if self.write_error is not None:
            self.log.info("the storage {root} is writable again", root=self.root)
            self.write_error = None

    def check_writable(self) -> Deferred[None]:
        """
        Probe the storage with a small write (off the reactor thread): a
        disk that filled up or went read-only is noticed, and so is its
        recovery, even when no download happens.
        """
        # One name per process: worker processes probe the same storage.
        probe = os.path.join(self.tmp_dir, f"health-probe-{os.getpid()}")

        def work() -> int:
            write_synced(probe, b"\0" * 4096)
            os.unlink(probe)
            return shutil.disk_usage(self.root).free

        def done(free: int) -> None:
            self.free_bytes = free
            self.wrote()

        def failed(f: Failure) -> None:
            f.trap(OSError)
            self.failed_write(f.value)

        d: Deferred[None] = self.run(work).addCallbacks(done, failed)
        return d

    @property
    def files_dir(self) -> str:
        return os.path.join(self.root, "files")

    @property
    def pages_dir(self) -> str:
        return os.path.join(self.root, "pages")

    @property
    def tmp_dir(self) -> str:
        return os.path.join(self.root, "tmp")

    def prepare(self, keep_partials: bool = False) -> None:
        """
        Create the layout if missing, empty ``tmp/`` of partial files a
        killed process left behind, and prove the directory is writable.
        Blocking; runs once at start-up.

        :param keep_partials: leave ``tmp/`` as it is (a worker process:
            the others' downloads are there).
        :raises StorageError: naming the directory and the fix.
        """
        try:
            for d in (self.root, self.files_dir, self.pages_dir, self.tmp_dir):
                os.makedirs(d, exist_ok=True)
            removed = 0
            for name in [] if keep_partials else os.listdir(self.tmp_dir):
                _remove(os.path.join(self.tmp_dir, name))
                removed += 1
            probe = os.path.join(self.tmp_dir, f"probe-{secrets.token_hex(4)}")
            with open(probe, "wb") as f:
                f.write(b"ok")
            os.unlink(probe)
        except OSError as e:
            raise StorageError(
                f"storage directory {os.path.abspath(self.root)!r} is not usable "
                f"({e.strerror}): create it and make it writable by this user, "
                "or choose another with --storage"
            ) from e
        if removed:
            self.log.info("removed {count} partial files left by an earlier run", count=removed)

    # Files

    def file_path(self, project: str, filename: str) -> str:
        """
        Where a complete file lives.  ``project`` must be a normalized name
        and ``filename`` a safe file name (see `proxypypi.names`).
        """
        return os.path.join(self.files_dir, project, filename)

    def has_file(self, project: str, filename: str) -> bool:
        return os.path.isfile(self.file_path(project, filename))

    def download_path(self, key: FileKey) -> str:
        """
        The partial file of ``key``'s download: one name per file, so that
        every process sharing the storage finds the download in flight.
        """
        digest = hashlib.sha256(f"{key.project}/{key.filename}".encode()).hexdigest()[:40]
        return os.path.join(self.tmp_dir, f"dl-{digest}{PARTIAL_SUFFIX}")

    def claim(self, key: FileKey) -> Claim | None:
        """
        Claim ``key``'s download for this process, or ``None`` when another
        process holds it.  The claim is an exclusive ``flock`` on the
        partial file, which the kernel releases when its holder dies, so a
        download whose process was killed is claimed by the next asker,
        with the bytes it left.
        """
        path = self.download_path(key)
        for _ in range(3):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            # The holder before us may have renamed or removed the file
            # between our open and our lock: then ours is not the file.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.lseek(fd, 0, os.SEEK_END)
                return Claim(fd, path)
            os.close(fd)
        return None

    def open_partial(self) -> tuple[int, str]:
        """
        Create a new, empty partial file for a download.

        :returns: a write-only descriptor and the file's path.
        """
        path = os.path.join(self.tmp_dir, secrets.token_hex(12) + PARTIAL_SUFFIX)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        return fd, path

    def commit(self, fd: int, partial: str, project: str, filename: str) -> Deferred[str]:
        """
        Make a finished partial file permanent: fsync, close, rename into
        place, fsync the directory.  Readers holding a descriptor on the
        partial file keep reading the same bytes.

        :returns: a Deferred firing with the final path.
        """
        final = self.file_path(project, filename)

        def work() -> str:
            # Renamed before the descriptor is closed: closing releases a
            # download's claim, and the next process must find it done.
            try:
                os.fsync(fd)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(partial, final)
                fsync_dir(os.path.dirname(final))
            finally:
                os.close(fd)
            return final

        d: Deferred[str] = self.run(work)
        return d

    def discard(self, fd: int | None, partial: str) -> None:
        """
        Drop a partial file that will never be complete: removed before its
        descriptor (and so a download's claim) goes, so no other process
        takes it for one whose holder died.
        """
        try:
            os.unlink(partial)
        except FileNotFoundError:
            pass
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    # Pages

    def page_path(self, project: str) -> str:
        return os.path.join(self.pages_dir, project + ".json")

    def read_page(self, project: str) -> bytes | None:
        """
        The stored page of a project, or ``None``.  Pages are small enough
        to read on the reactor thread (they are cached in memory after).
        """
        try:
            with open(self.page_path(project), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_page(self, project: str, data: bytes) -> Deferred[None]:
        """
        Store a project's page atomically, off the reactor thread.
        """
        d: Deferred[None] = self.run(write_atomically, self.page_path(project), data)
        return d

    def write_blob(self, path: str, data: bytes) -> Deferred[None]:
        """
        Store any other small file atomically, off the reactor thread.
        """
        d: Deferred[None] = self.run(write_atomically, path, data)
        return d

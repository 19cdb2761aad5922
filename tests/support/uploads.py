"""
Upload requests as twine sends them: its form fields for a distribution,
and the ``multipart/form-data`` body around them, so upload tests feed the
proxy the bytes a real client would.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterable

from proxypypi.testing import Dist

#: The multipart boundary of every body built here.
BOUNDARY = "pRoXyPyPi-b0undary"


def twine_fields(
    dist: Dist, project_name: str | None = None, **overrides: str | None
) -> list[tuple[str, str]]:
    """
    The form fields twine 7 sends with ``dist`` (``PROTOCOL.md`` §1.9 P2);
    an override of ``None`` leaves a field out.
    """
    wheel = dist.filename.endswith(".whl")
    fields: dict[str, str | None] = {
        "name": project_name or dist.project,
        "version": dist.version,
        "metadata_version": "2.1",
        "summary": "test package",
        "pyversion": "py3" if wheel else "source",
        "filetype": "bdist_wheel" if wheel else "sdist",
        "sha256_digest": dist.sha256,
        "blake2_256_digest": hashlib.blake2b(dist.data, digest_size=32).hexdigest(),
        ":action": "file_upload",
        "protocol_version": "1",
    }
    fields.update(overrides)
    return [(k, v) for k, v in fields.items() if v is not None]


def multipart(
    fields: list[tuple[str, str]],
    file: tuple[str, bytes] | None,
    *,
    disposition: str | None = None,
    close: bool = True,
) -> bytes:
    """
    A ``multipart/form-data`` body, fields first and the file last (as
    twine and uv order them).
    """
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields
    ]
    if file is not None:
        filename, data = file
        cd = disposition or f'form-data; name="content"; filename="{filename}"'
        parts.append(
            f"--{BOUNDARY}\r\nContent-Disposition: {cd}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    if close:
        parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def crafted_wheel(filename: str, members: Iterable[tuple[str, bytes]]) -> Dist:
    """
    A file named ``filename`` holding exactly ``members`` (path, bytes):
    the wheels a hostile uploader builds by hand.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in members:
            zf.writestr(path, data)
    return Dist(filename, buf.getvalue())


def metadata(name: str, version: str) -> bytes:
    """
    The smallest METADATA naming a project and version.
    """
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
def write_dists(directory: str, *dists: Dist) -> list[str]:
    """
    Write ``dists`` into ``directory`` (created), as a build leaves them
    for twine or ``uv publish``; their paths.
    """
    os.makedirs(directory, exist_ok=True)
    paths = []
    for dist in dists:
        path = os.path.join(directory, dist.filename)
        with open(path, "wb") as f:
            f.write(dist.data)
        paths.append(path)
    return paths

"""File helpers shared by the CLI, the fixture generators and the tests (standard library only).

``atomic_path(path)``: a temporary file beside ``path`` that becomes ``path`` (``os.replace``, atomic on
one file system) when the ``with`` block succeeds and is removed when it fails, so a reader sees the old
file or the whole new one, never a partial one, and a failed write leaves no temporary file behind.

``sha256_file(path)``: the SHA-256 of a whole file's bytes, as the fixtures' manifests
(``fixtures/manifest.json``, ``fixtures/formats_manifest.json``, ``fixtures/int8/manifest.json``) and
``mnv2ref summary --tflite`` / ``trace --tflite`` (``_file``) record it. Hashes over anything else stay
with their modules: the compile-cache key (``cli/compile.py``), ``mnv2ref.distributed``'s file lists and
the weights bytes it ships (already in memory), the int8 goldens' per-tensor hashes.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile

BLOCK = 1 << 20  # read 1 MiB at a time: a weights file is never held in memory just to hash it


def sha256_file(path: str | os.PathLike) -> str:
    """The lowercase hex SHA-256 of the file at ``path`` (``hashlib.sha256(data).hexdigest()``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """``with atomic_path(p) as tmp:`` write the file ``tmp`` (a str); on success it replaces ``p``."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

"""File helpers shared by the CLI, the fixture generators and the tests (standard library only).

``sha256_file(path)``: the SHA-256 of a whole file's bytes, as the fixtures' manifests
(``fixtures/manifest.json``, ``fixtures/formats_manifest.json``, ``fixtures/int8/manifest.json``) and
``mnv2ref summary --tflite`` / ``trace --tflite`` (``_file``) record it. Hashes over anything else stay
with their modules: the compile-cache key (``cli/compile.py``), ``mnv2ref.distributed``'s file lists and
the weights bytes it ships (already in memory), the int8 goldens' per-tensor hashes.
"""
from __future__ import annotations

import hashlib
import os

BLOCK = 1 << 20  # read 1 MiB at a time: a weights file is never held in memory just to hash it


def sha256_file(path: str | os.PathLike) -> str:
    """The lowercase hex SHA-256 of the file at ``path`` (``hashlib.sha256(data).hexdigest()``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()

"""Classifying image files: the images a folder holds, and top-k records.

Shared by ``mnv2ref predict`` (``cli/predict.py``, one process) and ``mnv2ref.distributed`` (a
Dask cluster), so both walk folders and rank classes the same way.
"""
from __future__ import annotations

import os

import numpy as np


def image_extensions() -> set:
    """File name extensions Pillow can open (lower case, with the dot)."""
    from PIL import Image

    return {e.lower() for e in Image.registered_extensions()}


def list_images(paths) -> list[str]:
    """Files named explicitly (always tried) and image files found in folders (sorted, recursive,
    hidden files and folders skipped), in the order given."""
    exts, out = image_extensions(), []
    for p in paths:
        if os.path.isdir(p):
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, f) for f in files
                          if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts]
            out += sorted(found)
        else:
            out.append(p)
    return out


def describe_error(e: BaseException) -> str:
    """The message recorded for a file that could not be read (OSErrors name the file already)."""
    return str(e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}"


def top_k(probs: np.ndarray, k: int, classes: int) -> list[list[dict]]:
    """Top-k per row as dicts (rank, class_index, wnid, label, score); ImageNet labels through
    ``decode_predictions`` when there are 1000 classes, ``class_<i>`` otherwise."""
    from .imagenet import class_index, decode_predictions

    if classes == 1000:
        index = {wnid: int(i) for i, (wnid, _) in class_index().items()}
        return [[{"rank": r + 1, "class_index": index[w], "wnid": w, "label": lab, "score": float(s)}
                 for r, (w, lab, s) in enumerate(row)] for row in decode_predictions(probs, top=k)]
    out = []
    for p in probs:
        idx = p.argsort()[-k:][::-1]
        out.append([{"rank": r + 1, "class_index": int(i), "wnid": "", "label": f"class_{int(i)}",
                     "score": float(p[i])} for r, i in enumerate(idx)])
    return out

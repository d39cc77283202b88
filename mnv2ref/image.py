"""Image loading with Keras's defaults (``keras.utils.load_img`` / ``img_to_array``), on Pillow, and the
walk that finds image files in folders (``collect``: ``mnv2ref predict``'s and ``mnv2ref.distributed``'s)."""
from __future__ import annotations

import os
from contextlib import nullcontext

import numpy as np

_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}  # PIL enum values
INTERPOLATIONS = tuple(_RESAMPLE)  # load_img's `interpolation` values


def load_img(path, color_mode="rgb", target_size=None, interpolation="nearest", keep_aspect_ratio=False):
    """Load an image as a PIL image, like ``keras.utils.load_img``.

    ``path``: a file name, or an open binary file / ``io.BytesIO`` (as Keras accepts).
    ``target_size`` is (height, width); Keras's default resampling is *nearest*
    (use ``interpolation="bilinear"`` or ``"bicubic"`` for smoother results).
    ``keep_aspect_ratio=True`` centre-crops to the target's aspect ratio before
    resizing. Raises OSError naming the file if it cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError

    if interpolation not in _RESAMPLE:
        raise ValueError(f"Invalid interpolation method {interpolation!r}; supported: {sorted(_RESAMPLE)}")
    if color_mode not in ("rgb", "rgba", "grayscale"):
        raise ValueError(f"color_mode must be 'grayscale', 'rgb' or 'rgba'; Received: {color_mode!r}")
    name = getattr(path, "name", "<file object>") if hasattr(path, "read") else os.fspath(path)
    try:
        with nullcontext(path) if hasattr(path, "read") else open(name, "rb") as f:
            img = Image.open(f)
            img.load()
    except UnidentifiedImageError:
        raise OSError(f"cannot read {name!r} as an image (unknown or damaged format)") from None
    if color_mode == "grayscale" and img.mode not in ("L", "I;16", "I"):
        img = img.convert("L")
    elif color_mode == "rgba" and img.mode != "RGBA":
        img = img.convert("RGBA")
    elif color_mode == "rgb" and img.mode != "RGB":
        img = img.convert("RGB")
    if target_size is not None:
        size = (target_size[1], target_size[0])  # PIL wants (width, height)
        if img.size != size:
            resample = _RESAMPLE[interpolation]
            if keep_aspect_ratio:
                w, h = img.size
                tw, th = size
                ch, cw = min(h, (w * th) // tw), min(w, (h * tw) // th)
                top, left = (h - ch) // 2, (w - cw) // 2
                img = img.resize(size, resample, box=(left, top, left + cw, top + ch))
            else:
                img = img.resize(size, resample)
    return img


def img_to_array(img, dtype="float32"):
    """PIL image -> (H, W, C) array (``keras.utils.img_to_array``, channels last)."""
    x = np.asarray(img, dtype=dtype)
    return x[..., None] if x.ndim == 2 else x


def image_extensions() -> set:
    """The file extensions Pillow can open (lower case, with the dot: ``{".jpg", ".png", ...}``)."""
    from PIL import Image

    return {e.lower() for e in Image.registered_extensions()}


def collect(paths) -> list[str]:
    """Files named on the command line (always tried) and image files found in folders (sorted, recursive)."""
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

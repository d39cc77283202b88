"""Argument checks shared by the public wrappers.

Every failure is a ``ValueError`` whose message names the argument and shows the shapes or
dtypes involved, so that no Numba typing error or traceback ever reaches a user.
"""
from __future__ import annotations

import numpy as np

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def array(name: str, a, ndim: int | None = None, dtype: np.dtype | None = None) -> np.ndarray:
    """Return ``a`` as a C-contiguous float32/float64 ndarray (copying only if needed).

    ``dtype``: if given, ``a`` must already have it (no silent casts between precisions).
    """
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in DTYPES:
        raise ValueError(f"{name}: dtype must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise ValueError(f"{name}: dtype {a.dtype} does not match the input's dtype {dtype} "
                         f"(all arrays must share one dtype)")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {a.shape}")
    # Kernels index raw C-order memory: non-contiguous views (slices, transposes) are
    # copied once here. Correctness first; callers on a hot path pass contiguous arrays.
    return np.ascontiguousarray(a)


def shape(name: str, a: np.ndarray, expected: tuple, what: str = "") -> None:
    """Require ``a.shape == expected`` exactly."""
    if a.shape != tuple(expected):
        extra = f" ({what})" if what else ""
        raise ValueError(f"{name}: expected shape {tuple(expected)}{extra}, got {a.shape}")


def stride(s) -> int:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or int(s) not in (1, 2):
        raise ValueError(f"stride: must be 1 or 2, got {s!r}")
    return int(s)


def pads(p) -> tuple:
    """Validate ``((top, bottom), (left, right))`` non-negative ints; return them as ints."""
    try:
        (t, b), (l, r) = p
        vals = tuple(int(v) for v in (t, b, l, r))
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                 for v in (t, b, l, r))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"pads: expected ((top, bottom), (left, right)) with non-negative "
                         f"ints, got {p!r}")
    return vals


def out_size(name: str, size: int, lo: int, hi: int, s: int) -> int:
    """Output length of a 3-tap window: ``(size + lo + hi - 3) // s + 1`` (must be >= 1)."""
    padded = size + lo + hi
    if padded < 3:
        raise ValueError(f"{name}: padded size {size}+{lo}+{hi}={padded} is smaller than the "
                         f"3x3 window")
    return (padded - 3) // s + 1


def window(H: int, W: int, s_arg, pads_arg) -> tuple:
    """Check the stride and pads of a 3x3 window over an (H, W) input; return
    ``(stride, top, left, Ho, Wo)``."""
    s = stride(s_arg)
    top, bottom, left, right = pads(pads_arg)
    return (s, top, left, out_size("x (height)", H, top, bottom, s),
            out_size("x (width)", W, left, right, s))


def depthwise_kernel(name: str, w, C: int, dtype: np.dtype) -> np.ndarray:
    """A 3x3 depthwise kernel (3, 3, C) in ``dtype``; Keras's (3, 3, C, 1) is accepted too."""
    w = array(name, w, None, dtype)
    if w.ndim == 4 and w.shape[3] == 1:
        w = w[..., 0]
    shape(name, w, (3, 3, C), "3, 3, C; or 3, 3, C, 1")
    return w


def interior_columns(W: int, Wo: int, left: int, s: int) -> tuple:
    """(lo, hi): output columns lo..hi-1 have their whole 3-column window inside the image."""
    lo = min(-(-left // s), Wo)
    return lo, max(lo, min(Wo, (W - 3 + left) // s + 1))


def output(out, shape_: tuple, dtype: np.dtype, inputs: dict) -> np.ndarray:
    """Allocate the output, or check a caller-provided ``out`` (C-contiguous, right shape
    and dtype, not overlapping any array in ``inputs`` (name -> array))."""
    if out is None:
        return np.empty(shape_, dtype)
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out: expected a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise ValueError(f"out: dtype {out.dtype} does not match the input's dtype {dtype}")
    shape("out", out, shape_)
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out: must be a writeable C-contiguous array")
    for nm, a in inputs.items():
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"out: must not overlap {nm}")
    return out

"""16-lane "vector" helpers: tuples of 16 scalars that LLVM keeps in vector registers.

Numba has no SIMD type, and small local arrays stay in memory (measured 5-13 GFLOP/s).
A UniTuple of 16 float32/float64 values is an SSA value: after inlining, LLVM splits it
into 16 scalars held in registers, and its SLP vectoriser packs the 16 identical scalar
operations on 16 consecutive memory addresses into 2 ymm (AVX2) or 1 zmm (AVX-512,
float32) instructions. That needs SLP on at compile time; see ``_config.py``.

Every helper is written out lane by lane on purpose (no loops): that is exactly the
straight-line code the SLP vectoriser wants, and it also runs unchanged as plain Python
under ``NUMBA_DISABLE_JIT=1``. ``inline='always'`` inlines them at Numba-IR level, so
they cost nothing and are compiled as part of the calling kernel.

Naming: ``a`` is a 2-D array, ``(i, j)`` the start of a 16-element row segment
``a[i, j:j+16]``; ``u, v, t, acc`` are 16-tuples; ``s`` a scalar.
"""
from numba import njit

from ._config import INLINE

LANES = 16


@njit(**INLINE)
def load(a, i, j):
    """``a[i, j:j+16]`` as a 16-tuple."""
    return (
        a[i, j + 0],
        a[i, j + 1],
        a[i, j + 2],
        a[i, j + 3],
        a[i, j + 4],
        a[i, j + 5],
        a[i, j + 6],
        a[i, j + 7],
        a[i, j + 8],
        a[i, j + 9],
        a[i, j + 10],
        a[i, j + 11],
        a[i, j + 12],
        a[i, j + 13],
        a[i, j + 14],
        a[i, j + 15],
    )



@njit(**INLINE)
def load1(a, j):
    """``a[j:j+16]`` (1-D ``a``) as a 16-tuple."""
    return (
        a[j + 0],
        a[j + 1],
        a[j + 2],
        a[j + 3],
        a[j + 4],
        a[j + 5],
        a[j + 6],
        a[j + 7],
        a[j + 8],
        a[j + 9],
        a[j + 10],
        a[j + 11],
        a[j + 12],
        a[j + 13],
        a[j + 14],
        a[j + 15],
    )



@njit(**INLINE)
def fma(acc, s, a, i, j):
    """``acc + s * a[i, j:j+16]``: scalar ``s`` broadcast over one row segment."""
    return (
        acc[0] + s * a[i, j + 0],
        acc[1] + s * a[i, j + 1],
        acc[2] + s * a[i, j + 2],
        acc[3] + s * a[i, j + 3],
        acc[4] + s * a[i, j + 4],
        acc[5] + s * a[i, j + 5],
        acc[6] + s * a[i, j + 6],
        acc[7] + s * a[i, j + 7],
        acc[8] + s * a[i, j + 8],
        acc[9] + s * a[i, j + 9],
        acc[10] + s * a[i, j + 10],
        acc[11] + s * a[i, j + 11],
        acc[12] + s * a[i, j + 12],
        acc[13] + s * a[i, j + 13],
        acc[14] + s * a[i, j + 14],
        acc[15] + s * a[i, j + 15],
    )



@njit(**INLINE)
def fma_t(acc, a, i, j, t):
    """``acc + a[i, j:j+16] * t``: row segment times a 16-tuple ``t``, lane by lane."""
    return (
        acc[0] + a[i, j + 0] * t[0],
        acc[1] + a[i, j + 1] * t[1],
        acc[2] + a[i, j + 2] * t[2],
        acc[3] + a[i, j + 3] * t[3],
        acc[4] + a[i, j + 4] * t[4],
        acc[5] + a[i, j + 5] * t[5],
        acc[6] + a[i, j + 6] * t[6],
        acc[7] + a[i, j + 7] * t[7],
        acc[8] + a[i, j + 8] * t[8],
        acc[9] + a[i, j + 9] * t[9],
        acc[10] + a[i, j + 10] * t[10],
        acc[11] + a[i, j + 11] * t[11],
        acc[12] + a[i, j + 12] * t[12],
        acc[13] + a[i, j + 13] * t[13],
        acc[14] + a[i, j + 14] * t[14],
        acc[15] + a[i, j + 15] * t[15],
    )



@njit(**INLINE)
def mul_t(a, i, j, t):
    """``a[i, j:j+16] * t`` lane by lane."""
    return (
        a[i, j + 0] * t[0],
        a[i, j + 1] * t[1],
        a[i, j + 2] * t[2],
        a[i, j + 3] * t[3],
        a[i, j + 4] * t[4],
        a[i, j + 5] * t[5],
        a[i, j + 6] * t[6],
        a[i, j + 7] * t[7],
        a[i, j + 8] * t[8],
        a[i, j + 9] * t[9],
        a[i, j + 10] * t[10],
        a[i, j + 11] * t[11],
        a[i, j + 12] * t[12],
        a[i, j + 13] * t[13],
        a[i, j + 14] * t[14],
        a[i, j + 15] * t[15],
    )


@njit(**INLINE)
def add(u, v):
    """``u + v`` lane by lane."""
    return (
        u[0] + v[0],
        u[1] + v[1],
        u[2] + v[2],
        u[3] + v[3],
        u[4] + v[4],
        u[5] + v[5],
        u[6] + v[6],
        u[7] + v[7],
        u[8] + v[8],
        u[9] + v[9],
        u[10] + v[10],
        u[11] + v[11],
        u[12] + v[12],
        u[13] + v[13],
        u[14] + v[14],
        u[15] + v[15],
    )



@njit(**INLINE)
def relu6(u, zero, six):
    """``min(max(u, zero), six)`` lane by lane (``zero``/``six`` in the data dtype)."""
    return (
        min(max(u[0], zero), six),
        min(max(u[1], zero), six),
        min(max(u[2], zero), six),
        min(max(u[3], zero), six),
        min(max(u[4], zero), six),
        min(max(u[5], zero), six),
        min(max(u[6], zero), six),
        min(max(u[7], zero), six),
        min(max(u[8], zero), six),
        min(max(u[9], zero), six),
        min(max(u[10], zero), six),
        min(max(u[11], zero), six),
        min(max(u[12], zero), six),
        min(max(u[13], zero), six),
        min(max(u[14], zero), six),
        min(max(u[15], zero), six),
    )



@njit(**INLINE)
def store(a, i, j, u):
    """``a[i, j:j+16] = u``."""
    a[i, j + 0] = u[0]
    a[i, j + 1] = u[1]
    a[i, j + 2] = u[2]
    a[i, j + 3] = u[3]
    a[i, j + 4] = u[4]
    a[i, j + 5] = u[5]
    a[i, j + 6] = u[6]
    a[i, j + 7] = u[7]
    a[i, j + 8] = u[8]
    a[i, j + 9] = u[9]
    a[i, j + 10] = u[10]
    a[i, j + 11] = u[11]
    a[i, j + 12] = u[12]
    a[i, j + 13] = u[13]
    a[i, j + 14] = u[14]
    a[i, j + 15] = u[15]


@njit(**INLINE)
def scale(u, s):
    """``u * s`` lane by lane (scalar ``s``)."""
    return (
        u[0] * s,
        u[1] * s,
        u[2] * s,
        u[3] * s,
        u[4] * s,
        u[5] * s,
        u[6] * s,
        u[7] * s,
        u[8] * s,
        u[9] * s,
        u[10] * s,
        u[11] * s,
        u[12] * s,
        u[13] * s,
        u[14] * s,
        u[15] * s,
    )


# --- two pixels x 8 channels in one 16-lane tuple (lanes 0-7: pixel row i0, 8-15: i1) ---
# Used for a last panel of at most 8 output channels, so it does not waste half the FMAs.

@njit(**INLINE)
def fma2(acc, s0, s1, a, i, j):
    """``acc + (s0 * a[i, j:j+8], s1 * a[i, j+8:j+16])``: two broadcasts, one per half."""
    return (
        acc[0] + s0 * a[i, j + 0],
        acc[1] + s0 * a[i, j + 1],
        acc[2] + s0 * a[i, j + 2],
        acc[3] + s0 * a[i, j + 3],
        acc[4] + s0 * a[i, j + 4],
        acc[5] + s0 * a[i, j + 5],
        acc[6] + s0 * a[i, j + 6],
        acc[7] + s0 * a[i, j + 7],
        acc[8] + s1 * a[i, j + 8],
        acc[9] + s1 * a[i, j + 9],
        acc[10] + s1 * a[i, j + 10],
        acc[11] + s1 * a[i, j + 11],
        acc[12] + s1 * a[i, j + 12],
        acc[13] + s1 * a[i, j + 13],
        acc[14] + s1 * a[i, j + 14],
        acc[15] + s1 * a[i, j + 15],
    )


@njit(**INLINE)
def load2(a, i0, i1, j):
    """``(a[i0, j:j+8], a[i1, j:j+8])`` as one 16-tuple."""
    return (
        a[i0, j + 0],
        a[i0, j + 1],
        a[i0, j + 2],
        a[i0, j + 3],
        a[i0, j + 4],
        a[i0, j + 5],
        a[i0, j + 6],
        a[i0, j + 7],
        a[i1, j + 0],
        a[i1, j + 1],
        a[i1, j + 2],
        a[i1, j + 3],
        a[i1, j + 4],
        a[i1, j + 5],
        a[i1, j + 6],
        a[i1, j + 7],
    )


@njit(**INLINE)
def store2(a, i0, i1, j, u):
    """``a[i0, j:j+8] = u[:8]; a[i1, j:j+8] = u[8:]``."""
    a[i0, j + 0] = u[0]
    a[i0, j + 1] = u[1]
    a[i0, j + 2] = u[2]
    a[i0, j + 3] = u[3]
    a[i0, j + 4] = u[4]
    a[i0, j + 5] = u[5]
    a[i0, j + 6] = u[6]
    a[i0, j + 7] = u[7]
    a[i1, j + 0] = u[8]
    a[i1, j + 1] = u[9]
    a[i1, j + 2] = u[10]
    a[i1, j + 3] = u[11]
    a[i1, j + 4] = u[12]
    a[i1, j + 5] = u[13]
    a[i1, j + 6] = u[14]
    a[i1, j + 7] = u[15]

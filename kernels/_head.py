"""The classifier head: global pooling (NumPy) and a dense layer (Numba).

At MobileNetV2 1.0_224 batch 1 these are 7x7x1280 -> 1280 and 1280 x 1000 (1.3 M
multiply-adds, ~0.4% of the network). The pools are single-threaded NumPy reductions.
``dense`` is a Numba kernel rather than ``x @ w`` on purpose: a multi-threaded OpenBLAS
call leaves its worker threads spinning (up to ~0.1 s, ``OPENBLAS_THREAD_TIMEOUT``) and
on a 2-core machine they then steal the cores from Numba's pool for the next kernels
(measured: pointwise layers 10-50x slower right after a BLAS call).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _checks
from ._config import JIT, PARALLEL, call
from ._lanes import LANES, fma, load1, store


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """Mean over the spatial axes: x (N, H, W, C) -> (N, C), in x's dtype.

    Sum in x's dtype over H*W (NumPy's order), divided by H*W.
    """
    x = _checks.array("x", x, 4)
    if x.shape[1] * x.shape[2] == 0:
        raise ValueError(f"x: spatial size must be at least 1x1, got shape {x.shape}")
    return x.mean(axis=(1, 2), dtype=x.dtype)


def global_max_pool(x: np.ndarray) -> np.ndarray:
    """Maximum over the spatial axes: x (N, H, W, C) -> (N, C)."""
    x = _checks.array("x", x, 4)
    if x.shape[1] * x.shape[2] == 0:
        raise ValueError(f"x: spatial size must be at least 1x1, got shape {x.shape}")
    return x.max(axis=(1, 2))


def dense(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Fully connected layer ``x @ w + bias``: x (N, Cin), w (Cin, Cout), bias (Cout,).

    Returns (N, Cout) in x's dtype. Each output is ``bias + x[0]*w[0] + x[1]*w[1] + ...``
    in k order, fused multiply-adds in x's dtype.
    """
    x = _checks.array("x", x, 2)
    dt = x.dtype
    w = _checks.array("w", w, 2, dt)
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"w: expected shape (Cin={x.shape[1]}, Cout) to match x {x.shape}, "
                         f"got {w.shape}")
    bias = _checks.array("bias", bias, 1, dt)
    _checks.shape("bias", bias, (w.shape[1],), "Cout")
    y = np.empty((x.shape[0], w.shape[1]), dt)
    if y.size:
        call(_dense_kernel, x, w, bias, y)
    return y


_GROUP = 4 * LANES  # output columns per work item: 4 independent accumulator tuples


@njit(**PARALLEL)
def _dense_kernel(x, w, bias, y):
    """Items = groups of 64 output columns (the last may be narrower)."""
    C = w.shape[1]
    for item in prange((C + _GROUP - 1) // _GROUP):
        _dense_cols(x, w, bias, y, item * _GROUP, min(item * _GROUP + _GROUP, C))


@njit(**JIT)
def _dense_cols(x, w, bias, y, c_lo, c_hi):
    """y[:, c_lo:c_hi] for every row of x."""
    N, K = x.shape
    c_lo = max(c_lo, 0)
    for n in range(N):
        c0 = c_lo
        if c_hi - c0 == _GROUP:  # 4 tuples: 4 independent FMA chains hide the latency
            a0 = load1(bias, c0)
            a1 = load1(bias, c0 + LANES)
            a2 = load1(bias, c0 + 2 * LANES)
            a3 = load1(bias, c0 + 3 * LANES)
            for k in range(K):
                a0 = fma(a0, x[n, k], w, k, c0)
                a1 = fma(a1, x[n, k], w, k, c0 + LANES)
                a2 = fma(a2, x[n, k], w, k, c0 + 2 * LANES)
                a3 = fma(a3, x[n, k], w, k, c0 + 3 * LANES)
            store(y, n, c0, a0)
            store(y, n, c0 + LANES, a1)
            store(y, n, c0 + 2 * LANES, a2)
            store(y, n, c0 + 3 * LANES, a3)
            continue
        while c0 + LANES <= c_hi:
            a0 = load1(bias, c0)
            for k in range(K):
                a0 = fma(a0, x[n, k], w, k, c0)
            store(y, n, c0, a0)
            c0 += LANES
        for c in range(c0, c_hi):  # fewer than 16 columns left
            v = bias[c]
            for k in range(K):
                v = v + x[n, k] * w[k, c]
            y[n, c] = v

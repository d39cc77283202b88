"""The classifier head: global pooling (NumPy) and a dense layer (Numba).

At MobileNetV2 1.0_224 batch 1 these are 7x7x1280 -> 1280 and 1280 x 1000 (1.3 M
multiply-adds, ~0.4% of the network). The pools are single-threaded NumPy reductions.
``dense`` is a Numba kernel rather than ``x @ w`` on purpose: a multi-threaded OpenBLAS
call leaves its worker threads spinning (up to ~0.1 s, ``OPENBLAS_THREAD_TIMEOUT``) and
on a 2-core machine they then steal the cores from the kernels' threads for the next kernels
(measured: pointwise layers 10-50x slower right after a BLAS call).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import _checks
from ._config import INLINE, LEAF
from ._program import OP_DENSE, OP_POOL
from ._sync import next_item, view
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
    if y.size == 0:
        return y
    from ._plan import Plan

    plan = Plan(dt)
    t = plan_dense(plan, plan.input(x.shape), w, bias)
    return plan.compile(t)(x, out=y)


_GROUP = 4 * LANES  # output columns per work item: 4 independent accumulator vectors


def plan_dense(plan, x, w, bias):
    """Add a dense op to ``plan`` (arguments as :func:`dense`, checked). Returns the output."""
    N, K = x.shape
    C = w.shape[1]

    def fill(row, loc, scratch, out):
        row[:13] = (OP_DENSE, -(-C // _GROUP), *loc(x), N, K, *loc(w), C, *loc(bias), *loc(out))

    return plan.add(fill, [x], (N, C), [w, bias], work=N * K * C)


def plan_pool(plan, x, is_max):
    """Add a global average (or max) pool over H, W to ``plan``: (N, H, W, C) -> (N, C)."""
    N, H, W, C = x.shape

    def fill(row, loc, scratch, out):
        row[:10] = (OP_POOL, N, *loc(x), N, H * W, C, *loc(out), bool(is_max))

    return plan.add(fill, [x], (N, C))


@njit(**INLINE)
def exec_dense(op, bufs, sync, counter):
    """Program row: kind, items, x (slot, off), N, K, w (slot, off), C, bias (slot, off),
    y (slot, off). Items = groups of 64 output columns (the last may be narrower)."""
    N, K, C = op[4], op[5], op[8]
    x = view(bufs, op[2], op[3], (N, K))
    w = view(bufs, op[6], op[7], (K, C))
    bias = view(bufs, op[9], op[10], (C,))
    y = view(bufs, op[11], op[12], (N, C))
    item = next_item(sync, counter)
    while item < op[1]:
        _dense_cols(x, w, bias, y, item * _GROUP, min(item * _GROUP + _GROUP, C))
        item = next_item(sync, counter)


@njit(**INLINE)
def exec_pool(op, bufs, sync, counter):
    """Program row: kind, items (= N), x (slot, off), N, H*W, C, y (slot, off), max?
    Average: the sum over H*W in order, then divided by H*W (what NumPy's ``mean`` does)."""
    N, HW, C = op[4], op[5], op[6]
    x = view(bufs, op[2], op[3], (N, HW, C))
    y = view(bufs, op[7], op[8], (N, C))
    item = next_item(sync, counter)
    while item < op[1]:
        _pool_image(x, y, item, op[9] != 0)
        item = next_item(sync, counter)


@njit(**LEAF)
def _pool_image(x, y, n, is_max):
    """y[n] = sum (or max) over x[n] (HW, C) in order; the sum is then divided by HW."""
    HW, C = x.shape[1], x.shape[2]
    for c in range(C):
        y[n, c] = x[n, 0, c]
    for i in range(1, HW):
        for c in range(C):
            v = x[n, i, c]
            if is_max:
                if v > y[n, c]:
                    y[n, c] = v
            else:
                y[n, c] += v
    if not is_max:
        d = x.dtype.type(HW)
        for c in range(C):
            y[n, c] = y[n, c] / d


@njit(**LEAF)
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

"""The classifier head: global pooling (NumPy) and a dense layer (Numba).

At MobileNetV2 1.0_224 batch 1 these are 7x7x1280 -> 1280 and 1280 x 1000 (1.3 M
multiply-adds, ~0.4% of the network). The pools are single-threaded NumPy reductions.

``dense`` takes the weights packed like a 1x1 convolution's (``pack_pointwise``: panels of 16
output columns). A batch of at least one pointwise register tile of rows (12 on AVX-512, 5 on
AVX2) runs as a pointwise op, register-blocked over rows and columns (0.35_96 at batch 32: 2.0
ms -> see the README); smaller batches are bound by reading the weights once and run row by
row, four panels at a time. Both compute ``bias + x[0]*w[0] + x[1]*w[1] + ...`` in k order,
so a row's result does not depend on the batch it came in (tested).

``dense`` is a Numba kernel rather than ``x @ w`` on purpose: a multi-threaded OpenBLAS
call leaves its worker threads spinning (up to ~0.1 s, ``OPENBLAS_THREAD_TIMEOUT``) and
on a 2-core machine they then steal the cores from the kernels' threads for the next kernels
(measured: pointwise layers 10-50x slower right after a BLAS call).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import _checks
from ._config import INLINE
from ._leaf import leaf
from ._program import OP_DENSE, OP_POOL
from ._sync import next_item, view
from ._lanes import LANES, fma, lane, load1, store
from ._pointwise import PackedPointwise, _bias_lanes, pack_pointwise, plan_pointwise, tile_rows


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


def dense(x: np.ndarray, w, bias: np.ndarray) -> np.ndarray:
    """Fully connected layer ``x @ w + bias``: x (N, Cin), w (Cin, Cout) or its
    ``pack_pointwise(w)`` (pack once when calling repeatedly), bias (Cout,).

    Returns (N, Cout) in x's dtype. Each output is ``bias + x[0]*w[0] + x[1]*w[1] + ...``
    in k order, fused multiply-adds in x's dtype.
    """
    x = _checks.array("x", x, 2)
    dt = x.dtype
    if isinstance(w, PackedPointwise):
        if w.dtype != dt:
            raise ValueError(f"w: dtype {w.dtype} does not match x's dtype {dt}")
        cin, cout = w.cin, w.cout
    else:
        w = _checks.array("w", w, 2, dt)
        cin, cout = w.shape
    if cin != x.shape[1]:
        raise ValueError(f"w: expected shape (Cin={x.shape[1]}, Cout) to match x {x.shape}, "
                         f"got {(cin, cout)}")
    bias = _checks.array("bias", bias, 1, dt)
    _checks.shape("bias", bias, (cout,), "Cout")
    y = np.empty((x.shape[0], cout), dt)
    if y.size == 0:
        return y
    from ._plan import Plan

    plan = Plan(dt)
    t = plan_dense(plan, plan.input(x.shape), w, bias)
    return plan.compile(t)(x, out=y)


_GROUP = 4  # panels (of 16 output columns) per work item: 4 independent accumulator vectors


def plan_dense(plan, x, w, bias):
    """Add a dense op to ``plan`` (arguments as :func:`dense`, checked; ``w`` packed or not).
    Returns the output Tensor (see the module doc for the two schedules)."""
    packed = w if isinstance(w, PackedPointwise) else pack_pointwise(w)
    N, K = x.shape
    if N >= tile_rows(plan.dtype):
        return plan_pointwise(plan, x, packed, bias, False)
    C, Q = packed.cout, packed.panels.shape[0]
    bl = _bias_lanes(bias, packed)

    def fill(row, loc, scratch, out):
        row[:14] = (OP_DENSE, -(-Q // _GROUP), *loc(x), N, K, *loc(packed.panels), Q, C, *loc(bl), *loc(out))

    return plan.add(fill, [x], (N, C), [packed.panels, bl], work=N * K * C)


def plan_pool(plan, x, is_max):
    """Add a global average (or max) pool over H, W to ``plan``: (N, H, W, C) -> (N, C)."""
    N, H, W, C = x.shape

    def fill(row, loc, scratch, out):
        row[:10] = (OP_POOL, N, *loc(x), N, H * W, C, *loc(out), bool(is_max))

    return plan.add(fill, [x], (N, C))


@leaf("I1 (I1 a1) I1 (i i i)", stage=2)
def exec_dense(op, bufs, sync, counter):
    """Program row: kind, items, x (slot, off), N, K, panels (slot, off), Q, C, bias lanes
    (slot, off), y (slot, off). Items = groups of 4 panels (the last may be fewer)."""
    N, K, Q, C = op[4], op[5], op[8], op[9]
    x = view(bufs, op[2], op[3], (N, K))
    panels = view(bufs, op[6], op[7], (Q, K, LANES))
    bias = view(bufs, op[10], op[11], (Q * LANES,))
    y = view(bufs, op[12], op[13], (N, C))
    item = next_item(sync, counter, op[1])
    while item < op[1]:
        _dense_panels(x, panels, bias, y, item * _GROUP, min(item * _GROUP + _GROUP, Q))
        item = next_item(sync, counter, op[1])


@leaf("I1 (I1 a1) I1 (i i i)", stage=2)
def exec_pool(op, bufs, sync, counter):
    """Program row: kind, items (= N), x (slot, off), N, H*W, C, y (slot, off), max?
    Average: the sum over H*W in order, then divided by H*W (what NumPy's ``mean`` does)."""
    N, HW, C = op[4], op[5], op[6]
    x = view(bufs, op[2], op[3], (N, HW, C))
    y = view(bufs, op[7], op[8], (N, C))
    item = next_item(sync, counter, op[1])
    while item < op[1]:
        _pool_image(x, y, item, op[9] != 0)
        item = next_item(sync, counter, op[1])


@leaf("a3 a2 i b")
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


@leaf("a2 a3 a1 a2 i i")
def _dense_panels(x, panels, bias, y, q_lo, q_hi):
    """y[:, 16*q_lo : 16*q_hi] (clipped to Cout) for every row of x, from the packed panels."""
    N, K = x.shape
    q_lo = max(q_lo, 0)
    for n in range(N):
        q = q_lo
        if q_hi - q == _GROUP:  # 4 accumulators: 4 independent FMA chains hide the latency
            a0 = load1(bias, q * LANES)
            a1 = load1(bias, (q + 1) * LANES)
            a2 = load1(bias, (q + 2) * LANES)
            a3 = load1(bias, (q + 3) * LANES)
            for k in range(K):
                s = x[n, k]
                a0 = fma(a0, s, panels[q], k, 0)
                a1 = fma(a1, s, panels[q + 1], k, 0)
                a2 = fma(a2, s, panels[q + 2], k, 0)
                a3 = fma(a3, s, panels[q + 3], k, 0)
            _put(y, n, q * LANES, a0)
            _put(y, n, (q + 1) * LANES, a1)
            _put(y, n, (q + 2) * LANES, a2)
            _put(y, n, (q + 3) * LANES, a3)
            continue
        for q in range(q_lo, q_hi):
            a0 = load1(bias, q * LANES)
            for k in range(K):
                a0 = fma(a0, x[n, k], panels[q], k, 0)
            _put(y, n, q * LANES, a0)


@njit(**INLINE)
def _put(y, n, c0, a):
    """y[n, c0:c0+16] = a, or its first lanes when the row ends sooner (the last panel)."""
    if c0 + LANES <= y.shape[1]:
        store(y, n, c0, a)
    else:
        for j in range(y.shape[1] - c0):
            y[n, c0 + j] = lane(a, j)

"""3x3 depthwise convolution (one filter per channel) + bias + optional ReLU6, NHWC.

    y[n, oh, ow, c] = act( bias[c] + sum_{dy, dx} xp[n, oh*s + dy, ow*s + dx, c] * w[dy, dx, c] )

``xp`` is ``x`` zero-padded by ``pads = ((top, bottom), (left, right))``; output size
``Ho = (H + top + bottom - 3) // s + 1`` (same for W). ``act`` is ReLU6 or identity.

How (memory-bound: 9 multiply-adds per 4-8 bytes moved, so the goal is streaming):
* Channels are processed in strips of 16 lanes (``_lanes.py`` tuples, vector registers),
  so every load, FMA and store is a contiguous 16-channel vector of one pixel.
* One work item = one output row (n, oh) x one group of channel strips; ``prange`` over
  items. An item writes only its own row segment, so results do not depend on threads.
* Padding is handled without branches in the hot loop: taps that fall in the zero padding
  read a clamped (valid) pixel and use a zero weight, i.e. they add ``x * 0`` exactly as
  an explicitly zero-padded input would. A strip's 9 weight tuples are scaled by 0/1
  once for the interior columns (rows outside the image) and once per border column
  (also columns outside), then kept for the run of columns. Channels past the last full
  strip (C % 16) use a scalar loop with the same arithmetic in the same order.
* Summation order per output: three chains, one per filter row,
  ``((bias + t00 + t01 + t02) + (t10 + t11 + t12)) + (t20 + t21 + t22)``, each step a
  fused multiply-add, in the input dtype, on both paths.
* Caveat of the zero-weight trick: an inf/nan *input* next to the border makes the padded
  taps nan (``inf * 0``), as it would with explicit zero padding.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import _checks
from ._config import INLINE
from ._leaf import leaf
from ._program import OP_DEPTHWISE
from ._sync import next_item, view
from ._lanes import LANES, add, fma_t, load, load1, mul_t, relu6, scale, store

_MIN_ITEMS = 16  # split channel strips into groups until there are this many work items


def depthwise3x3(x: np.ndarray, w: np.ndarray, bias: np.ndarray, stride: int, pads,
                 relu6: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """3x3 depthwise convolution with explicit zero padding, bias and optional ReLU6.

    x: (N, H, W, C) NHWC; w: (3, 3, C) [Keras' (3, 3, C, 1) is accepted too];
    bias: (C,); stride: 1 or 2; pads: ((top, bottom), (left, right)).
    Returns y: (N, Ho, Wo, C) with Ho = (H + top + bottom - 3) // stride + 1, same for Wo.
    """
    x = _checks.array("x", x, 4)
    dt = x.dtype
    N, H, W, C = x.shape
    w = _checks.depthwise_kernel("w", w, C, dt)
    bias = _checks.array("bias", bias, 1, dt)
    _checks.shape("bias", bias, (C,), "C")
    s, top, left, Ho, Wo = _checks.window(H, W, stride, pads)
    y = _checks.output(out, (N, Ho, Wo, C), dt, {"x": x})
    if y.size == 0:
        return y
    from ._plan import Plan

    plan = Plan(dt)
    t = plan_depthwise3x3(plan, plan.input(x.shape), w, bias, stride, pads, relu6)
    return plan.compile(t)(x, out=y)


def plan_depthwise3x3(plan, x, w, bias, stride, pads, relu6=True):
    """Add a depthwise op to ``plan`` (arguments as :func:`depthwise3x3`, already checked;
    ``w`` (3, 3, C) or (3, 3, C, 1)). Returns the output Tensor."""
    N, H, W, C = x.shape
    s, top, left, Ho, Wo = _checks.window(H, W, stride, pads)
    w9 = np.ascontiguousarray(w, plan.dtype).reshape(9, C)
    nstrips = C // LANES
    items = N * Ho
    g = max(1, nstrips)  # strips per work item: all, unless there are too few rows
    if items < _MIN_ITEMS and nstrips > 1:
        g = -(-nstrips // -(-_MIN_ITEMS // items))
    ngroups = max(1, -(-nstrips // g))
    lo, hi = _checks.interior_columns(W, Wo, left, s)

    def fill(row, loc, scratch, out):
        row[:24] = (OP_DEPTHWISE, N * Ho * ngroups, *loc(x), N, H, W, C, *loc(w9), *loc(bias), *loc(out),
                    Ho, Wo, s, top, left, lo, hi, bool(relu6), g, ngroups)

    return plan.add(fill, [x], (N, Ho, Wo, C), [w9, bias], work=N * Ho * Wo * C * 9)


@leaf("I1 (I1 a1) I1 (i i i)", stage=2)
def exec_depthwise(op, bufs, sync, counter):
    """Program row: kind, items, x (slot, off), N, H, W, C, w9 (slot, off), bias (slot, off),
    y (slot, off), Ho, Wo, stride, top, left, lo, hi, relu, strips per item, groups.
    Items = (n, oh, group of strips); the last group also does the C % 16 tail."""
    N, H, W, C = op[4], op[5], op[6], op[7]
    Ho, Wo = op[14], op[15]
    x = view(bufs, op[2], op[3], (N, H, W, C))
    w9 = view(bufs, op[8], op[9], (9, C))
    bias = view(bufs, op[10], op[11], (C,))
    y = view(bufs, op[12], op[13], (N, Ho, Wo, C))
    s, top, left, lo, hi, relu, g, ngroups = op[16], op[17], op[18], op[19], op[20], op[21] != 0, op[22], op[23]
    nstrips = C // LANES
    item = next_item(sync, counter, op[1])
    while item < op[1]:
        row = item // ngroups
        grp = item - row * ngroups
        n = row // Ho
        oh = row - n * Ho
        q0 = grp * g
        _row(x, w9, bias, y, n, oh, s, top, left, lo, hi, relu, q0, min(q0 + g, nstrips),
             nstrips * LANES, C if grp == ngroups - 1 else 0)
        item = next_item(sync, counter, op[1])


@leaf("a4 a2 a1 a4 i i i i i i i b i i i i", stage=1)
def _row(x, w9, bias, y, n, oh, s, top, left, lo, hi, relu, q0, q1, c_tail, c_end):
    """Output row y[n, oh]: strips q0..q1-1 (interior columns in one run, then each border
    column on its own) and the channels c_tail..c_end-1 past the last full strip."""
    W = x.shape[2]
    Wo = y.shape[2]
    one = x.dtype.type(1.0)
    zero = x.dtype.type(0.0)
    _strips(x, w9, bias, y, n, oh, s, top, left, lo, hi, one, one, one, relu, q0, q1)
    for j in range(Wo - (hi - lo)):
        ow = j if j < lo else hi + (j - lo)
        i = ow * s - left
        _strips(x, w9, bias, y, n, oh, s, top, left, ow, ow + 1,
                one if 0 <= i < W else zero, one if 0 <= i + 1 < W else zero,
                one if 0 <= i + 2 < W else zero, relu, q0, q1)
    if c_tail < c_end:
        _tail(x, w9, bias, y, n, oh, s, top, left, relu, c_tail, c_end)


@njit(**INLINE)
def _taps(b, x0, x1, x2, i0, i1, i2, c0,
          w00, w01, w02, w10, w11, w12, w20, w21, w22):
    """b + the 9 taps of one output pixel: rows x0..x2 (W, C), columns i0..i2.

    Three independent FMA chains (one per filter row), summed at the end: a single
    9-long chain is bound by FMA latency (measured ~1.5x slower)."""
    r0 = fma_t(b, x0, i0, c0, w00)
    r1 = mul_t(x1, i0, c0, w10)
    r2 = mul_t(x2, i0, c0, w20)
    r0 = fma_t(r0, x0, i1, c0, w01)
    r1 = fma_t(r1, x1, i1, c0, w11)
    r2 = fma_t(r2, x2, i1, c0, w21)
    r0 = fma_t(r0, x0, i2, c0, w02)
    r1 = fma_t(r1, x1, i2, c0, w12)
    r2 = fma_t(r2, x2, i2, c0, w22)
    return add(add(r0, r1), r2)


@njit(**INLINE)
def _rows(x, n, oh, s, top):
    """The 3 input rows of output row oh (clamped into the image) and, per filter row,
    1.0 if it lies inside the image else 0.0. Inlined: as views of one array the rows
    share strides, so LLVM computes each column's offset once for all three."""
    H = x.shape[1]
    ih = oh * s - top
    one = x.dtype.type(1.0)
    zero = x.dtype.type(0.0)
    return (x[n, min(max(ih, 0), H - 1)], x[n, min(max(ih + 1, 0), H - 1)],
            x[n, min(max(ih + 2, 0), H - 1)],
            one if 0 <= ih < H else zero, one if 0 <= ih + 1 < H else zero,
            one if 0 <= ih + 2 < H else zero)


@leaf("a4 a2 a1 a4 i i i i i i i s s s b i i")
def _strips(x, w9, bias, y, n, oh, s, top, left, ow_a, ow_b, g0, g1, g2, relu, q0, q1):
    """Columns ow_a..ow_b-1 of output row y[n, oh] for channel strips q0..q1-1; filter
    column dx is weighted by g_dx (1, or 0 where it falls in the padding), filter row dy
    by its row factor. Tap columns are clamped into the image (padding taps then read a
    valid pixel times a zero weight)."""
    W = x.shape[2]
    zero = x.dtype.type(0.0)
    six = x.dtype.type(6.0)
    x0, x1, x2, f0, f1, f2 = _rows(x, n, oh, s, top)
    yr = y[n, oh]
    for q in range(max(q0, 0), q1):
        c0 = q * LANES
        b = load1(bias, c0)
        # Taps in the padding get weight 0: they read a clamped pixel and add x * 0.
        w00 = scale(load(w9, 0, c0), f0 * g0)
        w01 = scale(load(w9, 1, c0), f0 * g1)
        w02 = scale(load(w9, 2, c0), f0 * g2)
        w10 = scale(load(w9, 3, c0), f1 * g0)
        w11 = scale(load(w9, 4, c0), f1 * g1)
        w12 = scale(load(w9, 5, c0), f1 * g2)
        w20 = scale(load(w9, 6, c0), f2 * g0)
        w21 = scale(load(w9, 7, c0), f2 * g1)
        w22 = scale(load(w9, 8, c0), f2 * g2)
        for ow in range(max(ow_a, 0), ow_b):
            i = ow * s - left
            # Clamped into the image (a no-op on interior columns; one code path, one compile).
            i0 = min(max(i, 0), W - 1)
            i1 = min(max(i + 1, 0), W - 1)
            i2 = min(max(i + 2, 0), W - 1)
            acc = _taps(b, x0, x1, x2, i0, i1, i2, c0,
                        w00, w01, w02, w10, w11, w12, w20, w21, w22)
            if relu:
                acc = relu6(acc, zero, six)
            store(yr, ow, c0, acc)


@leaf("a4 a2 a1 a4 i i i i i b i i")
def _tail(x, w9, bias, y, n, oh, s, top, left, relu, c_tail, c_end):
    """Channels c_tail..c_end-1 (< 16, past the last full strip) of row y[n, oh], scalar
    (a loop over channels would not vectorise: too many arrays for LLVM's alias checks).
    Same arithmetic, in the same order, as the strips."""
    W = x.shape[2]
    Wo = y.shape[2]
    one = x.dtype.type(1.0)
    zero = x.dtype.type(0.0)
    six = x.dtype.type(6.0)
    x0, x1, x2, f0, f1, f2 = _rows(x, n, oh, s, top)
    yr = y[n, oh]
    for ow in range(Wo):
        i = ow * s - left
        i0 = min(max(i, 0), W - 1)
        i1 = min(max(i + 1, 0), W - 1)
        i2 = min(max(i + 2, 0), W - 1)
        g0 = one if 0 <= i < W else zero
        g1 = one if 0 <= i + 1 < W else zero
        g2 = one if 0 <= i + 2 < W else zero
        for c in range(max(c_tail, 0), c_end):
            r0 = bias[c] + x0[i0, c] * (w9[0, c] * (f0 * g0))
            r1 = x1[i0, c] * (w9[3, c] * (f1 * g0))
            r2 = x2[i0, c] * (w9[6, c] * (f2 * g0))
            r0 = r0 + x0[i1, c] * (w9[1, c] * (f0 * g1))
            r1 = r1 + x1[i1, c] * (w9[4, c] * (f1 * g1))
            r2 = r2 + x2[i1, c] * (w9[7, c] * (f2 * g1))
            r0 = r0 + x0[i2, c] * (w9[2, c] * (f0 * g2))
            r1 = r1 + x1[i2, c] * (w9[5, c] * (f1 * g2))
            r2 = r2 + x2[i2, c] * (w9[8, c] * (f2 * g2))
            acc = (r0 + r1) + r2
            if relu:
                acc = min(max(acc, zero), six)
            yr[ow, c] = acc

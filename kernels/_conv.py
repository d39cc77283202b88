"""Full 3x3 convolution (all input channels) + bias + optional ReLU6, NHWC / HWIO.

    y[n, oh, ow, co] = act( bias[co]
                            + sum_{dy, dx, ci} xp[n, oh*s + dy, ow*s + dx, ci] * w[dy, dx, ci, co] )

``xp`` is ``x`` zero-padded by ``pads = ((top, bottom), (left, right))``; output size
``Ho = (H + top + bottom - 3) // s + 1`` (same for W). Meant for a network's first layer
(few input channels, e.g. RGB), so it is a direct convolution, not an im2col + GEMM.

How:
* ``w`` is packed per call (it is small) into panels (Q, 9*Cin, 16) of 16 output channels,
  row ``(dy*3 + dx)*Cin + ci``, zero-padded past Cout.
* Work item = one output row (n, oh) x one group of panels; ``prange`` over items.
* Along a row, 4 output pixels x 16 channels are accumulated in 16-lane tuples
  (``_lanes.py``); per tap and input channel: 4 broadcasts, one panel row, 4 FMAs.
  Pixels whose 3x3 window touches the padding (and the < 4 left over) are done one by one.
* Padding taps are skipped (rows and columns outside the image contribute nothing).
* Summation order per output: bias, then taps in (dy, dx, ci) order, one fused
  multiply-add each, in the input dtype; identical for tile and single-pixel paths.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import _checks
from ._config import INLINE, LEAF
from ._leaf import leaf
from ._program import OP_CONV3X3
from ._sync import next_item, view
from ._lanes import LANES, fma, lane, load1, relu6, store

_MIN_ITEMS = 16


def conv3x3(x: np.ndarray, w: np.ndarray, bias: np.ndarray, stride: int, pads,
            relu6: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """3x3 convolution with explicit zero padding, bias and optional ReLU6.

    x: (N, H, W, Cin) NHWC; w: (3, 3, Cin, Cout) HWIO; bias: (Cout,); stride: 1 or 2;
    pads: ((top, bottom), (left, right)).
    Returns y: (N, Ho, Wo, Cout), Ho = (H + top + bottom - 3) // stride + 1, same for Wo.
    """
    x = _checks.array("x", x, 4)
    dt = x.dtype
    N, H, W, cin = x.shape
    w = _checks.array("w", w, 4, dt)
    if w.shape[:3] != (3, 3, cin):
        raise ValueError(f"w: expected shape (3, 3, Cin={cin}, Cout), got {w.shape}")
    cout = w.shape[3]
    bias = _checks.array("bias", bias, 1, dt)
    _checks.shape("bias", bias, (cout,), "Cout")
    s, top, left, Ho, Wo = _checks.window(H, W, stride, pads)
    y = _checks.output(out, (N, Ho, Wo, cout), dt, {"x": x})
    if y.size == 0:
        return y
    from ._plan import Plan

    plan = Plan(dt)
    t = plan_conv3x3(plan, plan.input(x.shape), w, bias, stride, pads, relu6)
    return plan.compile(t)(x, out=y)


def plan_conv3x3(plan, x, w, bias, stride, pads, relu6=True):
    """Add a 3x3 conv op to ``plan`` (arguments as :func:`conv3x3`, already checked); packs
    ``w`` into panels here, once. Returns the output Tensor."""
    dt = plan.dtype
    N, H, W, cin = x.shape
    cout = w.shape[3]
    s, top, left, Ho, Wo = _checks.window(H, W, stride, pads)
    Q = -(-cout // LANES)
    padded = np.zeros((9 * cin, Q * LANES), dt)
    padded[:, :cout] = w.reshape(9 * cin, cout)
    panels = np.ascontiguousarray(padded.reshape(9 * cin, Q, LANES).transpose(1, 0, 2))
    b = np.zeros(Q * LANES, dt)
    b[:cout] = bias
    items = N * Ho
    g = Q if items >= _MIN_ITEMS else -(-Q // -(-_MIN_ITEMS // items))
    ngroups = -(-Q // g)

    def fill(row, loc, scratch, out):
        row[:24] = (OP_CONV3X3, N * Ho * ngroups, *loc(x), N, H, W, cin, *loc(panels), Q, *loc(b),
                    *loc(out), Ho, Wo, cout, s, top, left, bool(relu6), g, ngroups)

    return plan.add(fill, [x], (N, Ho, Wo, cout), [panels, b], work=N * Ho * Wo * 9 * cin * cout)


@leaf("I1 (I1 a1) I1 (i i i)", stage=2)
def exec_conv3x3(op, bufs, sync, counter):
    """Program row: kind, items, x (slot, off), N, H, W, Cin, panels (slot, off), Q, bias (slot,
    off), y (slot, off), Ho, Wo, Cout, stride, top, left, relu, panels per item, groups.
    Items = (n, oh, group of panels)."""
    N, H, W, cin, Q = op[4], op[5], op[6], op[7], op[10]
    Ho, Wo, cout = op[15], op[16], op[17]
    x = view(bufs, op[2], op[3], (N, H, W, cin))
    xf = view(bufs, op[2], op[3], (N, H, W * cin))
    panels = view(bufs, op[8], op[9], (Q, 9 * cin, LANES))
    bias = view(bufs, op[11], op[12], (Q * LANES,))
    y = view(bufs, op[13], op[14], (N, Ho, Wo, cout))
    s, top, left, relu, g, ngroups = op[18], op[19], op[20], op[21] != 0, op[22], op[23]
    item = next_item(sync, counter, op[1])
    while item < op[1]:
        row = item // ngroups
        grp = item - row * ngroups
        n = row // Ho
        oh = row - n * Ho
        for q in range(grp * g, min(grp * g + g, Q)):
            _conv_row(x, xf, panels[q], bias, y, n, oh, s, top, left, relu, q * LANES)
        item = next_item(sync, counter, op[1])


@njit(**LEAF)
def _put_tail(yr, ow, n, c0, nc, a0, a1, a2, a3):
    """Store the first ``nc < 16`` lanes of ``n`` pixels from ow on (last panel only;
    not inlined, to keep compile time down)."""
    for i in range(n):
        a = a0 if i == 0 else a1 if i == 1 else a2 if i == 2 else a3
        for j in range(nc):
            yr[ow + i, c0 + j] = lane(a, j)


@leaf("a4 a3 a2 a1 a4 i i i i i b i")
def _conv_row(x, xf, w, bias, y, n, oh, s, top, left, relu, c0):
    """Output row y[n, oh, :, c0:c0+16] from one panel ``w`` (9*Cin, 16).

    ``xf`` is ``x`` viewed as (N, H, W*Cin) (a reshape inside the loop is a C call)."""
    H, W, cin = x.shape[1], x.shape[2], x.shape[3]
    Wo = y.shape[2]
    zero = x.dtype.type(0.0)
    six = x.dtype.type(6.0)
    c0 = max(c0, 0)
    nc = min(LANES, y.shape[3] - c0)
    b = load1(bias, c0)
    yr = y[n, oh]
    # Pixels lo..hi-1 have their whole window inside the image columns.
    lo = min((left + s - 1) // s, Wo)
    hi = max(lo, min(Wo, (W - 3 + left) // s + 1))
    ntiles = (hi - lo) // 4
    for t in range(ntiles):
        ow = lo + 4 * t
        i0 = max(ow * s - left, 0) * cin  # flat offsets of the 4 windows in a row
        i1 = i0 + s * cin
        i2 = i1 + s * cin
        i3 = i2 + s * cin
        a0 = b
        a1 = b
        a2 = b
        a3 = b
        for dy in range(3):
            ih = oh * s - top + dy
            if ih < 0 or ih >= H:
                continue
            # In NHWC the 3 taps x Cin channels of one window row are contiguous:
            # x[n, ih, i + dx, ci] = xr[i*Cin + dx*Cin + ci], matching panel rows
            # (3*dy + dx)*Cin + ci. One flat loop of 3*Cin instead of two nested ones.
            xr = xf[n, ih]
            k0 = 3 * dy * cin
            for kk in range(3 * cin):
                a0 = fma(a0, xr[i0 + kk], w, k0 + kk, 0)
                a1 = fma(a1, xr[i1 + kk], w, k0 + kk, 0)
                a2 = fma(a2, xr[i2 + kk], w, k0 + kk, 0)
                a3 = fma(a3, xr[i3 + kk], w, k0 + kk, 0)
        # Straight-line epilogue (no branchy helper holding arrays: see _pointwise.py).
        if relu:
            a0 = relu6(a0, zero, six)
            a1 = relu6(a1, zero, six)
            a2 = relu6(a2, zero, six)
            a3 = relu6(a3, zero, six)
        if nc == LANES:
            store(yr, ow, c0, a0)
            store(yr, ow + 1, c0, a1)
            store(yr, ow + 2, c0, a2)
            store(yr, ow + 3, c0, a3)
        else:
            _put_tail(yr, ow, min(4, Wo - ow), c0, nc, a0, a1, a2, a3)  # 4 (not a literal: see _block)
    # Border pixels and the tile remainder, one at a time with bounds checks.
    for j in range(Wo - 4 * ntiles):
        ow = j if j < lo else lo + 4 * ntiles + (j - lo)
        a0 = b
        for dy in range(3):
            ih = oh * s - top + dy
            if ih < 0 or ih >= H:
                continue
            for dx in range(3):
                iw = ow * s - left + dx
                if iw < 0 or iw >= W:
                    continue
                k0 = (3 * dy + dx) * cin
                for ci in range(cin):
                    a0 = fma(a0, x[n, ih, iw, ci], w, k0 + ci, 0)
        if relu:
            a0 = relu6(a0, zero, six)
        if nc == LANES:
            store(yr, ow, c0, a0)
        else:
            _put_tail(yr, ow, min(1, Wo - ow), c0, nc, a0, a0, a0, a0)  # 1

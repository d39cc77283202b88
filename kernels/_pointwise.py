"""1x1 convolution (pointwise) as a register-blocked matrix multiply with a fused epilogue.

    y[p, c] = epilogue( bias[c] + sum_k x[p, k] * w[k, c] )      p < P = N*H*W pixels

    epilogue: bias -> ReLU6 (min(max(v, 0), 6)) if relu6 -> + residual[p, c] if given

Layout and blocking (why it is fast)
------------------------------------
* ``pack_pointwise`` rearranges ``w`` (Cin, Cout) once into ``panels`` (npanel, Cin, 16):
  output channels in panels of 16, zero-padded past Cout, so the inner loop reads one
  panel row ``panels[p, k, :]`` (64 B for float32) sequentially.
* Micro-kernel: a tile of ``MR`` pixels x 16 channels, partial sums held in ``MR``
  16-lane tuples (``_lanes.py``). Per k: load one panel row, broadcast one input value
  per pixel, ``MR`` 16-lane FMAs. On AVX2 (16 ymm registers; what this VM exposes)
  measured single-thread: float32 ``MR = 5`` (10 accumulator ymm) 55-94 GFLOP/s beat
  MR = 3/4/6/7/8 (6 and up spill: the scheduler hoists the broadcasts); float64
  ``MR = 3`` (a 16-lane float64 tuple is 4 ymm, so 12 accumulators) beat 2 and 4.
  (On an AVX-512 host a 16-lane float32 tuple is one zmm, so MR = 5 leaves registers
  unused; a larger tile would likely be faster there. Not measured: this VM hides AVX-512.)
* The epilogue is applied to the accumulators and each row segment is stored once.
* Tails: pixel rows of the last tile are clamped to the last pixel (valid memory, same
  code path) and simply not stored. A last panel of 9-15 channels is computed on zero
  padding lanes that are not stored. A last panel of at most 8 channels (Cout = 24 in
  MobileNetV2) is stored twice in the panel, and ``_block5h`` puts 2 pixels x 8 channels
  in each tuple (10 pixels per tile), so no FMA is wasted (float32; float64 pads).
* Parallel work items are (block of pixel tiles) x (group of panels); an item loops over
  its panels, and for each panel over its tiles. Groups keep a slice of the weights hot in
  L2 when Cin*Cout is large; blocks keep ``x`` rows hot in L1 and give both cores work even
  for 7x7 maps. Each item writes only its own output rectangle, and every output element
  is computed by the same instruction sequence whatever the blocking, so results are
  bit-identical for any thread count.
* Summation order per output: ``((bias + x0*w0) + x1*w1) + ...`` in k order, each step one
  fused multiply-add (``fastmath={'contract'}``), accumulated in the input dtype.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from . import _checks
from ._config import INLINE, LEAF
from ._sync import next_item, view
from ._program import OP_POINTWISE
from ._lanes import LANES, add, fma, fma2, lane, load, load1, load2, relu6, store, store2

# Epilogue flags (bit set): bias is always added first, then ReLU6, then the residual.
_RELU6, _RESIDUAL = 1, 2

# Cache budgets used to size work items (bytes); tuned on a Zen 3/4 core (32 KiB L1d,
# 1 MiB L2). They only change speed, never results.
_X_BLOCK_BYTES = 16 * 1024      # pixel rows of one item, re-read once per panel
_W_GROUP_BYTES = 256 * 1024     # weight panels of one item, re-read once per tile
_MIN_ITEMS = 16                 # enough items to balance a few threads


class PackedPointwise:
    """A (Cin, Cout) 1x1 weight matrix packed for :func:`pointwise` (see module doc).

    Attributes: ``panels`` (ceil(Cout/16), Cin, 16) C-contiguous, zero-padded;
    ``cin``, ``cout``; ``dtype``. Treat as opaque and immutable.
    """

    __slots__ = ("panels", "cin", "cout")

    def __init__(self, panels: np.ndarray, cin: int, cout: int):
        self.panels, self.cin, self.cout = panels, cin, cout

    @property
    def dtype(self) -> np.dtype:
        return self.panels.dtype

    def unpack(self) -> np.ndarray:
        """The original (Cin, Cout) matrix (a copy)."""
        w = self.panels.transpose(1, 0, 2).reshape(self.cin, -1)
        return np.ascontiguousarray(w[:, : self.cout])  # drops the duplicated tail lanes

    def __repr__(self) -> str:
        return f"PackedPointwise(cin={self.cin}, cout={self.cout}, dtype={self.dtype})"


def pack_pointwise(w: np.ndarray) -> PackedPointwise:
    """Pack a 1x1 weight matrix ``w`` (Cin, Cout) [or Keras' (1, 1, Cin, Cout)] once.

    Returns a :class:`PackedPointwise` with ``panels[q, k, j] = w[k, 16*q + j]`` (zero where
    ``16*q + j >= Cout``), in ``w``'s dtype. Exception: a last panel of at most 8 channels
    is stored twice, in lanes 0-7 and 8-15, for the 2-pixels-per-tuple tail kernel.
    """
    w = _checks.array("w", w)
    if w.ndim == 4 and w.shape[:2] == (1, 1):
        w = w[0, 0]
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(f"w: expected shape (Cin, Cout) or (1, 1, Cin, Cout), got {w.shape}")
    cin, cout = w.shape
    npanel = -(-cout // LANES)
    padded = np.zeros((cin, npanel * LANES), w.dtype)
    padded[:, :cout] = w
    panels = np.ascontiguousarray(padded.reshape(cin, npanel, LANES).transpose(1, 0, 2))
    if cout % LANES and cout % LANES <= LANES // 2:
        panels[-1, :, LANES // 2:] = panels[-1, :, : LANES // 2]
    return PackedPointwise(panels, cin, cout)


def pointwise(x: np.ndarray, packed: PackedPointwise, bias: np.ndarray, relu6: bool,
              residual: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """1x1 convolution ``y = x @ w + bias``, then ReLU6 if ``relu6``, then ``+ residual``.

    x: (..., Cin), typically NHWC (N, H, W, Cin); packed: from :func:`pack_pointwise`;
    bias: (Cout,); residual: same shape as y, optional; out: optional preallocated y
    (C-contiguous; may be ``residual`` itself for an in-place add, must not overlap ``x``).
    Returns y: (..., Cout) in x's dtype (float32 or float64, all arrays the same).
    """
    if not isinstance(packed, PackedPointwise):
        raise ValueError(f"packed: expected the result of pack_pointwise(w), got "
                         f"{type(packed).__name__}")
    x = _checks.array("x", x)
    dt = x.dtype
    if packed.dtype != dt:
        raise ValueError(f"packed: dtype {packed.dtype} does not match x's dtype {dt}")
    if x.ndim < 2 or x.shape[-1] != packed.cin:
        raise ValueError(f"x: expected shape (..., Cin={packed.cin}), got {x.shape}")
    bias = _checks.array("bias", bias, 1, dt)
    _checks.shape("bias", bias, (packed.cout,), "Cout")
    yshape = x.shape[:-1] + (packed.cout,)
    if residual is not None:
        residual = _checks.array("residual", residual, None, dt)
        _checks.shape("residual", residual, yshape, "same as the output")
    y = _checks.output(out, yshape, dt, {"x": x})
    if y.size == 0:
        return y
    from ._plan import Plan

    plan = Plan(dt)
    t = plan_pointwise(plan, plan.input(x.shape), packed, bias, relu6, residual)
    return plan.compile(t, copy_weights=False)(x, out=y)


def tile_rows(dtype) -> int:
    """Pixels per pointwise register tile for ``dtype`` on this CPU (see module doc)."""
    return 5 if np.dtype(dtype) == np.float32 else 3


def plan_pointwise(plan, x, packed, bias, relu6, residual=None):
    """Add a pointwise op to ``plan`` (arguments checked by :func:`pointwise`); ``residual``
    is a plan Tensor, an array, or None. Returns the output Tensor."""
    dt = plan.dtype
    P = x.size // packed.cin
    Q = packed.panels.shape[0]
    mr = tile_rows(dt)
    tb, g = _blocking(P, packed.cin, Q, mr, dt.itemsize)
    bp = mr * tb
    nblocks, ngroups = -(-P // bp), -(-Q // g)
    bl = _bias_lanes(bias, packed)
    mode = (_RELU6 if relu6 else 0) | (_RESIDUAL if residual is not None else 0)
    consts = [packed.panels, bl] + ([residual] if isinstance(residual, np.ndarray) else [])
    inputs = [x] + ([residual] if residual is not None and not isinstance(residual, np.ndarray) else [])

    def fill(row, loc, scratch, out):
        rs, ro = loc(residual) if residual is not None else (0, 0)
        row[:21] = (OP_POINTWISE, nblocks * ngroups, *loc(x), P, packed.cin, *loc(packed.panels), Q,
                    *loc(bl), rs, ro, residual is not None, *loc(out), packed.cout, mode, bp, g, ngroups)

    return plan.add(fill, inputs, x.shape[:-1] + (packed.cout,), consts)


@njit(**INLINE)
def exec_pointwise(op, bufs, sync, counter):
    """Program row: kind, items, x (slot, off), P, K, panels (slot, off), Q, bias (slot, off),
    residual (slot, off, present), y (slot, off), C, mode, pixels per item, panels per item, groups."""
    P, K, Q, C = op[4], op[5], op[8], op[16]
    x = view(bufs, op[2], op[3], (P, K))
    panels = view(bufs, op[6], op[7], (Q, K, LANES))
    bias = view(bufs, op[9], op[10], (Q * LANES,))
    if op[13]:
        res = view(bufs, op[11], op[12], (P, C))
    else:
        res = view(bufs, op[11], 0, (0, 0))
    y = view(bufs, op[14], op[15], (P, C))
    mode, bp, g, ngroups = op[17], op[18], op[19], op[20]
    item = next_item(sync, counter)
    while item < op[1]:
        blk = item // ngroups
        grp = item - blk * ngroups
        pa = blk * bp
        tiles(x, panels, bias, res, y, pa, min(pa + bp, P), grp * g, min(grp * g + g, Q), mode)
        item = next_item(sync, counter)


def tiles(x, panels, bias, res, y, pa, pb, q0, q1, mode):
    """Pixels pa..pb-1 x panels q0..q1-1 with the tiles for x's dtype (float32: 5-pixel tiles,
    float64: 3). Plain Python under NUMBA_DISABLE_JIT; compiled code resolves the choice at
    typing time (overload below), so only one tile family is compiled per dtype."""
    (_panels5 if x.dtype == np.float32 else _panels3)(x, panels, bias, res, y, pa, pb, q0, q1, mode)


@overload(tiles, jit_options={k: v for k, v in INLINE.items() if k != "inline"}, inline="always")
def _tiles_overload(x, panels, bias, res, y, pa, pb, q0, q1, mode):
    if x.dtype == types.float32:
        return lambda x, panels, bias, res, y, pa, pb, q0, q1, mode: _panels5(
            x, panels, bias, res, y, pa, pb, q0, q1, mode)
    return lambda x, panels, bias, res, y, pa, pb, q0, q1, mode: _panels3(
        x, panels, bias, res, y, pa, pb, q0, q1, mode)


def _bias_lanes(bias: np.ndarray, packed: PackedPointwise) -> np.ndarray:
    """``bias`` (Cout,) laid out like the packed weights: the kernels read 16 lanes per panel."""
    tail = packed.cout % LANES
    if not tail:
        return bias
    b = np.zeros(packed.panels.shape[0] * LANES, bias.dtype)
    b[: packed.cout] = bias
    if tail <= LANES // 2:
        b[packed.cout - tail + LANES // 2: packed.cout + LANES // 2] = bias[-tail:]
    return b


_EMPTY = {}


def _empty2(dt):
    """A (0, 0) placeholder for 'no residual' (keeps one kernel signature per dtype)."""
    if dt not in _EMPTY:
        _EMPTY[dt] = np.empty((0, 0), dt)
    return _EMPTY[dt]


def _blocking(P: int, K: int, npanel: int, mr: int, itemsize: int) -> tuple:
    """Tiles per pixel block and panels per group (speed only; never affects results)."""
    panel_bytes = K * LANES * itemsize
    g = max(1, min(npanel, _W_GROUP_BYTES // panel_bytes))
    ngroups = -(-npanel // g)
    ntiles = -(-P // mr)
    tb = max(1, _X_BLOCK_BYTES // (mr * K * itemsize))
    tb = min(tb, max(1, (ntiles * ngroups) // _MIN_ITEMS))
    return tb, g


# Compile-time note: Numba-IR inlining (``inline='always'``) deep-copies the callee's IR at
# every call site; inlining whole tiles into the parallel kernel took ~60 s to compile. So
# the tile loop (``_block*``) is an ordinary compiled function called once per
# (block, panel), and only the 16-lane arithmetic is inlined into it. The full-panel
# epilogue must be inlined too: passing the accumulator tuples *only* to a non-inlined
# function made LLVM scalarise them inside the k loop (measured 3-6 GFLOP/s). Rare paths
# (last partial panel) may call one, since the hot path keeps the tuples in vector form.
@njit(**LEAF)
def _tail(y, res, p0, pb, c0, nc, mode, a0, a1, a2, a3, a4):
    """Epilogue + store of the first ``nc < 16`` lanes of the valid rows p0.. of a tile
    (last panel only)."""
    for i in range(min(5, pb - p0)):
        a = a0 if i == 0 else a1 if i == 1 else a2 if i == 2 else a3 if i == 3 else a4
        for j in range(nc):
            v = lane(a, j)
            if mode & _RELU6:
                v = min(max(v, y.dtype.type(0.0)), y.dtype.type(6.0))
            if mode & _RESIDUAL:
                v += res[p0 + i, c0 + j]
            y[p0 + i, c0 + j] = v


# The epilogue of a full panel is written out in straight-line blocks on purpose: an
# inlined helper taking arrays and containing branches leaves NRT_incref/decref calls
# behind, and any call clobbers every vector register, spilling all accumulators
# (measured: 37 -> ~55 GFLOP/s on thin layers once removed).
@njit(**LEAF)
def _block5(x, w, bias, res, y, pa, pb, c0, nc, mode):
    """Pixels pa..pb-1 in tiles of 5 x one 16-channel panel ``w`` (K, 16) -> y[:, c0:c0+nc].

    float32 on AVX2: 10 accumulator ymm + 2 weight rows + 1 broadcast."""
    K = x.shape[1]
    zero = x.dtype.type(0.0)
    six = x.dtype.type(6.0)
    # max(., 0) tells LLVM the indices are non-negative, so Numba's negative-index
    # wraparound code disappears and the 16 lanes are provably consecutive (vectorisable).
    c0 = max(c0, 0)
    last = max(pb - 1, 0)
    b = load1(bias, c0)
    for p0 in range(max(pa, 0), pb, 5):
        # Rows past the end are clamped to the last pixel: same code path, not stored.
        r0 = min(p0, last)
        r1 = min(p0 + 1, last)
        r2 = min(p0 + 2, last)
        r3 = min(p0 + 3, last)
        r4 = min(p0 + 4, last)
        a0 = b
        a1 = b
        a2 = b
        a3 = b
        a4 = b
        for k in range(K):
            a0 = fma(a0, x[r0, k], w, k, 0)
            a1 = fma(a1, x[r1, k], w, k, 0)
            a2 = fma(a2, x[r2, k], w, k, 0)
            a3 = fma(a3, x[r3, k], w, k, 0)
            a4 = fma(a4, x[r4, k], w, k, 0)
        if nc == LANES:
            if mode & _RELU6:
                a0 = relu6(a0, zero, six)
                a1 = relu6(a1, zero, six)
                a2 = relu6(a2, zero, six)
                a3 = relu6(a3, zero, six)
                a4 = relu6(a4, zero, six)
            if mode & _RESIDUAL:  # all loads before any store: out may alias res
                a0 = add(a0, load(res, r0, c0))
                a1 = add(a1, load(res, r1, c0))
                a2 = add(a2, load(res, r2, c0))
                a3 = add(a3, load(res, r3, c0))
                a4 = add(a4, load(res, r4, c0))
            store(y, r0, c0, a0)
            if p0 + 1 < pb:
                store(y, r1, c0, a1)
            if p0 + 2 < pb:
                store(y, r2, c0, a2)
            if p0 + 3 < pb:
                store(y, r3, c0, a3)
            if p0 + 4 < pb:
                store(y, r4, c0, a4)
        else:
            _tail(y, res, p0, pb, c0, nc, mode, a0, a1, a2, a3, a4)


@njit(**LEAF)
def _block5h(x, w, bias, res, y, pa, pb, c0, nc, mode):
    """A last panel of ``nc <= 8`` channels: tiles of 10 pixels x 8 channels, each 16-lane
    tuple holding 2 pixels (``pack_pointwise`` stored the 8 weight lanes twice), so the
    same 10 accumulator registers do useful work instead of half of them."""
    K = x.shape[1]
    zero = x.dtype.type(0.0)
    six = x.dtype.type(6.0)
    c0 = max(c0, 0)
    last = max(pb - 1, 0)
    b = load1(bias, c0)
    for p0 in range(max(pa, 0), pb, 10):
        r0 = min(p0, last)
        r1 = min(p0 + 1, last)
        r2 = min(p0 + 2, last)
        r3 = min(p0 + 3, last)
        r4 = min(p0 + 4, last)
        r5 = min(p0 + 5, last)
        r6 = min(p0 + 6, last)
        r7 = min(p0 + 7, last)
        r8 = min(p0 + 8, last)
        r9 = min(p0 + 9, last)
        a0 = b
        a1 = b
        a2 = b
        a3 = b
        a4 = b
        for k in range(K):
            a0 = fma2(a0, x[r0, k], x[r1, k], w, k, 0)
            a1 = fma2(a1, x[r2, k], x[r3, k], w, k, 0)
            a2 = fma2(a2, x[r4, k], x[r5, k], w, k, 0)
            a3 = fma2(a3, x[r6, k], x[r7, k], w, k, 0)
            a4 = fma2(a4, x[r8, k], x[r9, k], w, k, 0)
        if mode & _RELU6:
            a0 = relu6(a0, zero, six)
            a1 = relu6(a1, zero, six)
            a2 = relu6(a2, zero, six)
            a3 = relu6(a3, zero, six)
            a4 = relu6(a4, zero, six)
        if nc == LANES // 2 and p0 + 10 <= pb:
            if mode & _RESIDUAL:
                a0 = add(a0, load2(res, r0, r1, c0))
                a1 = add(a1, load2(res, r2, r3, c0))
                a2 = add(a2, load2(res, r4, r5, c0))
                a3 = add(a3, load2(res, r6, r7, c0))
                a4 = add(a4, load2(res, r8, r9, c0))
            store2(y, r0, r1, c0, a0)
            store2(y, r2, r3, c0, a1)
            store2(y, r4, r5, c0, a2)
            store2(y, r6, r7, c0, a3)
            store2(y, r8, r9, c0, a4)
        else:  # fewer than 8 channels or a partial tile: lane by lane, in bounds
            _store_pairs(y, res, p0, pb, c0, nc, mode, a0, a1, a2, a3, a4)


@njit(**LEAF)
def _store_pairs(y, res, p0, pb, c0, nc, mode, a0, a1, a2, a3, a4):
    """Residual add + store of the valid pixels/channels of a :func:`_block5h` tile."""
    for i in range(min(10, pb - p0)):
        a = a0 if i < 2 else a1 if i < 4 else a2 if i < 6 else a3 if i < 8 else a4
        half = (i % 2) * (LANES // 2)
        for j in range(nc):
            v = lane(a, half + j)
            if mode & _RESIDUAL:
                v += res[p0 + i, c0 + j]
            y[p0 + i, c0 + j] = v


@njit(**LEAF)
def _block3(x, w, bias, res, y, pa, pb, c0, nc, mode):
    """:func:`_block5` with 3-pixel tiles (float64 on AVX2: 12 accumulator ymm)."""
    K = x.shape[1]
    zero = x.dtype.type(0.0)
    six = x.dtype.type(6.0)
    c0 = max(c0, 0)
    last = max(pb - 1, 0)
    b = load1(bias, c0)
    for p0 in range(max(pa, 0), pb, 3):
        r0 = min(p0, last)
        r1 = min(p0 + 1, last)
        r2 = min(p0 + 2, last)
        a0 = b
        a1 = b
        a2 = b
        for k in range(K):
            a0 = fma(a0, x[r0, k], w, k, 0)
            a1 = fma(a1, x[r1, k], w, k, 0)
            a2 = fma(a2, x[r2, k], w, k, 0)
        if nc == LANES:
            if mode & _RELU6:
                a0 = relu6(a0, zero, six)
                a1 = relu6(a1, zero, six)
                a2 = relu6(a2, zero, six)
            if mode & _RESIDUAL:
                a0 = add(a0, load(res, r0, c0))
                a1 = add(a1, load(res, r1, c0))
                a2 = add(a2, load(res, r2, c0))
            store(y, r0, c0, a0)
            if p0 + 1 < pb:
                store(y, r1, c0, a1)
            if p0 + 2 < pb:
                store(y, r2, c0, a2)
        else:  # min(3, pb - p0) rows are valid; the 4th/5th arguments are never read
            _tail(y, res, p0, min(pb, p0 + 3), c0, nc, mode, a0, a1, a2, a2, a2)


@njit(**INLINE)
def _panels5(x, panels, bias, res, y, pa, pb, q0, q1, mode):
    """Pixels pa..pb-1 x panels q0..q1-1 with the float32 tiles (a last panel of at most 8
    channels takes :func:`_block5h`). Also called by the banded block kernel."""
    C = y.shape[1]
    for q in range(q0, q1):
        nc = min(LANES, C - q * LANES)
        if nc <= LANES // 2:
            _block5h(x, panels[q], bias, res, y, pa, pb, q * LANES, nc, mode)
        else:
            _block5(x, panels[q], bias, res, y, pa, pb, q * LANES, nc, mode)


@njit(**INLINE)
def _panels3(x, panels, bias, res, y, pa, pb, q0, q1, mode):
    """:func:`_panels5` with the float64 tiles."""
    C = y.shape[1]
    for q in range(q0, q1):
        _block3(x, panels[q], bias, res, y, pa, pb, q * LANES, min(LANES, C - q * LANES), mode)

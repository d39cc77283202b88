"""1x1 convolution (pointwise) as a register-blocked matrix multiply with a fused epilogue.

    y[p, c] = epilogue( bias[c] + sum_k x[p, k] * w[k, c] )      p < P = N*H*W pixels

    epilogue: bias -> ReLU6 (min(max(v, 0), 6)) if relu6 -> + residual[p, c] if given

Layout and blocking (why it is fast)
------------------------------------
* ``pack_pointwise`` rearranges ``w`` (Cin, Cout) once into ``panels`` (npanel, Cin, 16):
  output channels in panels of 16, zero-padded past Cout, so the inner loop reads one
  panel row ``panels[p, k, :]`` (64 B for float32) sequentially.
* Micro-kernel (``_tiles.py``): a tile of ``M`` pixels x 16 channels, partial sums held in
  ``M`` 16-lane vectors (``_lanes.py``). Per k: load one panel row, broadcast one input
  value per pixel (folded into the FMA as a memory-broadcast operand on AVX-512), ``M``
  vector FMAs. ``M`` is chosen for the CPU: float32 12 on AVX-512 (12 zmm accumulators;
  5 left the two FMA units idle part of the time), 5 on AVX2 (10 ymm; measured earlier on an
  AVX2 VM, 55-94 GFLOP/s single thread, beat 3/4/6/7/8, which spill); float64 6 / 3.
* The epilogue is applied to the accumulators and each row segment is stored once.
* Tails: pixel rows of the last tile are clamped to the last pixel (valid memory, same
  code path) and simply not stored. A last panel of 9-15 channels is computed on zero
  padding lanes that are not stored. A last panel of at most 8 channels (Cout = 24 in
  MobileNetV2) is stored twice in the panel, and the half-panel tile puts 2 pixels x 8
  channels in each vector (2M pixels per tile), so no FMA is wasted (float32; float64 pads).
* Work items (handed out by the engine, ``_engine.py``) are (block of pixel tiles) x
  (group of panels); an item loops over its panels, and for each panel over its tiles. Groups keep a slice of the weights hot in
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
from ._leaf import leaf
from ._config import INLINE, LEAF
from ._sync import next_item, view
from ._program import OP_POINTWISE
from ._lanes import LANES
from ._tiles import _RELU6, _RESIDUAL, block, half, rows

# Epilogue flags (bit set, ``_tiles``): bias is always added first, then ReLU6, then the residual.

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
    return plan.compile(t)(x, out=y)


def tile_rows(dtype) -> int:
    """Pixels per pointwise register tile for ``dtype`` on this CPU (``_tiles.rows``)."""
    return rows(dtype)


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

    return plan.add(fill, inputs, x.shape[:-1] + (packed.cout,), consts, work=P * packed.cin * packed.cout)


@leaf("I1 (I1 a1) I1 (i i i)", stage=2)
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
    item = next_item(sync, counter, op[1])
    while item < op[1]:
        blk = item // ngroups
        grp = item - blk * ngroups
        pa = blk * bp
        tiles(x, panels, bias, res, y, pa, min(pa + bp, P), grp * g, min(grp * g + g, Q), mode)
        item = next_item(sync, counter, op[1])


def tiles(x, panels, bias, res, y, pa, pb, q0, q1, mode):
    """Pixels pa..pb-1 x panels q0..q1-1 with the tiles for x's dtype (float32: 5-pixel tiles,
    float64: 3). Plain Python under NUMBA_DISABLE_JIT; compiled code resolves the choice at
    typing time (overload below), so only one tile family is compiled per dtype."""
    (_panels_f32 if x.dtype == np.float32 else _panels_f64)(x, panels, bias, res, y, pa, pb, q0, q1, mode)


@overload(tiles, jit_options={k: v for k, v in INLINE.items() if k != "inline"}, inline="always")
def _tiles_overload(x, panels, bias, res, y, pa, pb, q0, q1, mode):
    if x.dtype == types.float32:
        return lambda x, panels, bias, res, y, pa, pb, q0, q1, mode: _panels_f32(
            x, panels, bias, res, y, pa, pb, q0, q1, mode)
    return lambda x, panels, bias, res, y, pa, pb, q0, q1, mode: _panels_f64(
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


def _blocking(P: int, K: int, npanel: int, mr: int, itemsize: int) -> tuple:
    """Tiles per pixel block and panels per group (speed only; never affects results)."""
    panel_bytes = K * LANES * itemsize
    g = max(1, min(npanel, _W_GROUP_BYTES // panel_bytes))
    ngroups = -(-npanel // g)
    ntiles = -(-P // mr)
    tb = max(1, _X_BLOCK_BYTES // (mr * K * itemsize))
    tb = min(tb, max(1, (ntiles * ngroups) // _MIN_ITEMS))
    return tb, g


# The register tiles (``_tiles.py``): M pixel rows x 16 channels, M chosen for this CPU.
TILE_F32 = block(rows(np.float32), np.float32)
HALF_F32 = half(rows(np.float32), np.float32)
TILE_F64 = block(rows(np.float64), np.float64)


@leaf("a2 a3 a1 a2 a2 i i i i i", dtypes=(np.float32,), stage=1)
def _panels_f32(x, panels, bias, res, y, pa, pb, q0, q1, mode):
    """Pixels pa..pb-1 x panels q0..q1-1 with the float32 tiles (a last panel of at most 8
    channels takes the half-panel tile). Also used by the banded block kernel."""
    C = y.shape[1]
    for q in range(q0, q1):
        nc = min(LANES, C - q * LANES)
        if nc <= LANES // 2:
            HALF_F32(x, panels[q], bias, res, y, pa, pb, q * LANES, nc, mode)
        else:
            TILE_F32(x, panels[q], bias, res, y, pa, pb, q * LANES, nc, mode)


@leaf("a2 a3 a1 a2 a2 i i i i i", dtypes=(np.float64,), stage=1)
def _panels_f64(x, panels, bias, res, y, pa, pb, q0, q1, mode):
    """:func:`_panels_f32` with the float64 tile (the half panel is padded, not paired)."""
    C = y.shape[1]
    for q in range(q0, q1):
        TILE_F64(x, panels[q], bias, res, y, pa, pb, q * LANES, min(LANES, C - q * LANES), mode)

"""Expand 1x1 -> ReLU6 -> depthwise 3x3 -> ReLU6 -> project 1x1 (+ input), a band of rows at a time.

    e = relu6(x @ We + be)                        (N, H, W, Ce)    the wide tensor
    d = relu6(depthwise3x3(e, Wd, stride, pads) + bd)   (N, Ho, Wo, Ce)
    y = d @ Wp + bp  [+ x]                         (N, Ho, Wo, Cout)

This is the memory-saving schedule of Sandler et al., "MobileNetV2: Inverted Residuals
and Linear Bottlenecks" (2018), section 5.1: the depthwise step only needs 3 input rows
per output row, so ``e`` and ``d`` are produced a band of rows at a time into small
scratch buffers and ``e``/``d`` never exist in full. (In MobileNetV2 ``Ce`` is 6x the
input width, so these are the largest tensors of the network.)

Schedule
--------
* Work items are (image, chunk of output rows); each parallel worker owns one scratch pair
  (``e`` band: ``band*stride + 2`` rows x W x Ce; ``d`` band: ``band`` rows x Wo x Ce) and
  walks its items' chunks band by band. Consecutive bands overlap by 2 input rows (stride 1)
  or 1 (stride 2): those rows of ``e`` are moved to the front of the buffer, not recomputed,
  so only the first band of a chunk recomputes its halo.
* Chunks per image: one when the batch alone gives every worker a few items, else the rows
  are split so that single images still use all threads.
* Each step calls the same tile functions as the unfused kernels (``_pointwise._block*``
  for the 1x1 convolutions, ``_depthwise._row`` for the depthwise), so every output element
  is computed by the same instruction sequence and the result is bit-identical to
  ``pointwise`` -> ``depthwise3x3`` -> ``pointwise`` for any band size, chunking and thread
  count (tested).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import _checks
from ._leaf import leaf
from ._config import INLINE
from ._program import OP_BLOCK
from ._sync import next_item, view
from ._depthwise import _row
from ._lanes import LANES
from ._pointwise import _RELU6, _RESIDUAL, PackedPointwise, _bias_lanes, tiles

# Bytes of scratch per worker that the default band size aims for. Measured, 1.0_224 on a
# 2-core Zen 3 (512 KiB L2 per core): bands of 1-2 rows (192 KiB) lose to the unbanded
# kernels at batch 1 (per-band overhead, halo rows), 8-16 rows win clearly at batch 32 and
# tie at batch 1; 768 KiB gives 9 rows on the 112x112x96 block and 16 on 56x56x144.
_BAND_BYTES = 768 * 1024
_ITEMS_PER_THREAD = 4  # split images into row chunks until there are this many items


def expand_depthwise_project(x: np.ndarray, expand: PackedPointwise, expand_bias: np.ndarray,
                             depthwise: np.ndarray, depthwise_bias: np.ndarray, stride: int, pads,
                             project: PackedPointwise, project_bias: np.ndarray,
                             residual: bool = False, band: int | None = None,
                             out: np.ndarray | None = None) -> np.ndarray:
    """An inverted residual block computed in bands of ``band`` output rows (see module doc).

    x: (N, H, W, Cin); expand: packed (Cin, Ce), expand_bias (Ce,), or both None (no
    expansion, Ce = Cin: depthwise -> project in bands); depthwise: (3, 3, Ce)
    [or (3, 3, Ce, 1)], depthwise_bias (Ce,); stride 1 or 2; pads ((top, bottom), (left,
    right)) of the depthwise step; project: packed (Ce, Cout), project_bias (Cout,);
    residual: add ``x`` to the output (needs stride 1, Cout == Cin and 'same' size);
    band: output rows per band (default: sized to ~768 KiB of scratch per worker).
    Returns y: (N, Ho, Wo, Cout), Ho = (H + top + bottom - 3) // stride + 1.
    """
    packed = (("project", project),) if expand is None else (("expand", expand), ("project", project))
    for name, p in packed:
        if not isinstance(p, PackedPointwise):
            raise ValueError(f"{name}: expected the result of pack_pointwise(w), got "
                             f"{type(p).__name__}")
    x = _checks.array("x", x, 4)
    dt = x.dtype
    N, H, W, cin = x.shape
    for name, p in packed:
        if p.dtype != dt:
            raise ValueError(f"{name}: dtype {p.dtype} does not match x's dtype {dt}")
    if expand is None:  # no expansion (MobileNetV2's first block): e is x itself
        if expand_bias is not None:
            raise ValueError("expand_bias: must be None when expand is None")
        ce, be = cin, None
    else:
        if expand.cin != cin:
            raise ValueError(f"expand: expects Cin={expand.cin} input channels, x has shape {x.shape}")
        ce = expand.cout
        be = _checks.array("expand_bias", expand_bias, 1, dt)
        _checks.shape("expand_bias", be, (ce,), "Ce")
    if project.cin != ce:
        raise ValueError(f"project: expects Cin={project.cin}, but the depthwise step gives "
                         f"{ce} channels")
    wd = _checks.depthwise_kernel("depthwise", depthwise, ce, dt)
    bd = _checks.array("depthwise_bias", depthwise_bias, 1, dt)
    _checks.shape("depthwise_bias", bd, (ce,), "Ce")
    bp = _checks.array("project_bias", project_bias, 1, dt)
    _checks.shape("project_bias", bp, (project.cout,), "Cout")
    s, top, left, Ho, Wo = _checks.window(H, W, stride, pads)
    yshape = (N, Ho, Wo, project.cout)
    if residual and yshape != x.shape:
        raise ValueError(f"residual: the output {yshape} must have the input's shape {x.shape}")
    y = _checks.output(out, yshape, dt, {"x": x})
    if y.size == 0:
        return y
    if band is not None and (isinstance(band, bool) or not isinstance(band, (int, np.integer)) or band < 1):
        raise ValueError(f"band: expected a positive int (output rows), got {band!r}")
    from ._plan import Plan

    plan = Plan(dt)
    t = plan_block(plan, plan.input(x.shape), expand, be, wd, bd, s, pads, project, bp, residual, band)
    return plan.compile(t)(x, out=y)


def plan_block(plan, x, expand, expand_bias, depthwise, depthwise_bias, stride, pads, project,
               project_bias, residual=False, band=None):
    """Add a banded block to ``plan`` (arguments as :func:`expand_depthwise_project`, already
    checked; ``residual`` True adds the block's input). Returns the output Tensor."""
    dt = plan.dtype
    N, H, W, cin = x.shape
    if expand is None:
        ce, pe, be = cin, np.zeros((0, cin, LANES), dt), np.zeros(0, dt)
    else:
        ce, pe, be = expand.cout, expand.panels, _bias_lanes(expand_bias, expand)
    s, top, left, Ho, Wo = _checks.window(H, W, stride, pads)
    row_bytes = (s * W + Wo) * ce * dt.itemsize  # e rows + d row per output row
    band = max(1, min(Ho, _BAND_BYTES // row_bytes)) if band is None else int(min(band, Ho))
    workers = plan.nthreads
    chunks = 1 if N >= _ITEMS_PER_THREAD * workers else min(
        -(-Ho // band), -(-_ITEMS_PER_THREAD * workers // N))
    e_rows = 0 if expand is None else min(H, (band - 1) * s + 3)
    se_size, sd_size = e_rows * W * ce, band * Wo * ce
    lo, hi = _checks.interior_columns(W, Wo, left, s)
    wd = np.ascontiguousarray(depthwise, dt).reshape(9, ce)
    bpl = _bias_lanes(project_bias, project)

    def fill(row, loc, scratch, out):
        (ss, seo), (_, sdo) = scratch
        row[:41] = (OP_BLOCK, N * chunks, *loc(x), N, H, W, cin, *loc(pe), pe.shape[0], ce, *loc(be),
                    *loc(wd), *loc(depthwise_bias), *loc(project.panels), project.panels.shape[0],
                    project.cout, *loc(bpl), bool(residual), *loc(out), Ho, Wo, s, top, left, lo, hi,
                    band, chunks, ss, seo, se_size, sdo, sd_size)

    return plan.add(fill, [x], (N, Ho, Wo, project.cout),
                    [pe, be, wd, depthwise_bias, project.panels, bpl], (se_size, sd_size),
                    work=N * (H * W * cin * ce * (expand is not None) + Ho * Wo * ce * (9 + project.cout)))


@leaf("I1 (I1 a1) I1 (i i i) i", stage=2)
def exec_block(op, bufs, sync, counter, tid):
    """Program row: kind, items (= N * chunks), x (slot, off), N, H, W, Cin, expand panels (slot,
    off), Qe (0: no expansion), Ce, expand bias (slot, off), depthwise w9 (slot, off), depthwise
    bias (slot, off), project panels (slot, off), Qp, Cout, project bias (slot, off), residual?,
    y (slot, off), Ho, Wo, stride, top, left, lo, hi, band, chunks, scratch slot, e-scratch
    offset and size per thread, d-scratch offset and size per thread.
    Thread ``tid`` uses its own scratch pair; each item writes only its own output rows."""
    N, H, W, cin, Qe, ce = op[4], op[5], op[6], op[7], op[10], op[11]
    Qp, cout, Ho, Wo = op[20], op[21], op[27], op[28]
    x = view(bufs, op[2], op[3], (N * H * W, cin))
    pe = view(bufs, op[8], op[9], (Qe, cin, LANES))
    be = view(bufs, op[12], op[13], (Qe * LANES,))
    wd = view(bufs, op[14], op[15], (9, ce))
    bd = view(bufs, op[16], op[17], (ce,))
    pp = view(bufs, op[18], op[19], (Qp, ce, LANES))
    bp = view(bufs, op[22], op[23], (Qp * LANES,))
    if op[24]:
        res = x
    else:
        res = x[0:0]
    y = view(bufs, op[25], op[26], (N * Ho * Wo, cout))
    s, top, left, lo, hi, band, chunks = op[29], op[30], op[31], op[32], op[33], op[34], op[35]
    ss, se_size, sd_size = op[36], op[38], op[40]
    se = view(bufs, ss, op[37] + tid * se_size, (se_size,))
    sd = view(bufs, ss, op[39] + tid * sd_size, (sd_size,))
    per_chunk = (Ho + chunks - 1) // chunks
    item = next_item(sync, counter, op[1])
    while item < op[1]:
        n = item // chunks
        c0 = (item - n * chunks) * per_chunk
        c1 = min(c0 + per_chunk, Ho)
        if c0 < c1:
            _chunk(x, pe, be, wd, bd, pp, bp, res, y, se, sd, n, c0, c1, H, W, Ho, Wo, s, top, left, lo,
                   hi, band)
        item = next_item(sync, counter, op[1])


@njit(**INLINE)
def _tiles(x, panels, bias, res, y, mode):
    """All pixels x all panels of one 1x1 step (the tiles of ``_pointwise``)."""
    tiles(x, panels, bias, res, y, 0, x.shape[0], 0, panels.shape[0], mode)


@njit(**INLINE)
def _chunk(x, pe, be, wd, bd, pp, bp, res, y, se, sd, n, c0, c1, H, W, Ho, Wo, s, top,
           left, lo, hi, band):
    """Output rows c0..c1-1 of image n, band by band; ``se``/``sd`` are this worker's scratch."""
    ce = wd.shape[1]
    nstrips = ce // LANES
    ra = 0
    rb = 0  # rows ra..rb-1 of e are in se (none yet)
    for oh0 in range(c0, c1, band):
        oh1 = min(oh0 + band, c1)
        # Input rows this band reads: oh*s - top + (0, 1, 2), clipped to the image.
        na = max(oh0 * s - top, 0)
        nb = min((oh1 - 1) * s - top + 3, H)
        if pe.shape[0] == 0:  # no expansion: the band reads x's rows in place
            e4 = x[(n * H + na) * W:(n * H + nb) * W].reshape(1, nb - na, W, ce)
        else:
            e4 = _expand(x, pe, be, res, se, n, H, W, ce, na, nb, ra, rb)
            ra = na
            rb = nb
        d4 = sd[:(oh1 - oh0) * Wo * ce].reshape(1, oh1 - oh0, Wo, ce)
        top_band = top + na - oh0 * s  # padding rows above e's first row for this band
        # Image 0 of the band, ReLU6 on, strips from 0 -- as values computed at run time: the
        # literals 0 / True would make Numba compile a second specialisation of the depthwise
        # leaf functions (Literal[int](0) arguments), ~3 s more cold start for the same code.
        first, relu = n - n, n >= 0
        for oh in range(oh1 - oh0):
            _row(e4, wd, bd, d4, first, oh, s, top_band, left, lo, hi, relu, first, nstrips,
                 nstrips * LANES, ce)
        p0 = (n * Ho + oh0) * Wo
        p1 = (n * Ho + oh1) * Wo
        d2 = d4.reshape((oh1 - oh0) * Wo, ce)
        if res.shape[0] > 0:
            _tiles(d2, pp, bp, res[p0:p1], y[p0:p1], _RESIDUAL)
        else:
            _tiles(d2, pp, bp, res, y[p0:p1], 0)


@njit(**INLINE)
def _expand(x, pe, be, res, se, n, H, W, ce, na, nb, ra, rb):
    """Rows na..nb-1 of e = relu6(x[n] @ We + be) into the scratch ``se``, which holds rows
    ra..rb-1 from the previous band; returns them as a (1, nb - na, W, Ce) view."""
    row = W * ce  # elements per row of e
    first = na
    if ra <= na < rb:  # overlap with the previous band: move rows na..rb-1 to the front
        first = rb
        src = (na - ra) * row
        for i in range((rb - na) * row):  # forward copy: the destination is below the source
            se[i] = se[src + i]
    if first < nb:  # expand the new rows first..nb-1 of image n into their place
        _tiles(x[(n * H + first) * W:(n * H + nb) * W], pe, be, res,  # res: not read
             se[(first - na) * row:(nb - na) * row].reshape((nb - first) * W, ce), _RELU6)
    return se[:(nb - na) * row].reshape(1, nb - na, W, ce)

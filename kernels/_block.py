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

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from . import _checks
from ._config import JIT, PARALLEL, call, jit_disabled
from ._depthwise import _row
from ._lanes import LANES
from ._pointwise import _RELU6, _RESIDUAL, PackedPointwise, _bias_lanes, _empty2, _panels3, _panels5

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
        ce, pe, be = cin, np.zeros((0, cin, LANES), dt), np.zeros(0, dt)
    else:
        if expand.cin != cin:
            raise ValueError(f"expand: expects Cin={expand.cin} input channels, x has shape {x.shape}")
        ce, pe = expand.cout, expand.panels
        be = _checks.array("expand_bias", expand_bias, 1, dt)
        _checks.shape("expand_bias", be, (ce,), "Ce")
        be = _bias_lanes(be, expand)
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
    row_bytes = (s * W + Wo) * ce * dt.itemsize  # e rows + d row per output row
    if band is None:
        band = max(1, min(Ho, _BAND_BYTES // row_bytes))
    elif isinstance(band, bool) or not isinstance(band, (int, np.integer)) or band < 1:
        raise ValueError(f"band: expected a positive int (output rows), got {band!r}")
    band = int(min(band, Ho))
    workers = 1 if jit_disabled() else numba.get_num_threads()
    chunks = 1 if N >= _ITEMS_PER_THREAD * workers else min(
        -(-Ho // band), -(-_ITEMS_PER_THREAD * workers // N))
    # Scratch, one pair per worker (allocated here, so tracemalloc sees the peak memory).
    e_rows = 0 if expand is None else min(H, (band - 1) * s + 3)
    scratch_e = np.empty((workers, e_rows * W * ce), dt)
    scratch_d = np.empty((workers, band * Wo * ce), dt)
    lo, hi = _checks.interior_columns(W, Wo, left, s)
    res = x.reshape(-1, cin) if residual else _empty2(dt)
    call(_edp_kernel, x.reshape(-1, cin), pe, be,
         wd.reshape(9, ce), bd, project.panels, _bias_lanes(bp, project), res,
         y.reshape(-1, project.cout), scratch_e, scratch_d, N, H, W, Ho, Wo, s, top, left, lo, hi,
         band, chunks)
    return y


def _tiles(x, panels, bias, res, y, mode):
    """The 1x1 tiles for x's dtype (float32: 5-pixel tiles, float64: 3). Plain Python under
    NUMBA_DISABLE_JIT; compiled code resolves it at typing time through the overload below.
    (Not a function argument: a function-typed argument makes Numba's cache key differ in
    every process, so the kernel would be recompiled on each start; measured 11 s.)"""
    (_panels5 if x.dtype == np.float32 else _panels3)(x, panels, bias, res, y, 0, x.shape[0], 0,
                                                      panels.shape[0], mode)


@overload(_tiles, jit_options=JIT)
def _tiles_overload(x, panels, bias, res, y, mode):
    if x.dtype == types.float32:
        return lambda x, panels, bias, res, y, mode: _panels5(x, panels, bias, res, y, 0, x.shape[0], 0,
                                                              panels.shape[0], mode)
    return lambda x, panels, bias, res, y, mode: _panels3(x, panels, bias, res, y, 0, x.shape[0], 0,
                                                          panels.shape[0], mode)


@njit(**PARALLEL)
def _edp_kernel(x, pe, be, wd, bd, pp, bp, res, y, scratch_e, scratch_d,
                N, H, W, Ho, Wo, s, top, left, lo, hi, band, chunks):
    """Worker ``w`` takes items w, w + workers, ... of the (image, chunk) list; each item
    writes only its own output rows. x (N*H*W, Cin), y (N*Ho*Wo, Cout), res like y or (0, 0)."""
    workers = scratch_e.shape[0]
    per_chunk = (Ho + chunks - 1) // chunks
    for w in prange(workers):
        for item in range(w, N * chunks, workers):
            n = item // chunks
            c0 = (item - n * chunks) * per_chunk
            c1 = min(c0 + per_chunk, Ho)
            if c0 < c1:
                _chunk(x, pe, be, wd, bd, pp, bp, res, y, scratch_e[w], scratch_d[w],
                       n, c0, c1, H, W, Ho, Wo, s, top, left, lo, hi, band)


@njit(**JIT)
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
        for oh in range(oh1 - oh0):
            _row(e4, wd, bd, d4, 0, oh, s, top_band, left, lo, hi, True, 0, nstrips,
                 nstrips * LANES, ce)
        p0 = (n * Ho + oh0) * Wo
        p1 = (n * Ho + oh1) * Wo
        d2 = d4.reshape((oh1 - oh0) * Wo, ce)
        if res.shape[0] > 0:
            _tiles(d2, pp, bp, res[p0:p1], y[p0:p1], _RESIDUAL)
        else:
            _tiles(d2, pp, bp, res, y[p0:p1], 0)


@njit(**JIT)
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

"""Numba kernels for CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and ADD, equal to ``ops_ref`` bit for bit.

How an integer convolution runs on float kernels, exactly
---------------------------------------------------------
The accumulator of a quantized convolution is ``acc[c] = sum_k a_k * b_k`` with integers
``a_k = x_k + in_off`` and ``b_k = w[c,k] + w_off``. Every partial sum, in any order, is bounded by
``max|a| * sum_k |b_k|``. When that bound is below ``2^24`` for every output channel, float32
represents every partial sum exactly, and a float32 multiply-add (fused or not) of such integers
is exact: no rounding ever happens. So the project's register-blocked float32 kernels
(``mnv2ref.kernels``: the pointwise tiles ``_panels_f32`` and ``conv3x3``) compute the exact integer
accumulator from the centred input ``float32(x - zp_in)`` (zero padding == a skipped tap) and the
centred weights. ``max|a|`` is taken over the input dtype's whole range, so the guarantee holds for
every input. A 1x1 layer whose bound reaches ``2^24`` is split along K into chunks that each stay
below it (each chunk's sum is exact; the chunks are added as integers); a 3x3 one takes ``ops_ref``.

* 1x1 CONV_2D (``_pointwise_ref``): a block of pixels is centred into a float32 scratch, multiplied
  in cache and requantized from the cache-resident accumulator: memory sees int8 in, int8 out.
* DEPTHWISE_CONV_2D 3x3 (``_depthwise_row``): int32 lanes over channels, on the int8 input directly
  (9 taps: memory-bound, so the narrow input matters more than the multiply).
* 3x3 CONV_2D (the stem): ``conv3x3`` on the centred input, then ``_requantize``.
* FULLY_CONNECTED: int32 lanes, the double-precision requantization of the TFLite >= 2.20 reference
  kernel (``ops_ref.fully_connected``). ADD: elementwise, three ``_mbqm``.

The requantization (``+ bias``, ``MultiplyByQuantizedMultiplier`` per channel, ``+ zp_out``, clamp)
uses TFLite's int32 semantics on int32 lanes (``_mbqm``); ``kernels="xnnpack"`` swaps in XNNPACK's
fp32 epilogue (``_requantize_fp32``, ``_epilogue_fp32``) on the same accumulators. Other shapes (not
1x1 / 3x3, a strided 1x1, depth multiplier > 1) take ``ops_ref`` (the same arithmetic, in NumPy).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from mnv2ref import kernels as fk
from mnv2ref.kernels._config import INLINE, JIT, ensure_compiled

# The integer epilogues are elementwise loops over independent outputs (bit-identical for any
# thread count); they keep Numba's own ``prange`` pool, apart from the float engine's threads.
PARALLEL = dict(JIT, parallel=True)


def call(kernel, *args):
    """Compile (or load) ``kernel`` for these argument types through the kernels' one compile guard, then run it."""
    ensure_compiled(kernel, args)
    return kernel(*args)
from mnv2ref.kernels._pointwise import _panels_f32

from . import ops_ref

EXACT_LIMIT = float(1 << 24)   # float32 holds every integer of magnitude <= 2^24


@njit(**INLINE)
def _wrap32(x):
    return ((x + 2147483648) & 0xFFFFFFFF) - 2147483648


@njit(**INLINE)
def _mbqm(x, m, left, right, mask):
    """``MultiplyByQuantizedMultiplier`` (double rounding), branch-free, on int32 lanes where it can.

    ``x``, ``m`` int32; ``left = max(shift, 0)``, ``right = max(-shift, 0)``, ``mask = 2^right - 1``
    (per channel, from ``_shifts``). ``m >= 0`` (``QuantizeMultiplier``), so SRDHM's
    INT32_MIN * INT32_MIN case cannot occur. The casts keep LLVM on 32-bit lanes and a 32x32->64
    multiply (``vpmuldq``); the int32 casts wrap like C++'s int32 arithmetic.
    """
    xs = np.int32(np.int64(x) << left)
    ab = np.int64(xs) * np.int64(m)
    t = ab + (1073741824 if ab >= 0 else -1073741823)          # nudge 2^30 or 1 - 2^30
    h = np.int32((t + ((t >> 63) & 2147483647)) >> 31)          # C division by 2^31 (toward zero)
    threshold = (mask >> 1) + (np.int32(1) if h < 0 else np.int32(0))
    return np.int32((h >> right) + (np.int32(1) if (h & mask) > threshold else np.int32(0)))


def _shifts(shift):
    """Per-channel int32 ``(left, right, mask)`` for ``_mbqm`` from TFLite's signed shifts."""
    shift = np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return left.astype(np.int32), right.astype(np.int32), ((np.int64(1) << right) - 1).astype(np.int32)


@njit(**PARALLEL)
def _center(x, off, out):
    """``out = float32(x + off)`` (flat arrays)."""
    n = x.size
    for i in prange(n):
        out[i] = np.float32(np.int64(x[i]) + off)


@njit(**PARALLEL)
def _requantize(acc, bias, mult, left, right, mask, zp_out, amin, amax, y, yc):
    """``y[p, c] = clamp(MBQM(int32(acc[p, c]) + bias[c], M[c], shift[c]) + zp_out)`` and
    ``yc = float32(y - zp_out)`` (the centred input of the next convolution). ``acc``: float32 holding
    exact integers below 2^24, or int32 (a K-split layer's summed chunks); the int32 sum wraps like
    TFLite's accumulator. (Numba compiles one version per accumulator dtype.)"""
    npix, c = acc.shape
    for p in prange(npix):
        for k in range(c):
            a = np.int32(np.int64(np.int32(acc[p, k])) + np.int64(bias[k]))
            v = np.int32(_mbqm(a, mult[k], left[k], right[k], mask[k]) + zp_out)
            v = min(max(v, amin), amax)
            y[p, k] = v
            yc[p, k] = np.float32(v - zp_out)


@njit(**PARALLEL)
def _sum_chunks(acc, out):
    """``out[p, c] = int32(sum_j acc[j, p, c])`` (wrapping): the accumulator of a layer split along K,
    each chunk's float32 sum exact below 2^24."""
    nchunk, npix, c = acc.shape
    for p in prange(npix):
        for k in range(c):
            a = np.int64(0)
            for j in range(nchunk):
                a += np.int64(acc[j, p, k])
            out[p, k] = np.int32(a)


@njit(**PARALLEL)
def _requantize_fp32(acc, bias, scale, zp_out, amin, amax, y, yc):
    """XNNPACK's fp32 requantization (``kernels="xnnpack"``): ``clamp(rne(float32(acc + bias) * scale[c]) + zp)``."""
    npix, c = acc.shape
    for p in prange(npix):
        for k in range(c):
            a = np.int32(np.int64(np.int32(acc[p, k])) + np.int64(bias[k]))
            v = np.int32(np.rint(np.float32(a) * scale[k])) + zp_out
            v = min(max(v, amin), amax)
            y[p, k] = v
            yc[p, k] = np.float32(v - zp_out)


@njit(**JIT)
def _centre_rows(x, pa, n, off, xs):
    k = x.shape[1]
    for i in range(n):
        for j in range(k):
            xs[i, j] = np.float32(np.int32(x[pa + i, j]) + off)


@njit(**JIT)
def _epilogue_ref(acc, pa, bias, mult, left, right, mask, zp_out, amin, amax, y, yc, want_yc):
    n, c = acc.shape
    for i in range(n):
        for k in range(c):
            a = np.int32(np.int64(np.int32(acc[i, k])) + np.int64(bias[k]))
            v = np.int32(_mbqm(a, mult[k], left[k], right[k], mask[k]) + zp_out)
            y[pa + i, k] = min(max(v, amin), amax)
        if want_yc:
            for k in range(c):
                yc[pa + i, k] = np.float32(np.int32(y[pa + i, k]) - zp_out)


@njit(**JIT)
def _epilogue_fp32(acc, pa, bias, scale, zp_out, amin, amax, y, yc, want_yc):
    n, c = acc.shape
    for i in range(n):
        for k in range(c):
            a = np.int32(np.int64(np.int32(acc[i, k])) + np.int64(bias[k]))
            v = np.int32(np.rint(np.float32(a) * scale[k])) + zp_out
            y[pa + i, k] = min(max(v, amin), amax)
        if want_yc:
            for k in range(c):
                yc[pa + i, k] = np.float32(np.int32(y[pa + i, k]) - zp_out)


@njit(**PARALLEL)
def _pointwise_ref(x, off, panels, zbias, res0, bp, bias, mult, left, right, mask, zp_out, amin, amax,
                   y, yc, want_yc):
    """y (P, C) = requantize(x (P, K) @ centred weights) with TFLite's MBQM, blocks of ``bp`` pixels."""
    npix, k = x.shape
    c = y.shape[1]
    for blk in prange((npix + bp - 1) // bp):
        pa = blk * bp
        n = min(bp, npix - pa)
        xs = np.empty((n, k), np.float32)
        acc = np.empty((n, c), np.float32)
        _centre_rows(x, pa, n, off, xs)
        _panels_f32(xs, panels, zbias, res0, acc, 0, n, 0, panels.shape[0], 0)
        _epilogue_ref(acc, pa, bias, mult, left, right, mask, zp_out, amin, amax, y, yc, want_yc)


@njit(**PARALLEL)
def _pointwise_fp32(x, off, panels, zbias, res0, bp, bias, scale, zp_out, amin, amax, y, yc, want_yc):
    """``_pointwise_ref`` with XNNPACK's fp32 requantization (``kernels="xnnpack"``)."""
    npix, k = x.shape
    c = y.shape[1]
    for blk in prange((npix + bp - 1) // bp):
        pa = blk * bp
        n = min(bp, npix - pa)
        xs = np.empty((n, k), np.float32)
        acc = np.empty((n, c), np.float32)
        _centre_rows(x, pa, n, off, xs)
        _panels_f32(xs, panels, zbias, res0, acc, 0, n, 0, panels.shape[0], 0)
        _epilogue_fp32(acc, pa, bias, scale, zp_out, amin, amax, y, yc, want_yc)


# ---- 3x3 depthwise convolution on int8/uint8 input, int32 lanes, requantized per output row ----

@njit(**JIT)
def _depthwise_row(x, off, w9, s, top, left, n, oy, acc):
    """acc[ox, c] = sum over the 3x3 taps inside the image of w9[tap, c] * (x[n, iy, ix, c] + off)
    (int32, wrapping like TFLite's accumulator); taps outside the image are skipped."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    ow = acc.shape[0]
    for ox in range(ow):
        for k in range(c):
            acc[ox, k] = 0
        for ky in range(3):
            iy = oy * s - top + ky
            if iy < 0 or iy >= h:
                continue
            for kx in range(3):
                ix = ox * s - left + kx
                if ix < 0 or ix >= w:
                    continue
                t = ky * 3 + kx
                for k in range(c):
                    acc[ox, k] = np.int32(acc[ox, k] + w9[t, k] * (np.int32(x[n, iy, ix, k]) + off))


@njit(**PARALLEL)
def _depthwise_ref(x, off, w9, s, top, left, oh, ow, bias, mult, left_s, right, mask, zp_out, amin, amax,
                   y, yc, want_yc):
    """DEPTHWISE_CONV_2D 3x3 (``ops_ref.depthwise_conv_2d``) with TFLite's MBQM; y (N*OH*OW, C)."""
    c = x.shape[3]
    for item in prange(x.shape[0] * oh):
        acc = np.empty((ow, c), np.int32)
        _depthwise_row(x, off, w9, s, top, left, item // oh, item % oh, acc)
        _epilogue_ref(acc, item * ow, bias, mult, left_s, right, mask, zp_out, amin, amax, y, yc, want_yc)


@njit(**PARALLEL)
def _depthwise_fp32(x, off, w9, s, top, left, oh, ow, bias, scale, zp_out, amin, amax, y, yc, want_yc):
    """``_depthwise_ref`` with XNNPACK's fp32 requantization (``kernels="xnnpack"``)."""
    c = x.shape[3]
    for item in prange(x.shape[0] * oh):
        acc = np.empty((ow, c), np.int32)
        _depthwise_row(x, off, w9, s, top, left, item // oh, item % oh, acc)
        _epilogue_fp32(acc, item * ow, bias, scale, zp_out, amin, amax, y, yc, want_yc)


@njit(**PARALLEL)
def _add(x1, x2, off1, off2, ls, m1, l1, r1, k1, m2, l2, r2, k2, mo, lo, ro, ko, zp_out, amin, amax, y, yc):
    """ADD (``ops_ref.add``) elementwise over flat arrays; ``yc`` as in ``_requantize``."""
    n = x1.size
    centred = yc.size == n
    for i in prange(n):
        a1 = _mbqm(np.int32((np.int64(x1[i]) + off1) << ls), m1, l1, r1, k1)
        a2 = _mbqm(np.int32((np.int64(x2[i]) + off2) << ls), m2, l2, r2, k2)
        v = np.int32(_mbqm(np.int32(np.int64(a1) + np.int64(a2)), mo, lo, ro, ko) + zp_out)
        v = min(max(v, amin), amax)
        y[i] = v
        if centred:
            yc[i] = np.float32(v - zp_out)


@njit(**PARALLEL)
def _fully_connected(xs, wc, bias, scale, zp_out, amin, amax, y):
    """``y[b, c] = clamp((int32) round(double(acc) * scale[c]) + zp_out)``, ``acc`` the int32 (wrapping)
    sum of the centred ``wc[c] . xs[b]`` plus bias: int32 lanes, halves away from zero in double."""
    nb, k = xs.shape
    cout = wc.shape[0]
    for c in prange(cout):
        for b in range(nb):
            acc = np.int32(0)
            for i in range(k):
                acc = np.int32(acc + wc[c, i] * xs[b, i])
            v = np.float64(np.int32(np.int64(acc) + np.int64(bias[c]))) * scale[c]
            t = np.trunc(v)
            if abs(v - t) >= 0.5:
                t += 1.0 if v > 0 else -1.0
            r = np.int64(t) + zp_out
            y[b, c] = min(max(r, amin), amax)


@njit(**PARALLEL)
def _fully_connected_fp32(xs, wc, bias, scale, zp_out, amin, amax, y):
    """``_fully_connected`` with XNNPACK's fp32 requantization: ``rne(float32(acc) * scale[c])``."""
    nb, k = xs.shape
    cout = wc.shape[0]
    for c in prange(cout):
        for b in range(nb):
            acc = np.int32(0)
            for i in range(k):
                acc = np.int32(acc + wc[c, i] * xs[b, i])
            a = np.int32(np.int64(acc) + np.int64(bias[c]))
            r = np.int64(np.rint(np.float32(a) * scale[c])) + zp_out
            y[b, c] = min(max(r, amin), amax)


def _chunks(b_abs: np.ndarray, max_a: int) -> list:
    """Split K (axis 1 of ``b_abs``: |centred weight| per (channel, k)) into ranges whose
    per-channel partial sums of ``max_a * |b|`` stay below 2^24 (greedy, contiguous)."""
    limit = EXACT_LIMIT / max_a
    out, start, run = [], 0, np.zeros(b_abs.shape[0])
    for k in range(b_abs.shape[1]):
        if np.any(run + b_abs[:, k] >= limit):
            if k == start:
                raise ValueError("a single weight exceeds the exact float32 range")  # |w| > 2^24/255
            out.append((start, k))
            start, run = k, np.zeros(b_abs.shape[0])
        run = run + b_abs[:, k]
    out.append((start, b_abs.shape[1]))
    return out


def _max_centred(dtype, zp: int) -> int:
    info = np.iinfo(dtype)
    return max(zp - int(info.min), int(info.max) - zp, 1)



class _Conv:
    """A CONV_2D or DEPTHWISE_CONV_2D bound to its weights (centred and packed once).

    ``run(x, xc, out_shape, out_dtype, centred)`` -> ``(y, yc)``: ``xc`` is ``float32(x - zp_in)`` if
    the producer made it (else None), ``yc`` the same for ``y`` when ``centred`` (else None).
    """

    def __init__(self, op, w, bias, in_dtype, xnn=None):
        q = op.quant
        self.q, self.name, self.xnn = q, op.name, xnn
        dw = op.name == "DEPTHWISE_CONV_2D"
        cout = w.shape[3] if dw else w.shape[0]
        self.bias = np.zeros(cout, np.int32) if bias is None else bias.astype(np.int32)
        self.mult = np.ascontiguousarray(q["multiplier"], np.int32)
        self.left, self.right, self.mask = _shifts(q["shift"])
        self.w_raw, self.bias_raw = w, bias
        wc = w.astype(np.int64) + q["filter_offset"]
        max_a = _max_centred(in_dtype, -q["input_offset"])
        kh, kw = w.shape[1:3]
        square = q["stride"][0] == q["stride"][1] in (1, 2)
        self.kind = None
        if dw and (kh, kw) == (3, 3) and q["depth_multiplier"] == 1 and square:
            self.kind = "depthwise"                                                # int32 lanes: no bound
            self.w9 = np.ascontiguousarray(wc[0].reshape(9, -1)).astype(np.int32)  # (9, C), centred
        elif not dw and (kh, kw) == (1, 1) and q["stride"] == (1, 1) and q["pad"] == (0, 0):
            self.kind = "pointwise"
            m = wc[:, 0, 0, :]                                                     # (Cout, Cin)
            self.chunks = _chunks(np.abs(m).astype(np.float64), max_a)
            self.packed = [fk.pack_pointwise(np.ascontiguousarray(m[:, a:b].T).astype(np.float32))
                           for a, b in self.chunks]
        elif not dw and (kh, kw) == (3, 3) and square:
            if max_a * np.abs(wc).reshape(wc.shape[0], -1).sum(1).max() < EXACT_LIMIT:
                self.kind = "conv3x3"
                self.hwio = np.ascontiguousarray(wc.transpose(1, 2, 3, 0)).astype(np.float32)
        self.zero = np.zeros(cout, np.float32)
        if xnn is None:    # TFLite reference: MBQM with per-channel multiplier and shift
            self._params = (self.bias, self.mult, self.left, self.right, self.mask)
            self._kernel = _requantize
            self._consts = (np.int32(q["output_offset"]), np.int32(q["act_min"]), np.int32(q["act_max"]))
        else:              # XNNPACK: float32 scale, ties to even
            self._params = (self.bias, np.ascontiguousarray(xnn["scale"], np.float32))
            self._kernel = _requantize_fp32
            self._consts = (np.int32(q["output_offset"]), np.int32(xnn["act_min"]), np.int32(xnn["act_max"]))
        self._tiled = None

    def _epilogue(self, kernel, acc, y, yc):
        """Requantize (P, C) row blocks of ``T`` pixels at once (a long inner loop LLVM vectorises well,
        per-channel parameters tiled ``T`` times), then the leftover pixels."""
        npix, c = acc.shape
        t = max(1, 256 // c)
        if self._tiled is None:
            self._tiled = [np.tile(v, t) for v in self._params]
        main = npix - npix % t
        if main:
            call(kernel, acc[:main].reshape(-1, c * t), *self._tiled, *self._consts,
                 y[:main].reshape(-1, c * t), yc[:main].reshape(-1, c * t))
        if main < npix:
            call(kernel, acc[main:], *self._params, *self._consts, y[main:], yc[main:])

    def _depthwise(self, x, out_shape, out_dtype, centred):
        q, (_, oh, ow, cout) = self.q, out_shape
        y = np.empty(out_shape, out_dtype)
        yc = np.empty(out_shape, np.float32) if centred else np.empty((0, 0), np.float32)
        args = (np.ascontiguousarray(x), np.int32(q["input_offset"]), self.w9, q["stride"][0], q["pad"][0],
                q["pad"][1], oh, ow)
        y2, yc2 = y.reshape(-1, cout), (yc.reshape(-1, cout) if centred else yc)
        if self.xnn is None:
            call(_depthwise_ref, *args, *self._params, *self._consts, y2, yc2, centred)
        else:
            call(_depthwise_fp32, *args, *self._params, *self._consts, y2, yc2, centred)
        return y, (yc if centred else None)

    def _pointwise_fused(self, x, out_shape, out_dtype, centred):
        q, cout = self.q, out_shape[3]
        x2 = np.ascontiguousarray(x).reshape(-1, x.shape[3])
        y = np.empty(out_shape, out_dtype)
        y2 = y.reshape(-1, cout)
        yc = np.empty(out_shape, np.float32) if centred else np.empty((0, 0), np.float32)
        yc2 = yc.reshape(-1, cout) if centred else yc
        panels = self.packed[0].panels
        zbias = np.zeros(panels.shape[0] * 16, np.float32)
        # blocks of pixels: a few hundred KiB of scratch (L2), and enough blocks for the threads
        bp = max(5, min(80, (128 * 1024) // (4 * (x.shape[3] + cout))) // 5 * 5)
        bp = max(5, min(bp, -(-x2.shape[0] // 16) // 5 * 5 or 5))
        res0 = np.empty((0, 0), np.float32)
        off = np.int32(q["input_offset"])
        if self.xnn is None:
            call(_pointwise_ref, x2, off, panels, zbias, res0, bp, self.bias, self.mult, self.left, self.right,
                 self.mask, *self._consts, y2, yc2, centred)
        else:
            call(_pointwise_fp32, x2, off, panels, zbias, res0, bp, *self._params, *self._consts, y2, yc2, centred)
        return y, (yc if centred else None)

    def _pads(self, x_shape, out_shape, k=3):
        (h, w), (oh, ow) = x_shape[1:3], out_shape[1:3]
        s = self.q["stride"][0]
        top, left = self.q["pad"]
        return ((top, max((oh - 1) * s + k - h - top, 0)), (left, max((ow - 1) * s + k - w - left, 0)))

    def run(self, x, xc, out_shape, out_dtype, centred=False):
        q = self.q
        if self.kind is None:
            dw = self.name == "DEPTHWISE_CONV_2D"
            if self.xnn is None:
                f = ops_ref.depthwise_conv_2d if dw else ops_ref.conv_2d
                y = f(x, self.w_raw, self.bias_raw, q, out_shape, out_dtype)
            else:
                from .xnnpack import requantize_fp32
                f = ops_ref.depthwise_accumulator if dw else ops_ref.conv_accumulator
                y = requantize_fp32(f(x, self.w_raw, self.bias_raw, q, out_shape), self.xnn["scale"],
                                    q["output_offset"], self.xnn["act_min"], self.xnn["act_max"], out_dtype)
            return y, (center(y, q["output_offset"]) if centred else None)
        cout = out_shape[3]
        if self.kind == "pointwise" and len(self.chunks) == 1:
            return self._pointwise_fused(x, out_shape, out_dtype, centred)
        if self.kind == "depthwise":
            return self._depthwise(x, out_shape, out_dtype, centred)
        if xc is None:
            xc = center(x, -q["input_offset"])
        if self.kind == "pointwise":
            acc = np.empty((len(self.chunks),) + tuple(out_shape), np.float32)
            for j, ((a, b), packed) in enumerate(zip(self.chunks, self.packed)):
                xin = xc if len(self.chunks) == 1 else np.ascontiguousarray(xc[..., a:b])
                fk.pointwise(xin, packed, self.zero, False, out=acc[j])
        else:
            acc = fk.conv3x3(xc, self.hwio, self.zero, q["stride"][0], self._pads(x.shape, out_shape),
                             relu6=False)[None]
        if acc.shape[1:] != tuple(out_shape):  # pragma: no cover - the plan's shapes are TFLite's
            raise ValueError(f"{self.name}: kernel output {acc.shape[1:]} != tensor shape {tuple(out_shape)}")
        y = np.empty(out_shape, out_dtype)
        yc = np.empty(out_shape, np.float32)   # written always: nearly every output feeds a convolution
        acc2 = acc.reshape(acc.shape[0], -1, cout)
        if acc.shape[0] > 1:
            summed = np.empty(acc2.shape[1:], np.int32)
            call(_sum_chunks, acc2, summed)
            acc2 = summed[None]
        self._epilogue(self._kernel, acc2[0], y.reshape(-1, cout), yc.reshape(-1, cout))
        return y, yc


def center(x, zp) -> np.ndarray:
    """``float32(x - zp)``: the centred float32 copy of an integer tensor (Numba)."""
    xc = np.empty(x.shape, np.float32)
    call(_center, np.ascontiguousarray(x).reshape(-1), np.int64(-zp), xc.reshape(-1))
    return xc


class _Add:
    def __init__(self, op):
        q = self.q = op.quant
        self.args = [np.int64(q["input1_offset"]), np.int64(q["input2_offset"]), np.int64(q["left_shift"])]
        for m, sh in ((q["input1_multiplier"], q["input1_shift"]), (q["input2_multiplier"], q["input2_shift"]),
                      (q["output_multiplier"], q["output_shift"])):
            left, right, mask = _shifts(sh)
            self.args += [np.int32(m), left.item(), right.item(), mask.item()]
        self.args = [np.int32(v) for v in self.args]
        self.args += [np.int32(q["output_offset"]), np.int32(q["act_min"]), np.int32(q["act_max"])]

    def run(self, x1, x2, out_dtype, centred=False):
        y = np.empty(x1.shape, out_dtype)
        yc = np.empty(x1.shape, np.float32) if centred else np.empty(0, np.float32)  # may feed only an ADD
        call(_add, np.ascontiguousarray(x1).reshape(-1), np.ascontiguousarray(x2).reshape(-1), *self.args,
             y.reshape(-1), yc.reshape(-1))
        return y, (yc if centred else None)


class _FullyConnected:
    def __init__(self, op, w, bias, xnn=None):
        self.q = op.quant
        self.wc = np.ascontiguousarray(w.astype(np.int32) + np.int32(self.q["filter_offset"]))
        self.bias = np.zeros(w.shape[0], np.int32) if bias is None else bias.astype(np.int32)
        if xnn is None:      # TFLite >= 2.20 reference: double-precision scale, halves away from zero
            self.kernel, self.scale = _fully_connected, np.ascontiguousarray(self.q["effective_scale"], np.float64)
            self.clamp = (self.q["act_min"], self.q["act_max"])
        else:                # XNNPACK: float32 scale, ties to even
            self.kernel, self.scale = _fully_connected_fp32, np.ascontiguousarray(xnn["scale"], np.float32)
            self.clamp = (xnn["act_min"], xnn["act_max"])

    def run(self, x, xc, out_shape, out_dtype, centred=False):
        q = self.q
        xs = np.ascontiguousarray(x.reshape(-1, self.wc.shape[1]).astype(np.int32) + np.int32(q["input_offset"]))
        y = np.empty((xs.shape[0], self.wc.shape[0]), out_dtype)
        call(self.kernel, xs, self.wc, self.bias, self.scale, np.int64(q["output_offset"]),
             np.int64(self.clamp[0]), np.int64(self.clamp[1]), y)
        y = y.reshape(out_shape)
        return y, (center(y, q["output_offset"]) if centred else None)


def bind(op, w, bias, in_dtype, xnn=None):
    """The fast kernel of one CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / ADD op (``.run``).

    ``xnn``: ``dict(scale, act_min, act_max)`` for XNNPACK's fp32 requantization (``kernels="xnnpack"``;
    convolutions only), else TFLite's reference arithmetic."""
    if op.name == "ADD":
        return _Add(op)
    if op.name == "FULLY_CONNECTED":
        return _FullyConnected(op, w, bias, xnn)
    return _Conv(op, w, bias, in_dtype, xnn)


# Checked wrappers with the ops_ref signatures (the oracle's twins, used by the tests).
def conv_2d(x, w, bias, q, out_shape, out_dtype):
    return _bound("CONV_2D", x, w, bias, q).run(x, None, out_shape, out_dtype)[0]


def depthwise_conv_2d(x, w, bias, q, out_shape, out_dtype):
    return _bound("DEPTHWISE_CONV_2D", x, w, bias, q).run(x, None, out_shape, out_dtype)[0]


def fully_connected(x, w, bias, q, out_shape, out_dtype):
    return _bound("FULLY_CONNECTED", x, w, bias, q).run(x, None, out_shape, out_dtype)[0]


def add(x1, x2, q, out_dtype):
    return _Add(_Op("ADD", q)).run(np.asarray(x1), np.asarray(x2), out_dtype)[0]


class _Op:
    def __init__(self, name, q):
        self.name, self.quant = name, q


def _bound(name, x, w, bias, q):
    x = np.asarray(x)
    if x.dtype not in (np.int8, np.uint8):
        raise ValueError(f"{name}: x must be int8 or uint8, got {x.dtype}")
    return bind(_Op(name, q), np.asarray(w), None if bias is None else np.asarray(bias), x.dtype)

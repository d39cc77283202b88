"""TFLite's reference kernels (``OpResolverType.BUILTIN_REF``), one readable NumPy function per op.

Each function takes the integer tensors and the op's derived parameters (the ``quant`` dict that
``quant.prepare`` computes, as TFLite's ``Prepare`` does) and returns the output tensor exactly as
TFLite's reference kernel of ai-edge-litert 2.3.0 computes it. Layout NHWC; weights as stored
(conv ``(Cout, KH, KW, Cin)``, depthwise ``(1, KH, KW, C*m)``, fully connected ``(Cout, K)``).
Sources are the files of google-ai-edge/LiteRT ``tflite/kernels/`` named per function.

Convolution sums are taken with float64 matrix products: every product ``(w + w_off)(x + x_off)``
is an integer of magnitude <= 255*255 and a MobileNetV2 sum has < 2^20 terms, so every partial
sum is an integer below 2^53 and float64 represents it exactly (the order does not matter); the
total is then wrapped to int32 like the C++ int32 accumulator.
"""
from __future__ import annotations

import numpy as np

from .fixedpoint import (exp_on_negative_values, get_reciprocal, mbqm, rdbpot, round_half_away, srdhm,
                         wrap32)


def _requantize(acc, q, out_dtype):
    """``MultiplyByQuantizedMultiplier(acc, M[c], shift[c]) + zp_out``, clamped to the activation range."""
    out = mbqm(acc, q["multiplier"], q["shift"]) + q["output_offset"]
    return np.clip(out, q["act_min"], q["act_max"]).astype(out_dtype)


def _padded(x, q, kh, kw, oh, ow):
    """Input with the offset added and zero padding (a skipped tap == a tap on ``x = zp_in``)."""
    n, h, w, c = x.shape
    sh, sw = q["stride"]
    dh, dw = q["dilation"]
    top, left = q["pad"]
    bottom = max((oh - 1) * sh + (kh - 1) * dh + 1 - h - top, 0)
    right = max((ow - 1) * sw + (kw - 1) * dw + 1 - w - left, 0)
    xo = x.astype(np.float64) + q["input_offset"]
    return np.pad(xo, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _tap(xp, i, j, q, oh, ow):
    sh, sw = q["stride"]
    dh, dw = q["dilation"]
    return xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw, :]


def conv_accumulator(x, w, bias, q, out_shape):
    """The int32 accumulator of CONV_2D (before requantization), ``(N, OH, OW, Cout)`` int64 values."""
    _, oh, ow, cout = out_shape
    kh, kw = w.shape[1:3]
    xp = _padded(x, q, kh, kw, oh, ow)
    wf = w.astype(np.float64) + q["filter_offset"]
    acc = np.zeros((x.shape[0], oh, ow, cout), np.float64)
    for i in range(kh):
        for j in range(kw):
            acc += _tap(xp, i, j, q, oh, ow) @ wf[:, i, j, :].T       # (N,OH,OW,Cin) @ (Cin,Cout)
    return wrap32(acc.astype(np.int64) + (bias if bias is not None else 0))


def depthwise_accumulator(x, w, bias, q, out_shape):
    """The int32 accumulator of DEPTHWISE_CONV_2D, ``(N, OH, OW, C*m)`` int64 values."""
    _, oh, ow, cout = out_shape
    kh, kw = w.shape[1:3]
    m = q["depth_multiplier"]
    xp = _padded(np.repeat(x, m, axis=3) if m > 1 else x, q, kh, kw, oh, ow)
    wf = w.astype(np.float64) + q["filter_offset"]
    acc = np.zeros((x.shape[0], oh, ow, cout), np.float64)
    for i in range(kh):
        for j in range(kw):
            acc += _tap(xp, i, j, q, oh, ow) * wf[0, i, j, :]
    return wrap32(acc.astype(np.int64) + (bias if bias is not None else 0))


def fc_accumulator(x, w, bias, q):
    """The int32 accumulator of FULLY_CONNECTED, ``(B, Cout)`` int64 values (``B = x.size / K``)."""
    k = w.shape[1]
    xf = x.reshape(-1, k).astype(np.float64) + q["input_offset"]
    acc = xf @ (w.astype(np.float64) + q["filter_offset"]).T                 # (B, K) @ (K, Cout)
    return wrap32(acc.astype(np.int64) + (bias if bias is not None else 0))


def conv_2d(x, w, bias, q, out_shape, out_dtype):
    """CONV_2D. ``reference/integer_ops/conv.h`` ``ConvPerChannel`` (int8) and ``reference/conv.h``
    ``Conv`` (uint8, per tensor, ``filter_offset = -zp_w``)::

        acc[n,y,x,c] = bias[c] + sum_{i,j,k} (w[c,i,j,k] + w_off) * (in[n, y*s+i*d-pad, x*s+j*d-pad, k] + in_off)
        out = clamp(MBQM(acc, M[c], shift[c]) + zp_out, act_min, act_max)

    taps outside the image are skipped. ``x (N,H,W,Cin)``, ``w (Cout,KH,KW,Cin)`` -> ``(N,OH,OW,Cout)``.
    """
    return _requantize(conv_accumulator(x, w, bias, q, out_shape), q, out_dtype)


def depthwise_conv_2d(x, w, bias, q, out_shape, out_dtype):
    """DEPTHWISE_CONV_2D. ``reference/integer_ops/depthwise_conv.h`` ``DepthwiseConvPerChannel`` (int8)
    and ``reference/depthwiseconv_uint8.h`` ``DepthwiseConvBasicKernel<kAwayFromZero>::Run`` (uint8)::

        acc[n,y,x,c] = bias[c] + sum_{i,j} (w[0,i,j,c] + w_off) * (in[n, y*s+i*d-pad, x*s+j*d-pad, c // m] + in_off)

    requantized like ``conv_2d``. ``w (1,KH,KW,C*m)``.
    """
    return _requantize(depthwise_accumulator(x, w, bias, q, out_shape), q, out_dtype)


def fully_connected(x, w, bias, q, out_shape, out_dtype):
    """FULLY_CONNECTED. Since LiteRT 9213607 (TF >= 2.20) the reference kernels requantize in double:
    ``reference/integer_ops/fully_connected.h`` ``FullyConnectedPerChannel`` / ``FullyConnected`` (int8,
    the overloads taking scales) and ``reference/fully_connected.h`` ``FullyConnected`` (uint8)::

        acc[b,c] = bias[c] + sum_k (w[c,k] + w_off) * (x[b,k] + in_off)
        out = clamp((int32) std::round((double) acc * (double(s_in) * double(s_w[c]) / double(s_out))) + zp_out)

    (TFLite Micro and older TFLite use ``MBQM(acc, M, shift)`` here; the quant dict carries both.)
    """
    acc = fc_accumulator(x, w, bias, q)
    scaled = round_half_away(acc.astype(np.float64) * q["effective_scale"]).astype(np.int64)
    out = np.clip(scaled + q["output_offset"], q["act_min"], q["act_max"])
    return out.astype(out_dtype).reshape(out_shape)


def add(x1, x2, q, out_dtype):
    """ADD (same shapes). ``reference/integer_ops/add.h`` ``AddFunc`` (int8; ``reference/add.h`` for
    uint8 is the same arithmetic), parameters from ``add.cc`` ``Prepare`` (``left_shift = 20``)::

        a_i = MBQM((x_i + off_i) * 2^20, M_i, shift_i)           i = 1, 2
        out = clamp(MBQM(a_1 + a_2, M_out, shift_out) + zp_out, act_min, act_max)
    """
    ls = q["left_shift"]
    a1 = mbqm((x1.astype(np.int64) + q["input1_offset"]) << ls, q["input1_multiplier"], q["input1_shift"])
    a2 = mbqm((x2.astype(np.int64) + q["input2_offset"]) << ls, q["input2_multiplier"], q["input2_shift"])
    out = mbqm(wrap32(a1 + a2), q["output_multiplier"], q["output_shift"]) + q["output_offset"]
    return np.clip(out, q["act_min"], q["act_max"]).astype(out_dtype)


def mean(x, q, out_shape, out_dtype):
    """MEAN over H and W. ``reference/reduce.h`` ``QuantizedMeanOrSum`` (``compute_sum=false``) with the
    multiplier of ``reduce.cc`` ``PrepareMeanOrSum`` (``QuantizeMultiplier(s_in / s_out)``), 1/N folded in::

        k = min(floor(log2 N), 32, 31 + shift);  M' = (M << k) / N;  shift' = shift - k
        out = clamp(MBQM(sum(x) - zp_in * N, M', shift') + zp_out, dtype range)
    """
    s = x.astype(np.int64).sum(axis=tuple(q["axes"]))
    out = mbqm(wrap32(s - q["input_zero_point"] * q["num_elements"]), q["mean_multiplier"], q["mean_shift"])
    info = np.iinfo(out_dtype)
    return np.clip(out + q["output_zero_point"], info.min, info.max).astype(out_dtype).reshape(out_shape)


def average_pool_2d(x, q, out_shape, out_dtype):
    """AVERAGE_POOL_2D. ``reference/pooling.h`` ``AveragePool`` (uint8) and
    ``reference/integer_ops/pooling.h`` ``AveragePool`` (int8): the sum over the window's taps inside
    the image, divided by their count, halves away from zero::

        out = clamp(acc > 0 ? (acc + count/2) / count : (acc - count/2) / count)   (C division)
    """
    n, oh, ow, c = out_shape
    (fh, fw), (sh, sw), (top, left) = q["filter"], q["stride"], q["pad"]
    h, w = x.shape[1:3]
    if (oh, ow) == (1, 1) and (fh, fw) == (h, w) and (top, left) == (0, 0):   # global pooling: one window
        acc = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
        cnt = h * w
        out = np.where(acc > 0, (acc + cnt // 2) // cnt, -((cnt // 2 - acc) // cnt))
        return np.clip(out, q["act_min"], q["act_max"]).astype(out_dtype)
    out = np.empty((n, oh, ow, c), np.int64)
    for y in range(oh):
        y0, y1 = max(y * sh - top, 0), min(y * sh - top + fh, h)
        for xx in range(ow):
            x0, x1 = max(xx * sw - left, 0), min(xx * sw - left + fw, w)
            acc = x[:, y0:y1, x0:x1, :].astype(np.int64).sum(axis=(1, 2))
            cnt = (y1 - y0) * (x1 - x0)
            out[:, y, xx, :] = np.where(acc > 0, (acc + cnt // 2) // cnt, -((cnt // 2 - acc) // cnt))
    return np.clip(out, q["act_min"], q["act_max"]).astype(out_dtype)


def softmax(x, q, out_dtype):
    """SOFTMAX (last axis). ``reference/softmax.h`` ``Softmax<InputT, OutputT>`` (gemmlowp fixed point)
    with ``activations.cc`` ``SoftmaxPrepare`` (kReference): ``PreprocessSoftmaxScaling(beta, s_in, 5)``
    -> ``(M, left_shift)``, ``diff_min = -CalculateInputRadius(5, left_shift)``::

        d = x - max(x);  e = exp_on_negative_values(SRDHM(d * 2^left_shift, M))   (Q5.26 -> Q0.31)
        sum = sum_{d >= diff_min} RDBPOT(e, 12)                                   (Q12.19)
        out = RDBPOT(SRDHM(1/sum as Q0.31, e), num_bits_over_unit + 31 - 8) + dtype min, 0 where d < diff_min
    """
    xi = x.astype(np.int64)
    d = xi - xi.max(axis=-1, keepdims=True)
    valid = d >= q["diff_min"]
    rescaled = srdhm(wrap32(d << q["input_left_shift"]), q["input_multiplier"])
    e = exp_on_negative_values(np.where(valid, rescaled, 0), 5)
    sum_of_exps = wrap32(np.where(valid, rdbpot(e, 12), 0).sum(axis=-1, keepdims=True))
    scale, num_bits_over_unit = get_reciprocal(sum_of_exps, 12)
    info = np.iinfo(out_dtype)
    exponent = num_bits_over_unit + 31 - 8 * np.dtype(out_dtype).itemsize
    out = rdbpot(srdhm(scale, e), exponent) + info.min
    out = np.where(valid, np.clip(out, info.min, info.max), info.min)
    return out.astype(out_dtype)


def quantize(x, q, out_dtype):
    """QUANTIZE. float -> int: ``reference/quantize.h`` ``AffineQuantize``:
    ``clamp((int32) TfLiteRound(x / (float) s) + zp)`` in float32 (x86 turns a non-finite or
    out-of-int32 quotient into INT32_MIN). int -> int: ``reference/requantize.h`` ``Requantize`` with
    ``QuantizeMultiplier(s_in / s_out)``: ``clamp(MBQM(x - zp_in, M, shift) + zp_out)``.
    """
    info = np.iinfo(out_dtype)
    if np.issubdtype(x.dtype, np.floating):
        v = round_half_away(x.astype(np.float32) / np.float32(q["scale"]))
        ok = np.isfinite(v) & (v >= -2.0 ** 31) & (v < 2.0 ** 31)
        vi = np.where(ok, np.where(ok, v, 0).astype(np.int64), -(1 << 31))
        out = wrap32(vi + q["zero_point"])
    else:
        out = mbqm(x.astype(np.int64) - q["input_zero_point"], q["multiplier"], q["shift"]) + q["output_zero_point"]
    return np.clip(out, info.min, info.max).astype(out_dtype)


def dequantize(x, q):
    """DEQUANTIZE. ``reference/dequantize.h`` ``Dequantize``: ``(float)((double) s * (x - zp))``."""
    return (np.float64(q["scale"]) * (x.astype(np.int64) - q["zero_point"])).astype(np.float32)


def pad(x, q, out_dtype):
    """PAD. ``reference/pad.h`` ``PadImpl``; a quantized PAD without a value fills with ``zp_out``
    (``pad.cc`` ``EvalInt``)."""
    return np.pad(x, q["paddings"], constant_values=q["pad_value"]).astype(out_dtype)


def reshape(x, out_shape):
    """RESHAPE: the same bytes under the new shape (``reshape.cc``)."""
    return x.reshape(out_shape)

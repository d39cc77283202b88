"""``kernels="xnnpack"``: the arithmetic of TFLite's default CPU path (``OpResolverType.AUTO``).

With the default resolver TFLite hands CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, MEAN, PAD,
RESHAPE, QUANTIZE and DEQUANTIZE to the XNNPACK delegate; quantized SOFTMAX and AVERAGE_POOL_2D stay
with TFLite's optimized kernels. What differs from the reference kernels (``ops_ref``), per op
(sources: google/XNNPACK and google-ai-edge/LiteRT, read, not copied):

* CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: the same exact int32 accumulator, then XNNPACK's
  "fp32" requantization (``src/operators/convolution-nhwc.c`` ``init_requantization_scale_*``, the
  ``*-fp32-*`` GEMM / DWCONV microkernels): ``scale[c] = float(float(s_in * s_w[c]) / s_out)``
  (float32 arithmetic), ``out = clamp(rne(float(acc) * scale[c]) + zp_out)`` with round-to-nearest-even;
  the fused-activation clamp ``xnn_qs8_quantize``/``xnn_qu8_quantize`` (``src/xnnpack/requantization.h``):
  ``lrintf(clamp(f / s + zp))``, also round-to-nearest-even.
* ADD: ``src/microparams-init.c`` ``xnn_init_qs8_add_minmax_scalar_params`` (and ``qu8``): 20-bit
  multipliers ``lrintf(s_i / s_out * 2^shift)`` with ``shift = 20 - exponent(max(s_1, s_2) / s_out)``,
  ``out = clamp(((bias + x_1 * m_1 + x_2 * m_2) >> shift) + zp_out)``, ``bias = 2^(shift-1) - m_1 zp_1 - m_2 zp_2``
  (``src/qs8-vadd/*``).
* MEAN: ``src/operators/reduce-nd.c`` and ``xnn_init/update_qs8_reduce_scalar_params``: the int32 sum of
  the raw values, then ``out = rne(float(sum) * scale + zp')`` with ``scale = float(s_in / s_out) * float(1 / N)``
  and ``zp' = zp_out - float(N * zp_in) * scale`` (float32), ``src/reference/unary-elementwise.cc``.
* QUANTIZE float -> int: ``rne(x * float(1 / s)) + zp`` (XNNPACK's ``f32-qs8-vcvt``, a multiply by
  the reciprocal); DEQUANTIZE: ``float(x - zp) * s`` (equal to the reference's double product).
* SOFTMAX (TFLite ``optimized_ops::Softmax`` with ``PopulateSoftmaxLookupTable``, x86):
  ``table[255 - d] = expf(-s_in * beta * d)``, ``sum = float32 sum of table[x]``,
  ``p = table[x] * (1 / (sum * s_out))``; uint8: ``(int)(p + 0.5f)``, int8: ``std::round(p) - 128``.
* AVERAGE_POOL_2D (TFLite ``optimized_ops::AveragePool``): as the reference kernel.

The measured agreement with ai-edge-litert 2.3.0's AUTO path, op by op, is in the README (tests:
``tests/test_tflite_parity.py``).
"""
from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

from . import ops_ref
from .fixedpoint import round_half_away

_f32 = np.float32


def _libm_expf():
    """glibc's ``expf`` (what TFLite's softmax table calls) when it can be loaded, else float32(exp)."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        f = lib.expf
        f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
        return lambda v: np.float32(f(float(v)))
    except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
        return lambda v: np.float32(np.exp(np.float64(v)))


def rne(x):
    """Round to nearest, ties to even (``lrintf`` / ``cvtps2dq`` in the default rounding mode)."""
    return np.rint(x)


def requantize_fp32(acc, scale, zp_out, act_min, act_max, out_dtype):
    """XNNPACK's fp32 requantization: ``clamp(rne(float32(acc) * scale) + zp_out)``."""
    v = rne(acc.astype(_f32) * scale.astype(_f32))
    return np.clip(v.astype(np.int64) + zp_out, act_min, act_max).astype(out_dtype)


def activation_range(activation, scale, zp, dtype):
    """``xnn_qs8_quantize``/``xnn_qu8_quantize`` of the float activation bounds (0, 6 for ReLU6)."""
    info = np.iinfo(dtype)
    lo, hi = float(info.min), float(info.max)

    def q(f):
        return int(rne(np.clip(_f32(f) / _f32(scale) + _f32(zp), lo, hi)))
    bounds = {"NONE": (None, None), "RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
    f_lo, f_hi = bounds[activation]
    return (int(info.min) if f_lo is None else q(f_lo)), (int(info.max) if f_hi is None else q(f_hi))


def conv_scales(fm, op):
    """Per-channel float32 requantization scales ``float(s_in * s_w[c]) / s_out`` (float32)."""
    x, w, y = (fm.tensors[i] for i in (op.input_indices[0], op.input_indices[1], op.output_indices[0]))
    cout = y.shape[-1]
    sw = np.broadcast_to(w.scale.astype(_f32), (cout,))
    return (_f32(x.scale[0]) * sw) / _f32(y.scale[0])


def epilogue(fm, op) -> dict:
    """The fp32 requantization of a CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: scale and clamp."""
    out = fm.tensors[op.output_indices[0]]
    lo, hi = activation_range(op.options.get("activation", "NONE"), out.scale[0], int(out.zero_point[0]), out.dtype)
    return dict(scale=conv_scales(fm, op), act_min=lo, act_max=hi)


def add(x1, x2, p, out_dtype):
    """ADD with XNNPACK's 20-bit multipliers (``qs8-vadd`` / ``qu8-vadd``)."""
    acc = p["bias"] + x1.astype(np.int64) * p["a_multiplier"] + x2.astype(np.int64) * p["b_multiplier"]
    out = (acc >> p["shift"]) + p["output_zero_point"]
    return np.clip(out, p["act_min"], p["act_max"]).astype(out_dtype)


def add_params(fm, op) -> dict:
    a, b, y = (fm.tensors[i] for i in (op.input_indices[0], op.input_indices[1], op.output_indices[0]))
    sa, sb, so = _f32(a.scale[0]), _f32(b.scale[0]), _f32(y.scale[0])
    a_os, b_os = sa / so, sb / so
    max_os = max(abs(a_os), abs(b_os))
    exponent = int((np.array(max_os, _f32).view(np.uint32) >> 23)) - 127
    shift = 20 - exponent

    def mult(v):   # lrintf(v * 2^shift), the scaling done on the float's exponent bits (exact)
        return int(rne(np.float64(abs(v)) * 2.0 ** shift)) * (-1 if v < 0 else 1)
    ma, mb = mult(a_os), mult(b_os)
    za, zb = int(a.zero_point[0]), int(b.zero_point[0])
    lo, hi = activation_range(op.options.get("activation", "NONE"), so, int(y.zero_point[0]), y.dtype)
    return dict(a_multiplier=ma, b_multiplier=mb, shift=shift,
                bias=(1 << (shift - 1)) - ma * za - mb * zb, output_zero_point=int(y.zero_point[0]),
                act_min=lo, act_max=hi)


def mean(x, p, out_shape, out_dtype):
    """MEAN with XNNPACK's float32 conversion of the int32 sum."""
    s = x.astype(np.int64).sum(axis=tuple(p["axes"])).astype(_f32)
    v = rne(s * p["scale"] + p["zero_point"])
    info = np.iinfo(out_dtype)
    return np.clip(v, info.min, info.max).astype(out_dtype).reshape(out_shape)


def mean_params(fm, op) -> dict:
    x, y = fm.tensors[op.input_indices[0]], fm.tensors[op.output_indices[0]]
    n = op.quant["num_elements"]
    scale = (_f32(x.scale[0]) / _f32(y.scale[0])) * (_f32(1.0) / _f32(n))
    zp = _f32(y.zero_point[0]) - _f32(n * int(x.zero_point[0])) * scale
    return dict(axes=op.quant["axes"], scale=_f32(scale), zero_point=_f32(zp))


def quantize(x, q, out_dtype):
    """QUANTIZE float -> int8/uint8 (``f32-qs8-vcvt``: multiply by the float reciprocal, ties to even)."""
    info = np.iinfo(out_dtype)
    v = rne(x.astype(_f32) * (_f32(1.0) / _f32(q["scale"]))) + q["zero_point"]
    return np.clip(np.nan_to_num(v), info.min, info.max).astype(out_dtype)


def dequantize(x, q):
    return (_f32(x.astype(np.int64) - q["zero_point"]) * _f32(q["scale"])).astype(_f32)


def softmax_table(beta: float, s_in) -> np.ndarray:
    """``PopulateSoftmaxLookupTable``: ``table[255 - v] = expf(-s_in * beta * v)``, v = 0..255."""
    expf = _libm_expf()
    scale = -_f32(s_in) * _f32(beta)
    table = np.empty(256, _f32)
    for v in range(256):
        table[255 - v] = expf(_f32(scale * _f32(v)))
    return table


def softmax(x, p, out_dtype):
    """TFLite's optimized quantized SOFTMAX (float lookup table, x86)."""
    xi = x.astype(np.int64)
    idx = 255 - (xi.max(axis=-1, keepdims=True) - xi)
    e = p["table"][idx]
    sum_exp = np.zeros(x.shape[:-1] + (1,), _f32)
    for j in range(x.shape[-1]):            # sequential float32 sum, as the C++ loop
        sum_exp += e[..., j:j + 1]
    inv = _f32(1.0) / (sum_exp * _f32(p["scale"]))
    prob = e * inv
    if np.dtype(out_dtype) == np.uint8:
        q = (prob + _f32(0.5)).astype(np.int64) + p["zero_point"]
    else:
        q = round_half_away(prob).astype(np.int64) + p["zero_point"]
    info = np.iinfo(out_dtype)
    return np.clip(q, info.min, info.max).astype(out_dtype)


def bind(op, fm):
    """f(inputs, out_shape, out_dtype) for ``op`` with XNNPACK's (or TFLite's optimized) arithmetic."""
    name, q = op.name, op.quant
    out = fm.tensors[op.output_indices[0]]
    const = [None if i < 0 or i not in fm.constants else fm.constants[i] for i in op.input_indices]
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        scale = conv_scales(fm, op)
        lo, hi = activation_range(op.options.get("activation", "NONE"), out.scale[0], int(out.zero_point[0]),
                                  out.dtype)
        w, bias = const[1], (const[2] if len(const) > 2 else None)
        acc_fn = {"CONV_2D": lambda x, shape: ops_ref.conv_accumulator(x, w, bias, q, shape),
                  "DEPTHWISE_CONV_2D": lambda x, shape: ops_ref.depthwise_accumulator(x, w, bias, q, shape),
                  "FULLY_CONNECTED": lambda x, shape: ops_ref.fc_accumulator(x, w, bias, q).reshape(shape)}[name]
        zp = int(out.zero_point[0])
        return lambda a, shape, dtype: requantize_fp32(acc_fn(a[0], shape), scale, zp, lo, hi, dtype)
    if name == "ADD":
        p = add_params(fm, op)
        return lambda a, shape, dtype: add(a[0], a[1], p, dtype)
    if name == "MEAN":
        p = mean_params(fm, op)
        return lambda a, shape, dtype: mean(a[0], p, shape, dtype)
    if name == "SOFTMAX":
        x = fm.tensors[op.input_indices[0]]
        p = dict(table=softmax_table(q["beta"], x.scale[0]), scale=_f32(out.scale[0]),
                 zero_point=int(out.zero_point[0]))
        return lambda a, shape, dtype: softmax(a[0], p, dtype)
    if name == "QUANTIZE" and fm.tensors[op.input_indices[0]].dtype == np.float32:
        return lambda a, shape, dtype: quantize(a[0], q, dtype)
    if name == "DEQUANTIZE":
        return lambda a, shape, dtype: dequantize(a[0], q)
    if name == "AVERAGE_POOL_2D":
        return lambda a, shape, dtype: ops_ref.average_pool_2d(a[0], q, shape, dtype)
    if name == "PAD":
        return lambda a, shape, dtype: ops_ref.pad(a[0], q, dtype)
    if name == "RESHAPE":
        return lambda a, shape, dtype: ops_ref.reshape(a[0], shape)
    if name == "QUANTIZE":   # int8 <-> uint8: TFLite's Requantize (XNNPACK does not take it)
        return lambda a, shape, dtype: ops_ref.quantize(a[0], q, dtype)
    raise AssertionError(name)

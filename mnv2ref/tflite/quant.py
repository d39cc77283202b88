"""The integer parameters of each op, derived from the file's scales as TFLite's ``Prepare`` does.

``prepare(op, tensors, constants)`` returns the op's ``quant`` dict: what a porter copies into their
own code (multipliers and shifts, offsets, clamps, paddings). Sources, google-ai-edge/LiteRT
``tflite/kernels/``:

* conv / depthwise: ``kernel_util.cc`` ``PopulateConvolutionQuantizationParams``: per channel
  ``QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out))``; for uint8 input the
  reference kernels use the legacy per-tensor multiplier of ``GetQuantizedConvolutionMultipler``:
  ``double(float(s_in * s_w)) / double(s_out)`` (the product rounded to float32 first).
* padding: ``kernels/padding.h`` ``ComputePaddingHeightWidth``: ``total = max((out-1)*s + (k-1)*d + 1 - in, 0)``,
  top/left ``= total / 2``.
* fused activation: ``kernel_util.cc`` ``CalculateActivationRangeQuantized``: ReLU6 ->
  ``[max(qmin, zp + round(0/s)), min(qmax, zp + round(6/s))]``, the quotient a float32, ``std::round``.
* fully connected: ``fully_connected.cc``: the reference kernels take ``double(s_in)*double(s_w[c])/double(s_out)``
  (``effective_scale``); ``multiplier``/``shift`` are the integer equivalents the optimized path and
  TFLite Micro use.
* add: ``add.cc`` ``Prepare``: ``left_shift = 20``, ``twice_max = 2 * max(s1, s2)`` (float32),
  ``M_i = QM(s_i / twice_max)``, ``M_out = QM(twice_max / (2^20 * s_out))``.
* mean: ``reduce.cc`` ``PrepareMeanOrSum`` + ``reference/reduce.h`` ``QuantizedMeanOrSum``.
* softmax: ``activations.cc`` ``SoftmaxPrepare`` (kReference), ``quantization_util.cc``
  ``PreprocessSoftmaxScaling`` and ``CalculateInputRadius``.
* quantize: ``quantize.cc`` ``Prepare`` (requantize: ``QM(s_in / s_out)``).
"""
from __future__ import annotations

import math

import numpy as np

from .fixedpoint import quantize_multiplier, round_half_away

QUANT_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))


class OpError(ValueError):
    """A ValueError about one op; ``graph`` adds the file name, op name and index."""


def activation_range(activation: str, scale, zero_point: int, dtype) -> tuple:
    """``CalculateActivationRangeQuantized``: the clamp of a fused activation on the output tensor."""
    info = np.iinfo(dtype)
    qmin, qmax = int(info.min), int(info.max)

    def q(f):
        return int(zero_point) + int(round_half_away(np.float32(f) / np.float32(scale)))
    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, q(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    raise OpError(f"fused activation {activation} is not supported on a quantized op")


def same_padding(in_size: int, out_size: int, k: int, s: int, d: int) -> int:
    eff = (k - 1) * d + 1
    return max((out_size - 1) * s + eff - in_size, 0) // 2


def _per_tensor(t, what: str):
    if t.scale.size != 1 or t.zero_point.size != 1:
        raise OpError(f"{what} tensor {t.name!r} must be quantized per tensor (has {t.scale.size} scales)")
    return np.float32(t.scale[0]), int(t.zero_point[0])


def _activation_tensor(t, what: str):
    if t.dtype not in QUANT_DTYPES:
        raise OpError(f"{what} tensor {t.name!r} is {t.dtype}; only int8/uint8 activations are supported "
                      "(16x8 and float ops are not)")
    return _per_tensor(t, what)


def _conv_like(op, tensors, depthwise: bool) -> dict:
    x, w, y = (tensors[op.inputs[0]], tensors[op.inputs[1]], tensors[op.outputs[0]])
    s_in, zp_in = _activation_tensor(x, "input")
    s_out, zp_out = _activation_tensor(y, "output")
    cout = w.shape[3] if depthwise else w.shape[0]
    if w.dtype not in QUANT_DTYPES or w.scale.size not in (1, cout):
        raise OpError(f"filter {w.name!r} must be int8/uint8 with 1 or {cout} scales "
                      f"(has {w.dtype}, {w.scale.size} scales)")
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and tensors[op.inputs[2]].dtype != np.int32:
        raise OpError(f"bias {tensors[op.inputs[2]].name!r} must be int32")
    if w.scale.size > 1 and np.any(w.zero_point != 0):
        raise OpError(f"per-channel filter {w.name!r} has non-zero zero points")
    o = op.options
    if x.dtype == np.uint8:   # legacy per-tensor path: float32 product, then double
        m, sh = quantize_multiplier(float(np.float32(s_in * np.float32(w.scale[0]))) / float(s_out))
        mult, shift = np.full(cout, m, np.int64), np.full(cout, sh, np.int64)
    else:
        scales = np.broadcast_to(w.scale, (cout,))
        pairs = [quantize_multiplier(float(s_in) * float(sw) / float(s_out)) for sw in scales]
        mult = np.array([p[0] for p in pairs], np.int64)
        shift = np.array([p[1] for p in pairs], np.int64)
    kh, kw = w.shape[1:3]
    (h, wd), (oh, ow) = x.shape[1:3], y.shape[1:3]
    pad = ((same_padding(h, oh, kh, o["stride_h"], o["dilation_h"]),
            same_padding(wd, ow, kw, o["stride_w"], o["dilation_w"])) if o["padding"] == "SAME" else (0, 0))
    act_min, act_max = activation_range(o["activation"], s_out, zp_out, y.dtype)
    q = dict(input_offset=-zp_in, filter_offset=-int(w.zero_point[0]) if w.scale.size == 1 else 0,
             output_offset=zp_out, multiplier=mult, shift=shift, act_min=act_min, act_max=act_max,
             stride=(o["stride_h"], o["stride_w"]), dilation=(o["dilation_h"], o["dilation_w"]), pad=pad)
    if depthwise:
        q["depth_multiplier"] = cout // x.shape[3]
    return q


def _fully_connected(op, tensors) -> dict:
    x, w, y = (tensors[op.inputs[0]], tensors[op.inputs[1]], tensors[op.outputs[0]])
    s_in, zp_in = _activation_tensor(x, "input")
    s_out, zp_out = _activation_tensor(y, "output")
    cout = w.shape[0]
    if w.dtype not in QUANT_DTYPES or w.scale.size not in (1, cout):
        raise OpError(f"weights {w.name!r} must be int8/uint8 with 1 or {cout} scales")
    if op.options.get("weights_format", 0) != 0:
        raise OpError("shuffled FULLY_CONNECTED weights are not supported")
    scales = np.broadcast_to(w.scale, (cout,))
    eff = np.array([float(s_in) * float(sw) / float(s_out) for sw in scales], np.float64)
    if w.scale.size == 1:   # per tensor: the legacy multiplier (float32 product)
        m, sh = quantize_multiplier(float(np.float32(s_in * np.float32(w.scale[0]))) / float(s_out))
        mult, shift = np.full(cout, m, np.int64), np.full(cout, sh, np.int64)
    else:
        pairs = [quantize_multiplier(e) for e in eff]
        mult = np.array([p[0] for p in pairs], np.int64)
        shift = np.array([p[1] for p in pairs], np.int64)
    act_min, act_max = activation_range(op.options.get("activation", "NONE"), s_out, zp_out, y.dtype)
    return dict(input_offset=-zp_in, filter_offset=-int(w.zero_point[0]) if w.scale.size == 1 else 0,
                output_offset=zp_out, effective_scale=eff, multiplier=mult, shift=shift,
                act_min=act_min, act_max=act_max)


def _add(op, tensors) -> dict:
    a, b, y = (tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    s1, zp1 = _activation_tensor(a, "input")
    s2, zp2 = _activation_tensor(b, "input")
    s_out, zp_out = _activation_tensor(y, "output")
    if a.shape != b.shape:
        raise OpError(f"broadcasting ADD ({a.shape} + {b.shape}) is not supported")
    left_shift = 20
    twice_max = float(np.float32(2) * max(s1, s2))
    m1, sh1 = quantize_multiplier(float(s1) / twice_max)
    m2, sh2 = quantize_multiplier(float(s2) / twice_max)
    mo, sho = quantize_multiplier(twice_max / float(np.float32(1 << left_shift) * s_out))
    act_min, act_max = activation_range(op.options.get("activation", "NONE"), s_out, zp_out, y.dtype)
    return dict(left_shift=left_shift, input1_offset=-zp1, input2_offset=-zp2, output_offset=zp_out,
                input1_multiplier=m1, input1_shift=sh1, input2_multiplier=m2, input2_shift=sh2,
                output_multiplier=mo, output_shift=sho, act_min=act_min, act_max=act_max)


def _mean(op, tensors, constants) -> dict:
    x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
    s_in, zp_in = _activation_tensor(x, "input")
    s_out, zp_out = _activation_tensor(y, "output")
    if op.inputs[1] not in constants:
        raise OpError("MEAN axes must be a constant tensor")
    axes = sorted({int(a) % len(x.shape) for a in np.ravel(constants[op.inputs[1]])})
    if axes != [1, 2]:
        raise OpError(f"MEAN over axes {axes} is not supported (only over H and W, axes [1, 2])")
    n = int(np.prod([x.shape[a] for a in axes]))
    m, shift = quantize_multiplier(float(s_in) / float(s_out))
    k = min(n.bit_length() - 1, 32, 31 + shift)
    return dict(axes=axes, num_elements=n, input_zero_point=zp_in, output_zero_point=zp_out,
                multiplier=m, shift=shift, mean_multiplier=(m << k) // n, mean_shift=shift - k)


def _average_pool(op, tensors) -> dict:
    x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
    s_in, zp_in = _activation_tensor(x, "input")
    s_out, zp_out = _activation_tensor(y, "output")
    if (s_in, zp_in) != (s_out, zp_out):
        raise OpError("quantized AVERAGE_POOL_2D needs the same scale and zero point on input and output")
    o = op.options
    (h, w), (oh, ow) = x.shape[1:3], y.shape[1:3]
    pad = ((same_padding(h, oh, o["filter_h"], o["stride_h"], 1),
            same_padding(w, ow, o["filter_w"], o["stride_w"], 1)) if o["padding"] == "SAME" else (0, 0))
    act_min, act_max = activation_range(o["activation"], s_out, zp_out, y.dtype)
    return dict(filter=(o["filter_h"], o["filter_w"]), stride=(o["stride_h"], o["stride_w"]), pad=pad,
                act_min=act_min, act_max=act_max)


def _softmax(op, tensors) -> dict:
    x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
    s_in, _ = _activation_tensor(x, "input")
    _activation_tensor(y, "output")
    beta = op.options.get("beta", 1.0)
    real = min(float(beta) * float(s_in) * float(1 << (31 - 5)), float((1 << 31) - 1))
    m, left_shift = quantize_multiplier(real)
    if left_shift < 0:
        raise OpError(f"softmax input multiplier {real} < 1 (beta * s_in too small)")
    radius = math.floor(1.0 * ((1 << 5) - 1) * float(1 << (31 - 5)) / float(1 << left_shift))
    return dict(beta=float(beta), input_multiplier=m, input_left_shift=left_shift, diff_min=-int(radius))


def _quantize(op, tensors) -> dict:
    x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
    s_out, zp_out = _activation_tensor(y, "output")
    if x.dtype == np.float32:
        return dict(scale=s_out, zero_point=zp_out)
    s_in, zp_in = _activation_tensor(x, "input")
    m, shift = quantize_multiplier(float(s_in) / float(s_out))
    return dict(input_zero_point=zp_in, output_zero_point=zp_out, multiplier=m, shift=shift)


def _dequantize(op, tensors) -> dict:
    x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
    if y.dtype != np.float32:
        raise OpError(f"DEQUANTIZE to {y.dtype} is not supported (only to float32)")
    s, zp = _activation_tensor(x, "input")
    return dict(scale=s, zero_point=zp)


def _pad(op, tensors, constants) -> dict:
    x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
    _activation_tensor(x, "input")
    _, zp_out = _activation_tensor(y, "output")
    if op.inputs[1] not in constants:
        raise OpError("PAD paddings must be a constant tensor")
    p = np.asarray(constants[op.inputs[1]], np.int64).reshape(-1, 2)
    if p[0].any():
        raise OpError("PAD along the batch axis is not supported")
    value = zp_out
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = int(np.ravel(constants[op.inputs[2]])[0])
    return dict(paddings=tuple(map(tuple, p.tolist())), pad_value=value)


def prepare(op, tensors, constants) -> dict:
    """The ``quant`` dict of ``op`` (a ``reader.RawOp``); ``OpError`` if its quantization is unsupported."""
    name = op.name
    if name == "CONV_2D":
        return _conv_like(op, tensors, depthwise=False)
    if name == "DEPTHWISE_CONV_2D":
        return _conv_like(op, tensors, depthwise=True)
    if name == "FULLY_CONNECTED":
        return _fully_connected(op, tensors)
    if name == "ADD":
        return _add(op, tensors)
    if name == "MEAN":
        return _mean(op, tensors, constants)
    if name == "AVERAGE_POOL_2D":
        return _average_pool(op, tensors)
    if name == "SOFTMAX":
        return _softmax(op, tensors)
    if name == "QUANTIZE":
        return _quantize(op, tensors)
    if name == "DEQUANTIZE":
        return _dequantize(op, tensors)
    if name == "PAD":
        return _pad(op, tensors, constants)
    if name == "RESHAPE":
        return {}
    raise OpError("op is not supported")

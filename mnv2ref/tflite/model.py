"""``QuantizedModel``: a TFLite int8/uint8 MobileNetV2 run with NumPy/Numba, tensor by tensor.

    model = mnv2ref.load_tflite("mobilenet_v2_1.0_224_quant.tflite")     # kernels="reference"
    y = model.predict(x)          # x: (N, H, W, 3) in the input tensor's dtype, like set_tensor
    t = model.trace(x)            # OrderedDict {TFLite tensor name: array}, input first, graph order
    model.tensors[name].scale, model.ops[3].quant["multiplier"]

``kernels``:

* ``"reference"`` (default): TFLite's reference kernels (``OpResolverType.BUILTIN_REF``), bit for bit:
  the NumPy arithmetic of ``ops_ref`` with Numba kernels (``kernels_int8``) for CONV_2D,
  DEPTHWISE_CONV_2D, FULLY_CONNECTED and ADD, equal to it element for element.
* ``"numpy"``: the same arithmetic with NumPy only (the readable oracle; slower).
* ``"xnnpack"``: the arithmetic of TFLite's default CPU path (``OpResolverType.AUTO``, XNNPACK):
  fp32 requantization with round-to-nearest-even (``xnnpack``; the convolutions' accumulators
  from the same Numba kernels).

``predict`` drops each tensor after its last use; ``trace`` keeps them all.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from . import graph, ops_ref, reader

KERNELS = ("reference", "numpy", "xnnpack")


class QuantizedModel:
    """A checked TFLite MobileNetV2 (see the module docstring). Build it with ``mnv2ref.load_tflite``."""

    def __init__(self, path, kernels: str = "reference"):
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")
        self.path = os.fspath(path)
        self.kernels = kernels
        self._fm = reader.read(self.path)
        self.ops = graph.build_plan(self._fm)
        names = [t.name for t in self._fm.tensors]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"{self.path}: tensor name {dup!r} is used twice; tensors are keyed by name")
        self.tensors = {t.name: t for t in self._fm.tensors}
        self.inputs = [self._fm.tensors[i] for i in self._fm.inputs]
        self.outputs = [self._fm.tensors[i] for i in self._fm.outputs]
        want = _wants_centred(self.ops, self._fm) if kernels != "numpy" else set()
        self._steps = [_bind(kernels, op, self._fm, op.output_indices[0] in want) for op in self.ops]
        last = {}
        for k, op in enumerate(self.ops):
            for i in op.input_indices:
                last[i] = k
        self._free_after = [[i for i in op.input_indices if last.get(i) == k and i not in self._fm.constants
                             and i not in self._fm.outputs] for k, op in enumerate(self.ops)]

    def __repr__(self):
        i, o = self.inputs[0], self.outputs[0]
        return (f"QuantizedModel({os.path.basename(self.path)!r}, kernels={self.kernels!r}: "
                f"{i.dtype} {i.shape} -> {o.dtype} {o.shape}, {len(self.ops)} ops)")

    def _check_input(self, x) -> np.ndarray:
        t = self.inputs[0]
        x = np.asarray(x)
        want = tuple(t.shape[1:])
        if x.dtype != t.dtype or x.ndim != len(t.shape) or tuple(x.shape[1:]) != want or x.shape[0] < 1:
            raise ValueError(f"{self.path}: input tensor {t.name!r} takes {t.dtype} of shape (N, "
                             f"{', '.join(map(str, want))}) with N >= 1; got {x.dtype} of shape {x.shape}")
        return np.ascontiguousarray(x)

    def _run(self, x, keep: bool):
        x = self._check_input(x)
        n = x.shape[0]
        fm = self._fm
        values, centred = {fm.inputs[0]: x}, {}
        trace = OrderedDict([(self.inputs[0].name, x)]) if keep else None
        for op, step, done in zip(self.ops, self._steps, self._free_after):
            args = [values[i] if i in values else graph.constant(fm, i) for i in op.input_indices]
            out = fm.tensors[op.output_indices[0]]
            y, yc = step(args, [centred.get(i) for i in op.input_indices[:1]], graph.batched_shape(out.shape, n),
                         out.dtype)
            values[op.output_indices[0]] = y
            if yc is not None:
                centred[op.output_indices[0]] = yc
            if keep:
                trace[op.outputs[0]] = y
            else:
                for i in done:
                    values.pop(i, None)
                    centred.pop(i, None)
        return values[fm.outputs[0]], trace

    def predict(self, x) -> np.ndarray:
        """Output tensor (in the output dtype) for ``x`` batched in the input dtype and layout."""
        return self._run(x, keep=False)[0]

    def trace(self, x) -> "OrderedDict[str, np.ndarray]":
        """Every tensor the graph computes (and the input), keyed by TFLite tensor name, in graph order."""
        return self._run(x, keep=True)[1]


def _simple(op, a, shape, dtype):
    """The ops without weights, in NumPy (``ops_ref``) for every kernels mode but "xnnpack"."""
    q, name = op.quant, op.name
    if name == "ADD":
        return ops_ref.add(a[0], a[1], q, dtype)
    if name == "MEAN":
        return ops_ref.mean(a[0], q, shape, dtype)
    if name == "AVERAGE_POOL_2D":
        return ops_ref.average_pool_2d(a[0], q, shape, dtype)
    if name == "SOFTMAX":
        return ops_ref.softmax(a[0], q, dtype)
    if name == "QUANTIZE":
        return ops_ref.quantize(a[0], q, dtype)
    if name == "DEQUANTIZE":
        return ops_ref.dequantize(a[0], q)
    if name == "PAD":
        return ops_ref.pad(a[0], q, dtype)
    if name == "RESHAPE":
        return ops_ref.reshape(a[0], shape)
    raise AssertionError(name)  # graph.check_mobilenet_v2 let an unsupported op through


_WEIGHTED = {"CONV_2D": ops_ref.conv_2d, "DEPTHWISE_CONV_2D": ops_ref.depthwise_conv_2d,
             "FULLY_CONNECTED": ops_ref.fully_connected}


def _bind(kernels: str, op, fm, centred: bool):
    """step(inputs, centred_inputs, out_shape, out_dtype) -> (y, y_centred or None) for one op, its
    weights bound (and packed) once. ``centred``: also return ``float32(y - zp)`` (for a Numba conv)."""
    if kernels == "xnnpack":
        from . import xnnpack
        if op.name in _WEIGHTED:   # Numba accumulators, XNNPACK's epilogue
            from . import kernels_int8
            w = graph.constant(fm, op.input_indices[1])
            bias = graph.constant(fm, op.input_indices[2]) if len(op.input_indices) > 2 else None
            k = kernels_int8.bind(op, w, bias, fm.tensors[op.input_indices[0]].dtype, xnnpack.epilogue(fm, op))
            return lambda a, c, shape, dtype: k.run(a[0], c[0], shape, dtype, centred)
        f = xnnpack.bind(op, fm)
        return lambda a, c, shape, dtype: (f(a, shape, dtype), None)
    fast = kernels == "reference" and op.name in kernels_fast_ops()
    if not fast and op.name not in _WEIGHTED:
        return lambda a, c, shape, dtype: (_simple(op, a, shape, dtype), None)
    w = graph.constant(fm, op.input_indices[1]) if op.name in _WEIGHTED else None
    bias = graph.constant(fm, op.input_indices[2]) if op.name in _WEIGHTED and len(op.input_indices) > 2 else None
    if not fast:
        f = _WEIGHTED[op.name]
        return lambda a, c, shape, dtype: (f(a[0], w, bias, op.quant, shape, dtype), None)
    from . import kernels_int8
    k = kernels_int8.bind(op, w, bias, fm.tensors[op.input_indices[0]].dtype)
    if op.name == "ADD":
        return lambda a, c, shape, dtype: k.run(a[0], a[1], dtype, centred)
    return lambda a, c, shape, dtype: k.run(a[0], c[0], shape, dtype, centred)


def kernels_fast_ops():
    return ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD")


def _wants_centred(ops, fm) -> set:
    """Tensors (indices) read by a CONV_2D other than 1x1, whose Numba kernel (the float32 ``conv3x3``)
    takes ``float32(x - zp)``: their producers emit that copy too. (1x1 and depthwise convolutions read
    the int8 tensor; in MobileNetV2 only the stem is 3x3, and it reads the model input.)"""
    return {op.input_indices[0] for op in ops
            if op.name == "CONV_2D" and fm.tensors[op.input_indices[1]].shape[1:3] != (1, 1)}

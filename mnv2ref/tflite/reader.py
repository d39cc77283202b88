"""Read a ``.tflite`` flatbuffer into plain dataclasses (no TFLite runtime).

The schema is ``tflite/schema/schema.fbs`` of LiteRT; the generated Python classes come from the
``tflite`` package (optional extra ``mnv2ref[tflite]``, over ``flatbuffers``). Only subgraph 0 is
read (a converter-made MobileNetV2 has one). What comes out:

* ``TensorInfo`` per tensor: ``name, index, shape, dtype, scale, zero_point, quantized_dimension``
  (scale/zero_point are arrays: one entry per tensor, or one per channel along
  ``quantized_dimension``; empty arrays for float tensors).
* ``RawOp`` per operator: its builtin name (``"CONV_2D"``), input/output tensor indices (-1 = the
  optional input is absent) and its options as a dict (``stride_h, stride_w, padding, activation,
  ...`` with TFLite's enum names as strings).
* ``FlatModel.constants``: ``{tensor index: ndarray}`` for every tensor with a buffer.

Errors: ``ValueError`` naming the file (not a TFLite flatbuffer, damaged, several subgraphs,
unknown tensor type). The ``tflite`` package missing is an ``ImportError`` telling what to install.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

# TFLite TensorType enum (schema.fbs) -> NumPy dtype, for the types a quantized MobileNetV2 uses.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16,
           9: np.int8}
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH",
               5: "SIGN_BIT", 6: "SIGMOID"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the graph: shape as in the file (batch 1), quantization as stored."""
    name: str
    index: int
    shape: tuple
    dtype: np.dtype
    scale: np.ndarray = field(repr=False)
    zero_point: np.ndarray = field(repr=False)
    quantized_dimension: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class RawOp:
    index: int
    name: str
    inputs: list
    outputs: list
    options: dict
    version: int = 1


@dataclass
class FlatModel:
    path: str
    tensors: list
    ops: list
    inputs: list
    outputs: list
    constants: dict
    description: str = ""
    version: int = 0


def _tflite_module():
    try:
        import tflite  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading .tflite files needs the optional extra: pip install 'mnv2ref[tflite]' "
                          "(the 'tflite' and 'flatbuffers' packages)") from e
    return tflite


def _opcode_names(tfl) -> dict:
    return {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}


def _options(tfl, op, opname: str) -> dict:
    """The builtin options of one operator as a plain dict (only the fields MobileNetV2 ops use)."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    classes = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
               "ADD": "AddOptions", "MEAN": "ReducerOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
               "FULLY_CONNECTED": "FullyConnectedOptions", "RESHAPE": "ReshapeOptions",
               "SOFTMAX": "SoftmaxOptions", "PAD": "PadOptions"}
    if opname not in classes:
        return {}
    o = getattr(tfl, classes[opname])()
    o.Init(table.Bytes, table.Pos)
    d = {}
    if opname in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"):
        d.update(stride_h=o.StrideH(), stride_w=o.StrideW(), padding=_PADDING.get(o.Padding(), o.Padding()))
    if opname in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        d.update(dilation_h=o.DilationHFactor(), dilation_w=o.DilationWFactor())
    if opname == "DEPTHWISE_CONV_2D":
        d["depth_multiplier"] = o.DepthMultiplier()
    if opname == "AVERAGE_POOL_2D":
        d.update(filter_h=o.FilterHeight(), filter_w=o.FilterWidth())
    if opname in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED"):
        d["activation"] = _ACTIVATION.get(o.FusedActivationFunction(), o.FusedActivationFunction())
    if opname == "FULLY_CONNECTED":
        d.update(keep_num_dims=bool(o.KeepNumDims()), weights_format=o.WeightsFormat())
    if opname == "MEAN":
        d["keep_dims"] = bool(o.KeepDims())
    if opname == "SOFTMAX":
        d["beta"] = float(o.Beta())
    if opname == "RESHAPE" and o.NewShapeLength():
        d["new_shape"] = tuple(int(v) for v in o.NewShapeAsNumpy())
    return d


def _array(x, dtype) -> np.ndarray:
    return np.asarray(x if not isinstance(x, int) else [], dtype=dtype)


def read(path) -> FlatModel:
    """Parse ``path`` (a ``.tflite`` file) into a ``FlatModel``; ``ValueError`` if it is not one."""
    tfl = _tflite_module()
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except IsADirectoryError as e:
        raise OSError(f"{path}: is a directory, not a .tflite file") from e
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite flatbuffer (no 'TFL3' file identifier at bytes 4..8)")
    try:
        return _parse(tfl, path, buf)
    except ValueError:
        raise
    except Exception as e:  # flatbuffers raises struct.error/IndexError/... on damaged files
        raise ValueError(f"{path}: damaged TFLite flatbuffer ({type(e).__name__}: {e})") from e


def _parse(tfl, path: str, buf: bytes) -> FlatModel:
    m = tfl.Model.GetRootAsModel(buf, 0)
    if m.SubgraphsLength() != 1:
        raise ValueError(f"{path}: {m.SubgraphsLength()} subgraphs; a converted MobileNetV2 has exactly one")
    g = m.Subgraphs(0)
    names = _opcode_names(tfl)
    tensors, constants = [], {}
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        if t.Type() not in _DTYPES:
            raise ValueError(f"{path}: tensor {i} ({t.Name().decode(errors='replace')!r}) has TFLite type "
                             f"{t.Type()}, not one of float32/int32/uint8/int8/int16/int64")
        dtype = np.dtype(_DTYPES[t.Type()])
        q = t.Quantization()
        scale = _array(q.ScaleAsNumpy(), np.float32) if q is not None and q.ScaleLength() else np.zeros(0, np.float32)
        zp = _array(q.ZeroPointAsNumpy(), np.int64) if q is not None and q.ZeroPointLength() else np.zeros(0, np.int64)
        qdim = int(q.QuantizedDimension()) if q is not None else 0
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        tensors.append(TensorInfo(t.Name().decode(errors="replace"), i, shape, dtype, scale, zp, qdim))
        b = m.Buffers(t.Buffer()) if t.Buffer() < m.BuffersLength() else None
        if b is None:
            continue
        if b.Offset() > 1:  # large models keep buffers after the flatbuffer (offset, size)
            raw = buf[b.Offset():b.Offset() + b.Size()]
        elif b.DataLength():
            raw = b.DataAsNumpy().tobytes()
        else:
            continue
        n = int(np.prod(shape)) if shape else 1
        if len(raw) != n * dtype.itemsize:
            raise ValueError(f"{path}: tensor {i} ({tensors[-1].name!r}) has {len(raw)} bytes of data, "
                             f"shape {shape} {dtype} needs {n * dtype.itemsize}")
        constants[i] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        oc = m.OperatorCodes(op.OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            name = "CUSTOM:" + (oc.CustomCode() or b"").decode(errors="replace")
        ins = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else []
        ops.append(RawOp(i, name, ins, outs, _options(tfl, op, name), oc.Version()))
    desc = m.Description()
    return FlatModel(path, tensors, ops, [int(v) for v in g.InputsAsNumpy()],
                     [int(v) for v in g.OutputsAsNumpy()], constants,
                     desc.decode(errors="replace") if desc else "", m.Version())

"""Check that a ``FlatModel`` is a MobileNetV2 this engine runs, and build its execution plan.

A plan is the file's operator list in order (TFLite's converter writes operators topologically
sorted), each as an ``OpInfo`` (public: name, tensor names, options, the derived ``quant`` dict)
plus what the engine needs to run it (tensor indices, constants). MobileNetV2 is recognised by its
structure, not by names (which change with every converter): 17 3x3 DEPTHWISE_CONV_2D, 10
residual ADDs, a 3x3 stride-2 CONV_2D stem, one input and one output, nothing but the supported ops.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .quant import OpError, prepare

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "MEAN", "AVERAGE_POOL_2D",
                 "FULLY_CONNECTED", "RESHAPE", "SOFTMAX", "QUANTIZE", "DEQUANTIZE")


@dataclass
class OpInfo:
    """One operator of the graph, as a porter reads it (see ``QuantizedModel.ops``)."""
    index: int
    name: str
    inputs: list
    outputs: list
    options: dict
    quant: dict = field(repr=False)
    input_indices: list = field(default_factory=list, repr=False)
    output_indices: list = field(default_factory=list, repr=False)


def _fail(path, op, msg):
    return ValueError(f"{path}: op {op.index} ({op.name}): {msg}")


def check_mobilenet_v2(fm) -> None:
    """Raise ``ValueError`` naming the file and op unless ``fm`` is a supported MobileNetV2 graph."""
    path = fm.path
    for op in fm.ops:
        if op.name not in SUPPORTED_OPS:
            raise _fail(path, op, f"not supported (supported ops: {', '.join(SUPPORTED_OPS)})")
    counts = Counter(op.name for op in fm.ops)
    if len(fm.inputs) != 1 or len(fm.outputs) != 1:
        raise ValueError(f"{path}: {len(fm.inputs)} inputs and {len(fm.outputs)} outputs; "
                         "MobileNetV2 has one of each")
    dws = [op for op in fm.ops if op.name == "DEPTHWISE_CONV_2D"]
    if counts["DEPTHWISE_CONV_2D"] != 17 or counts["ADD"] != 10:
        raise ValueError(f"{path}: not a MobileNetV2 graph: {counts['DEPTHWISE_CONV_2D']} DEPTHWISE_CONV_2D "
                         f"(17 expected) and {counts['ADD']} ADD (10 expected); ops: {dict(counts)}")
    for op in dws:
        k = fm.tensors[op.inputs[1]].shape
        if len(k) != 4 or k[1:3] != (3, 3):
            raise _fail(path, op, f"depthwise filter of shape {k}; MobileNetV2's are 3x3")
    stem = next(op for op in fm.ops if op.name not in ("QUANTIZE", "PAD"))
    ks = fm.tensors[stem.inputs[1]].shape if stem.name == "CONV_2D" else None
    if stem.name != "CONV_2D" or ks[1:3] != (3, 3) or stem.options.get("stride_h") != 2:
        raise _fail(path, stem, "not a MobileNetV2 graph: the first compute op must be a 3x3 stride-2 CONV_2D")
    for op in fm.ops:
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            o = op.options
            if (o["dilation_h"], o["dilation_w"]) != (1, 1):
                raise _fail(path, op, "dilated convolutions are not supported")


def build_plan(fm) -> list:
    """``OpInfo`` per operator with its ``quant`` dict; errors name the file, op and index."""
    check_mobilenet_v2(fm)
    tensors = fm.tensors
    produced = set(fm.inputs) | set(fm.constants)
    plan = []
    for op in fm.ops:
        for i in op.inputs:
            if i >= 0 and i not in produced:
                raise _fail(fm.path, op, f"input tensor {i} ({tensors[i].name!r}) is computed later "
                                         "(operators are not in topological order)")
        try:
            q = prepare(op, tensors, fm.constants)
        except OpError as e:
            raise _fail(fm.path, op, str(e)) from None
        for i in op.inputs[1:]:
            if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and i >= 0 and i not in fm.constants:
                raise _fail(fm.path, op, f"weights/bias tensor {tensors[i].name!r} is not a constant")
        produced.update(op.outputs)
        plan.append(OpInfo(op.index, op.name, [tensors[i].name if i >= 0 else None for i in op.inputs],
                           [tensors[i].name for i in op.outputs], dict(op.options), q,
                           list(op.inputs), list(op.outputs)))
    out = fm.outputs[0]
    if out not in produced:
        raise ValueError(f"{fm.path}: output tensor {tensors[out].name!r} is not computed by any op")
    return plan


def batched_shape(shape: tuple, n: int) -> tuple:
    """A tensor's shape with its batch (leading) dimension set to ``n``."""
    return (n,) + tuple(shape[1:]) if shape else shape


def constant(fm, i):
    return None if i < 0 else np.asarray(fm.constants[i])

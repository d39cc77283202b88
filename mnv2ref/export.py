"""Weights as a porter needs them: batch-norm folded (or kept apart), HWIO or OIHW, plus a manifest of the graph.

``export(raw, ...)`` returns ``(arrays, manifest)``: ``arrays`` keyed
``"<Keras layer>/<array>"`` (``Conv1/kernel``, ``Conv1/bias``,
``bn_Conv1/gamma``, ``predictions/kernel``...), and ``manifest`` a JSON-able
dict whose ``ops`` list is the whole forward pass in order -- op type, input
and output tensor names, stride, explicit zero padding, activation -- enough
to rebuild the network with nothing but NumPy (``tests/test_cli.py`` does).

Layouts (Keras's own is HWIO):

===============  ===================  =====================
layer            ``hwio`` (TF)        ``oihw`` (PyTorch/ONNX)
===============  ===================  =====================
Conv2D 3x3/1x1   (kh, kw, Cin, Cout)  (Cout, Cin, kh, kw)
DepthwiseConv2D  (3, 3, C, 1)         (C, 1, 3, 3), groups=C
Dense            (Cin, K)             (K, Cin)  (torch Linear)
===============  ===================  =====================

Folding: ``scale = gamma / sqrt(moving_variance + 1e-3)``; kernel * scale on
the output-channel axis; ``bias = beta - moving_mean * scale``; in float64,
rounded once to the requested dtype (as ``convert.fold``).
"""
from __future__ import annotations

import json
import re

import numpy as np

from . import arch

FORMAT = "mnv2ref-export/1"


def _to_layout(kind: str, k: np.ndarray, layout: str) -> np.ndarray:
    if layout == "hwio":
        return k
    if kind == "Conv2D":
        return k.transpose(3, 2, 0, 1)  # (kh, kw, ci, co) -> (co, ci, kh, kw)
    if kind == "DepthwiseConv2D":
        return k.transpose(2, 3, 0, 1)  # (3, 3, C, 1) -> (C, 1, 3, 3)
    if kind == "Dense":
        return k.T  # (ci, K) -> (K, ci)
    raise ValueError(kind)


def _fold(kernel, bn, kind):
    scale = np.asarray(bn["gamma"], np.float64) / np.sqrt(np.asarray(bn["moving_variance"], np.float64)
                                                          + arch.BN_EPSILON)
    bias = np.asarray(bn["beta"], np.float64) - np.asarray(bn["moving_mean"], np.float64) * scale
    k = np.asarray(kernel, np.float64)
    k = k * (scale[None, None, :, None] if kind == "DepthwiseConv2D" else scale)
    return k, bias


def export(raw: dict, alpha: float, input_hw=(224, 224), include_top: bool = True, classes: int = 1000,
           static_hw=None, layout: str = "hwio", fold: bool = True, dtype="float32",
           name: str = "", source: str = "", pooling: str | None = None) -> tuple[dict, dict]:
    """Raw Keras arrays (``convert.assign`` / ``random_raw``) -> (arrays, manifest). See the module docstring."""
    if layout not in ("hwio", "oihw"):
        raise ValueError(f"layout must be 'hwio' or 'oihw', got {layout!r}")
    dt = np.dtype(dtype)
    layers = arch.layers(alpha, tuple(input_hw), include_top, None if include_top else pooling, classes, static_hw)
    arrays, ops = {}, []
    current, block_input, seen = "input", None, set()

    def put(key, a):
        arrays[key] = np.ascontiguousarray(a, dt)
        return key

    i = 0
    while i < len(layers):
        layer = layers[i]
        m = re.match(r"expanded_conv_|block_\d+_", layer.name)
        prefix = m.group(0) if m else None
        if prefix and prefix not in seen:  # first layer of a block: remember its input for the residual add
            seen.add(prefix)
            block_input = current
        kind = layer.kind
        if fold and kind == "ZeroPadding2D":  # becomes the padding of the depthwise conv that follows
            i += 1
            continue
        if kind in ("Conv2D", "DepthwiseConv2D"):
            pad = layer.pad or ((0, 0), (0, 0))
            merged = [layer.name]
            if fold and i > 0 and layers[i - 1].kind == "ZeroPadding2D":  # fold the explicit pad into the conv
                pad, merged = layers[i - 1].pad, [layers[i - 1].name] + merged
            kernel = raw[layer.name]["kernel"]
            op = {"op": "depthwise_conv2d" if kind == "DepthwiseConv2D" else "conv2d", "name": layer.name,
                  "input": current, "kernel_size": [int(kernel.shape[0]), int(kernel.shape[1])],
                  "stride": layer.stride, "padding": [list(pad[0]), list(pad[1])]}
            if kind == "DepthwiseConv2D":
                op["groups"] = int(kernel.shape[2])
            if fold:
                bn = layers[i + 1]
                k, b = _fold(kernel, raw[bn.name], kind)
                op["kernel"] = put(layer.name + "/kernel", _to_layout(kind, k, layout))
                op["bias"] = put(layer.name + "/bias", b)
                merged.append(bn.name)
                i += 1
                if i + 1 < len(layers) and layers[i + 1].kind == "ReLU":
                    op["activation"] = "relu6"
                    merged.append(layers[i + 1].name)
                    i += 1
                else:
                    op["activation"] = None
            else:
                op["kernel"] = put(layer.name + "/kernel", _to_layout(kind, np.asarray(kernel, np.float64), layout))
                op["bias"], op["activation"] = None, None
            op["keras_layers"], op["output"] = merged, merged[-1]
            op["output_shape"] = list(layers[i].shape)
            ops.append(op)
        elif kind == "BatchNormalization":  # only reached with fold=False
            keys = {n: put(f"{layer.name}/{n}", raw[layer.name][n])
                    for n in ("gamma", "beta", "moving_mean", "moving_variance")}
            ops.append({"op": "batch_norm", "name": layer.name, "input": current, **keys,
                        "epsilon": arch.BN_EPSILON, "output": layer.name, "output_shape": list(layer.shape)})
        elif kind == "ReLU":
            ops.append({"op": "relu6", "name": layer.name, "input": current, "output": layer.name,
                        "output_shape": list(layer.shape)})
        elif kind == "ZeroPadding2D":
            ops.append({"op": "zero_pad", "name": layer.name, "input": current, "padding": [list(p) for p in layer.pad],
                        "output": layer.name, "output_shape": list(layer.shape)})
        elif kind == "Add":
            ops.append({"op": "add", "name": layer.name, "inputs": [block_input, current], "output": layer.name,
                        "output_shape": list(layer.shape)})
        elif kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            ops.append({"op": "global_avg_pool" if kind == "GlobalAveragePooling2D" else "global_max_pool",
                        "name": layer.name, "input": current, "output": layer.name,
                        "output_shape": list(layer.shape)})
        elif kind == "Dense":
            r = raw[layer.name]
            ops.append({"op": "dense", "name": layer.name, "input": current,
                        "kernel": put(layer.name + "/kernel", _to_layout("Dense", np.asarray(r["kernel"]), layout)),
                        "bias": put(layer.name + "/bias", r["bias"]), "activation": "softmax",
                        "output": layer.name, "output_shape": list(layer.shape)})
        else:  # pragma: no cover - MobileNetV2 has no other layer kinds
            raise ValueError(f"unexpected layer kind {kind}")
        current = ops[-1]["output"]
        i += 1

    manifest = {
        "format": FORMAT,
        "model": name,
        "weights_source": source,
        "alpha": alpha,
        "input_shape": [input_hw[0], input_hw[1], 3],
        "static_input_shape": static_hw is None or static_hw[0] is not None,
        "include_top": include_top,
        "pooling": "avg" if include_top else pooling,
        "classes": classes if include_top else None,
        "layout": layout,
        "folded": fold,
        "dtype": str(dt),
        "conventions": {
            "input": "tensor 'input' is the preprocessed image: RGB pixels p in 0..255 -> p / 127.5 - 1, NHWC "
                     "(transpose to NCHW for an OIHW runtime)",
            "kernels": {"hwio": "conv (kh, kw, Cin, Cout); depthwise (3, 3, C, 1); dense (Cin, K)",
                        "oihw": "conv (Cout, Cin, kh, kw); depthwise (C, 1, 3, 3) with groups=C; dense (K, Cin)",
                        }[layout],
            "padding": "explicit zeros [[top, bottom], [left, right]] before a 'valid' convolution; TensorFlow puts "
                       "the odd extra row/column at the bottom/right (a symmetric padding=1 is wrong at stride 2 "
                       "for even sizes); computed for input_shape: Conv1 uses TF 'SAME' for the real size, the "
                       "stride-2 depthwise padding is fixed when the Keras model is built",
            "relu6": "min(max(x, 0), 6)",
            "batch_norm": "gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta, epsilon 1e-3"
                          + ("; already folded into kernel and bias" if fold else ""),
            "add": "inputs[0] + inputs[1] (block input + projection; the projection has no activation)",
            "dense": "x @ kernel + bias" if layout == "hwio" else "x @ kernel.T + bias",
        },
        "ops": ops,
        "arrays": {k: list(a.shape) for k, a in arrays.items()},
    }
    return arrays, manifest


def save(path: str, arrays: dict, manifest: dict, sidecar: bool = True) -> tuple[str, str | None]:
    """Write ``path`` (.npz: the arrays + '__manifest__', the manifest as a JSON string) and ``<path>.json``."""
    text = json.dumps(manifest, indent=1)
    if not path.endswith(".npz"):
        path += ".npz"
    np.savez(path, **arrays, __manifest__=np.array(text))
    side = None
    if sidecar:
        side = path[:-4] + ".json"
        with open(side, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return path, side


def load(path: str) -> tuple[dict, dict]:
    """(arrays, manifest) from an exported .npz; no pickles."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__manifest__"}
        manifest = json.loads(str(z["__manifest__"]))
    return arrays, manifest

"""The graph-free forward pass: stem, 17 inverted residual blocks, head.

It reads like the paper's Table 2 (see ``arch.py``): each function is a few
plain calls with the tensor shape after each line. Parameters come from
``convert.fold`` (batch-norm already folded into each convolution); their
keys are the functions' argument names.

``ops`` is the module of layer operations (``numpy_ops`` by default); ``tap``,
when given, is called as ``tap(keras_name, tensor)`` for every named Keras
tensor the pass computes and returns the tensor, which is how
``Model.trace`` sees inside. Without a tap, ReLU6 and residual adds are
fused into the convolution calls; with one, they are separate so that the
batch-norm output (before ReLU6) can be recorded under its Keras name.
"""
from __future__ import annotations

from . import arch
from . import numpy_ops


def _conv(op, x, *args, ops, tap, bn, relu=None, add=None, residual=None):
    """``op(x, *args)`` (a conv with folded BN) [-> ReLU6] [-> + residual], naming each Keras tensor."""
    if tap is None:
        return op(x, *args, relu6=relu is not None, **({"residual": residual} if residual is not None else {}))
    y = tap(bn, op(x, *args))
    if relu is not None:
        y = tap(relu, ops.relu6(y))
    if residual is not None:
        y = tap(add, residual + y)  # Keras: Add()([inputs, x])
    return y


def stem(x, w, b, *, ops=numpy_ops, tap=None):
    """Conv1 (3x3, stride 2, 'same') + bn_Conv1 + ReLU6: (N, H, W, 3) -> (N, ceil(H/2), ceil(W/2), C)."""
    pads = (arch.same_pad(x.shape[1], 2), arch.same_pad(x.shape[2], 2))  # TF 'SAME': extra row/col at the end
    return _conv(ops.conv3x3, x, w, b, 2, pads, ops=ops, tap=tap, bn="bn_Conv1", relu="Conv1_relu")


def inverted_residual(x, spec: arch.Block, depthwise_w, depthwise_b, project_w, project_b,
                      expand_w=None, expand_b=None, *, static=True, banded=False, ops=numpy_ops, tap=None):
    """One bottleneck: expand 1x1 -> ReLU6 -> depthwise 3x3 -> ReLU6 -> linear project 1x1 (+ x).

    ``static`` tells whether the model was built with a fixed input size:
    Keras pads a stride-2 depthwise by the real size then, and by (0, 1)
    otherwise (``arch.correct_pad``). ``banded`` computes the block a band of rows
    at a time (paper, section 5.1: same result, the t*cin-wide tensors never exist in full).
    """
    p, kw = spec.prefix, dict(ops=ops, tap=tap)
    # Keras: ZeroPadding2D(correct_pad) then a 'valid' depthwise at stride 2; the same as padding inside it.
    dw_pads = arch.correct_pad(*(x.shape[1:3] if static else (None, None))) if spec.stride == 2 \
        else ((1, 1), (1, 1))                                                    # 'same' at stride 1
    if banded and tap is None:
        return ops.expand_depthwise_project(x, expand_w, expand_b, depthwise_w, depthwise_b, spec.stride, dw_pads,
                                            project_w, project_b, residual=x if spec.residual else None)
    h = x                                                                        # (N, H, W, cin)
    if spec.has_expand:
        h = _conv(ops.pointwise, h, expand_w, expand_b, bn=p + "expand_BN", relu=p + "expand_relu", **kw)
                                                                                 # (N, H, W, t*cin)
    if spec.stride == 2 and tap is not None:
        h = tap(p + "pad", ops.zero_pad(h, dw_pads))                             # (N, H+1|2, W+1|2, t*cin)
        dw_pads = ((0, 0), (0, 0))
    h = _conv(ops.depthwise3x3, h, depthwise_w, depthwise_b, spec.stride, dw_pads,
              bn=p + "depthwise_BN", relu=p + "depthwise_relu", **kw)            # (N, H/s, W/s, t*cin)
    return _conv(ops.pointwise, h, project_w, project_b, bn=p + "project_BN", add=p + "add",
                 residual=x if spec.residual else None, **kw)                   # (N, H/s, W/s, cout), no ReLU6


def head(x, w, b, *, ops=numpy_ops, tap=None):
    """Conv_1 (1x1) + Conv_1_bn + ReLU6 ('out_relu'): (N, h, w, 320a) -> (N, h, w, 1280)."""
    return _conv(ops.pointwise, x, w, b, ops=ops, tap=tap, bn="Conv_1_bn", relu="out_relu")


def top(x, pooling, classifier=None, activation="softmax", *, ops=numpy_ops, tap=None):
    """Pooling and the classifier: (N, h, w, C) -> (N, C) -> (N, classes) [softmax]."""
    tap = tap or (lambda name, v: v)
    if pooling == "avg":
        x = tap("global_average_pooling2d", ops.global_avg_pool(x))            # (N, C)
    elif pooling == "max":
        x = tap("global_max_pooling2d", ops.global_max_pool(x))                # (N, C)
    if classifier is not None:
        x = ops.dense(x, classifier["w"], classifier["b"])                      # (N, classes) logits
        x = tap("predictions", ops.softmax(x) if activation == "softmax" else x)
    return x


def forward(x, params, alpha, *, include_top=True, pooling=None, activation="softmax", static=True,
            banded=False, ops=numpy_ops, tap=None):
    """The whole network: (N, H, W, 3) preprocessed in [-1, 1] -> (N, classes) or features."""
    x = stem(x, **params["stem"], ops=ops, tap=tap)                              # (N, H/2, W/2, 32a)
    for spec, p in zip(arch.blocks(alpha), params["blocks"]):
        x = inverted_residual(x, spec, **p, static=static, banded=banded, ops=ops, tap=tap)
                                                                                 # ... (N, H/32, W/32, 320a)
    x = head(x, **params["head"], ops=ops, tap=tap)                              # (N, H/32, W/32, 1280)
    if include_top:
        return top(x, "avg", params["classifier"], activation, ops=ops, tap=tap)  # (N, classes)
    return top(x, pooling, ops=ops, tap=tap)                                     # (N, h, w, 1280) or (N, 1280)

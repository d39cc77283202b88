"""The layer operations in plain NumPy: readable, and the oracle for the fast kernels.

All tensors are NHWC. Batch-norm is already folded into ``w`` and ``b``
(see ``convert.py``), so every convolution here is ``conv(x, w) + b``,
optionally followed by ReLU6 = min(max(v, 0), 6) and/or a residual add, in
that order. Explicit padding ``pads = ((top, bottom), (left, right))`` is
zeros, as Keras's ZeroPadding2D and TensorFlow's 'SAME' padding use.
Arithmetic stays in the input dtype (float32 or float64).
"""
from __future__ import annotations

import numpy as np


def relu6(x):
    """ReLU6: min(max(x, 0), 6), Keras's ``ReLU(6.0)``."""
    return np.minimum(np.maximum(x, 0), 6).astype(x.dtype, copy=False)


def zero_pad(x, pads):
    """(N, H, W, C) -> (N, H+top+bottom, W+left+right, C) with zeros (Keras ZeroPadding2D)."""
    (t, b), (l, r) = pads
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))


def _epilogue(y, b, relu, residual):
    y += b
    if relu:
        np.clip(y, 0, 6, out=y)
    if residual is not None:
        y += residual
    return y


def _taps(x, stride, pads, k=3):
    """The k*k shifted views of the padded input that a stride-``stride`` kxk window visits."""
    x = zero_pad(x, pads)
    ho = (x.shape[1] - k) // stride + 1
    wo = (x.shape[2] - k) // stride + 1
    return [x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            for i in range(k) for j in range(k)]


def conv3x3(x, w, b, stride, pads, relu6=False):
    """Full 3x3 convolution. x (N, H, W, Cin), w (3, 3, Cin, Cout) HWIO, b (Cout,) -> (N, Ho, Wo, Cout).

    y[n, i, j, o] = sum_{di, dj, c} xpad[n, s*i + di, s*j + dj, c] * w[di, dj, c, o] + b[o]
    (written as im2col: the 9 taps side by side, then one matrix product).
    """
    cols = np.concatenate(_taps(x, stride, pads), axis=-1)  # (N, Ho, Wo, 9*Cin), tap-major like w
    y = cols @ w.reshape(-1, w.shape[-1])  # (N, Ho, Wo, Cout)
    return _epilogue(y, b, relu6, None)


def depthwise3x3(x, w, b, stride, pads, relu6=False):
    """Depthwise 3x3 convolution. x (N, H, W, C), w (3, 3, C), b (C,) -> (N, Ho, Wo, C).

    y[n, i, j, c] = sum_{di, dj} xpad[n, s*i + di, s*j + dj, c] * w[di, dj, c] + b[c]
    """
    taps = _taps(x, stride, pads)
    wf = w.reshape(9, -1)
    y = taps[0] * wf[0]
    for t, wt in zip(taps[1:], wf[1:]):
        y += t * wt
    return _epilogue(y, b, relu6, None)


def pointwise(x, w, b, relu6=False, residual=None):
    """1x1 convolution. x (N, H, W, Cin), w (Cin, Cout), b (Cout,) -> (N, H, W, Cout).

    y = x @ w + b, then ReLU6 if ``relu6``, then ``+ residual`` if given.
    """
    return _epilogue(x @ w, b, relu6, residual)


def expand_depthwise_project(x, expand_w, expand_b, depthwise_w, depthwise_b, stride, pads, project_w,
                             project_b, residual=None, band=8):
    """A whole inverted residual block, ``band`` output rows at a time (paper, section 5.1).

    Output rows oh0..oh1-1 read input rows oh0*s - top ... (oh1-1)*s - top + 2 only, so each
    band expands just those rows: the (N, H, W, t*cin) tensors never exist in full (the 2
    halo rows of a band are recomputed; the Numba kernel carries them over instead).
    """
    (top, bottom), (left, right) = pads
    N, H, W, _ = x.shape
    Ho, Wo = (H + top + bottom - 3) // stride + 1, (W + left + right - 3) // stride + 1
    y = np.empty((N, Ho, Wo, project_w.shape[1]), x.dtype)
    for oh0 in range(0, Ho, band):
        oh1 = min(oh0 + band, Ho)
        a, b = oh0 * stride - top, (oh1 - 1) * stride - top + 3  # input rows read, padding included
        e = x[:, max(a, 0):min(b, H)]                                              # (N, <=band*s+2, W, cin)
        if expand_w is not None:
            e = pointwise(e, expand_w, expand_b, relu6=True)                       # (N, <=band*s+2, W, t*cin)
        d = depthwise3x3(e, depthwise_w, depthwise_b, stride, ((max(-a, 0), max(b - H, 0)), (left, right)),
                         relu6=True)                                               # (N, oh1-oh0, Wo, t*cin)
        y[:, oh0:oh1] = pointwise(d, project_w, project_b,
                                  residual=None if residual is None else residual[:, oh0:oh1])
    return y


def global_avg_pool(x):
    """(N, H, W, C) -> (N, C): mean over H and W (Keras GlobalAveragePooling2D)."""
    return x.mean(axis=(1, 2), dtype=x.dtype)


def global_max_pool(x):
    """(N, H, W, C) -> (N, C): max over H and W (Keras GlobalMaxPooling2D)."""
    return x.max(axis=(1, 2))


def dense(x, w, b):
    """(N, Cin) @ (Cin, K) + (K,) -> (N, K) (Keras Dense, before its activation)."""
    return x @ w + b


def softmax(z):
    """Row-wise softmax, shifted by the row max for range: exp(z - max z) / sum exp(z - max z)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

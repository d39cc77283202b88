"""Naive, obviously-correct NumPy twins of every kernel (the test oracles).

Same signatures as the fast kernels, except that :func:`pointwise` takes the unpacked
(Cin, Cout) weight matrix. They favour clarity over speed: explicit zero padding with
``np.pad``, one multiply-add per filter tap, no fusion. Computation happens in the dtype of
the inputs (pass float64 arrays to get a float64 oracle for float32 data).
"""
from __future__ import annotations

import numpy as np


def _relu6(v: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(v, 0), 6).astype(v.dtype, copy=False)


def _pad(x: np.ndarray, pads) -> np.ndarray:
    (top, bottom), (left, right) = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def conv3x3(x, w, bias, stride, pads, relu6=True):
    """Full 3x3 convolution: x (N,H,W,Cin), w (3,3,Cin,Cout) HWIO, bias (Cout,)."""
    xp = _pad(x, pads)
    N, Hp, Wp, _ = xp.shape
    Ho, Wo = (Hp - 3) // stride + 1, (Wp - 3) // stride + 1
    y = np.zeros((N, Ho, Wo, w.shape[3]), x.dtype) + bias
    for dy in range(3):
        for dx in range(3):
            patch = xp[:, dy:dy + stride * (Ho - 1) + 1:stride, dx:dx + stride * (Wo - 1) + 1:stride, :]
            y = y + patch @ w[dy, dx]
    return _relu6(y) if relu6 else y


def depthwise3x3(x, w, bias, stride, pads, relu6=True):
    """3x3 depthwise convolution: x (N,H,W,C), w (3,3,C), bias (C,)."""
    w = w.reshape(3, 3, -1)
    xp = _pad(x, pads)
    N, Hp, Wp, C = xp.shape
    Ho, Wo = (Hp - 3) // stride + 1, (Wp - 3) // stride + 1
    y = np.zeros((N, Ho, Wo, C), x.dtype) + bias
    for dy in range(3):
        for dx in range(3):
            patch = xp[:, dy:dy + stride * (Ho - 1) + 1:stride, dx:dx + stride * (Wo - 1) + 1:stride, :]
            y = y + patch * w[dy, dx]
    return _relu6(y) if relu6 else y


def pointwise(x, w, bias, relu6, residual=None):
    """1x1 convolution: x (..., Cin) @ w (Cin, Cout) + bias, then ReLU6, then + residual."""
    y = x @ w + bias
    if relu6:
        y = _relu6(y)
    if residual is not None:
        y = y + residual
    return y


def expand_depthwise_project(x, we, be, wd, bd, stride, pads, wp, bp, residual=False, band=None):
    """The fused block as its three steps on whole tensors (``band`` is ignored):
    relu6(x @ we + be) [skipped if ``we`` is None] -> depthwise + bd, ReLU6 -> @ wp + bp [+ x]."""
    e = x if we is None else pointwise(x, we, be, True)
    d = depthwise3x3(e, wd, bd, stride, pads, True)
    return pointwise(d, wp, bp, False, x if residual else None)


def global_avg_pool(x):
    """Mean over H and W: x (N,H,W,C) -> (N,C)."""
    return x.mean(axis=(1, 2))


def global_max_pool(x):
    """Max over H and W: x (N,H,W,C) -> (N,C)."""
    return x.max(axis=(1, 2))


def dense(x, w, bias):
    """x (N,Cin) @ w (Cin,Cout) + bias (Cout,)."""
    return x @ w + bias

"""Fast CPU kernels for NHWC convolutional networks (Numba JIT), with NumPy twins.

Generic building blocks, float32 or float64 (all arrays of one call share the dtype;
arithmetic and accumulation happen in that dtype):

* ``conv3x3(x, w, bias, stride, pads, relu6=True, out=None)``:
  full 3x3 conv, x (N,H,W,Cin), w (3,3,Cin,Cout) HWIO, bias (Cout,) -> (N,Ho,Wo,Cout).
* ``depthwise3x3(x, w, bias, stride, pads, relu6=True, out=None)``:
  x (N,H,W,C), w (3,3,C), bias (C,) -> (N,Ho,Wo,C).
* ``pack_pointwise(w) -> PackedPointwise``, then
  ``pointwise(x, packed, bias, relu6, residual=None, out=None)``:
  1x1 conv ``x @ w + bias`` -> ReLU6 if ``relu6`` -> ``+ residual``; x (..., Cin).
* ``expand_depthwise_project(x, expand, expand_bias, depthwise, depthwise_bias, stride,
  pads, project, project_bias, residual=False, band=None)``: the three steps above fused
  (1x1 + ReLU6 -> depthwise 3x3 + ReLU6 -> 1x1 [+ x]), computed a band of rows at a time so
  the wide middle tensors never exist in full (MobileNetV2 paper, section 5.1).
* ``global_avg_pool(x)``, ``global_max_pool(x)``: (N,H,W,C) -> (N,C).
* ``dense(x, w, bias)``: (N,Cin) @ (Cin,Cout) + (Cout,) -> (N,Cout) (Numba, not BLAS:
  see ``_head.py`` on OpenBLAS threads competing with Numba's pool).

``stride`` is 1 or 2; ``pads = ((top, bottom), (left, right))`` explicit zero padding;
``Ho = (H + top + bottom - 3) // stride + 1``. Bad arguments raise ``ValueError`` naming
the argument. Non-contiguous inputs are copied to C order first.

Threads: ``set_num_threads(n)`` / ``get_num_threads()`` (or the ``NUMBA_NUM_THREADS``
environment variable, read once at startup, for the maximum). Results are bit-identical
for any thread count.

Compilation: nothing is compiled at import. Each kernel is compiled for a dtype on its
first call (seconds; cached on disk afterwards, see ``_config.py`` for the options and the
SLP-vectoriser handling), or up front with ``warmup()``. ``NUMBA_DISABLE_JIT=1`` runs the
same kernel bodies as plain Python (slow, for debugging and coverage).

``mnv2ref.kernels.reference`` holds naive NumPy versions of every kernel (test oracles).
"""
from __future__ import annotations

from ._config import get_num_threads, set_num_threads
from ._block import expand_depthwise_project
from ._conv import conv3x3
from ._depthwise import depthwise3x3
from ._head import dense, global_avg_pool, global_max_pool
from ._plan import Plan, Program, Tensor
from ._pointwise import PackedPointwise, pack_pointwise, pointwise

__all__ = [
    "conv3x3", "depthwise3x3", "pack_pointwise", "PackedPointwise", "pointwise",
    "expand_depthwise_project", "global_avg_pool", "global_max_pool", "dense",
    "set_num_threads", "get_num_threads", "warmup", "Plan", "Program", "Tensor",
]


def warmup(dtypes=("float32", "float64"), **_ignored) -> None:
    """Compile (or load from the on-disk cache) everything a model of each dtype needs, now.

    There is one compiled engine function per dtype (``_engine.py``), used by every kernel
    and by whole-model plans, so this covers any model size and width; extra keyword
    arguments (e.g. ``alpha=``, ``size=``) are accepted and change nothing.
    """
    from ._engine import compile_for

    for dt in dtypes:
        compile_for(dt)

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
* ``dense(x, w, bias)``: (N,Cin) @ (Cin,Cout) + (Cout,) -> (N,Cout), ``w`` as an array or
  packed (``pack_pointwise``); large batches run on the pointwise tiles (Numba, not BLAS:
  see ``_head.py`` on OpenBLAS threads competing with the kernels' threads).

``stride`` is 1 or 2; ``pads = ((top, bottom), (left, right))`` explicit zero padding;
``Ho = (H + top + bottom - 3) // stride + 1``. Bad arguments raise ``ValueError`` naming
the argument. Non-contiguous inputs are copied to C order first.

Plans (whole networks): ``Plan(dtype)`` records the operations above on ``Tensor`` s
(shapes, no data) -- ``plan.input(shape)``, ``plan.conv3x3(...)``, ``plan.pointwise(...)``,
``plan.expand_depthwise_project(...)``, ``plan.global_avg_pool(x)``, ``plan.dense(...)`` -- and
``plan.compile(output)`` returns a ``Program``: everything that does not depend on the input
values (memory layout of all intermediate tensors in one arena, work items, per-thread
scratch) is decided once, and ``program(x)`` runs the whole sequence as one native call per
thread. ``mnv2ref`` builds the plan of MobileNetV2 by running ``forward.py`` on a plan's
input (``mnv2ref.numba_ops.PlanOps``). The functions above are one-operation plans.

Engine (``_engine.py``): every kernel and every plan runs through ONE compiled function per
dtype, driven by a few Python threads (no ``prange``); work items are handed out by
atomic counters (each thread's own share first, then the rest) and consecutive operations are separated by a barrier. Each item writes only
its own part of its output with the same instruction sequence whatever thread runs it, so
results are bit-identical for any thread count. Threads: ``set_num_threads(n)`` /
``get_num_threads()``; the maximum is ``NUMBA_NUM_THREADS`` (default: the number of CPUs).

Compilation: nothing is compiled at import. The engine for a dtype (its dispatch loop and the
leaves it calls by symbol, ``_leaf.py``: 16 functions, each compiled once) is compiled on first
use, or up front with ``warmup(dtypes=("float32",))`` (what ``mnv2ref compile`` calls), sharing
the work with helper processes (``_jobs.py``), and cached on disk by Numba (``cache=True``: next
to the package or in ``NUMBA_CACHE_DIR``), so later processes load it in about a second. It
serves every model size and width of that dtype; a float32 model never compiles float64 code. Vector arithmetic is
explicit 16-lane LLVM vectors (``_lanes.py``), register tiles are chosen for the CPU Numba
compiles for (``_tiles.py``: AVX-512 or AVX2), and ``_config.py`` holds the compile options
with the reason for each. ``NUMBA_DISABLE_JIT=1`` runs the same kernel bodies as plain
Python/NumPy (slow, for debugging and coverage).

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

    There is one compiled engine per dtype (``_engine.py`` and its leaves), used by every kernel
    and by whole-model plans, so this covers any model size and width; extra keyword
    arguments (e.g. ``alpha=``, ``size=``) are accepted and change nothing.
    """
    from ._engine import compile_for

    for dt in dtypes:
        compile_for(dt)

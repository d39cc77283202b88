"""The layer operations on the Numba kernels (``mnv2ref.kernels``), same signatures as ``numpy_ops``.

The forward pass (``forward.py``) is written once; ``Model(backend="numba")``
hands it this module instead of ``numpy_ops``. Differences from the NumPy
module are only in speed: bias, ReLU6 and the residual add are fused into the
kernel that produces the tensor, and 1x1 weights arrive pre-packed
(``pack``, once at load time). ``numpy_ops`` stays the readable oracle the
kernels are tested against.
"""
from __future__ import annotations

from . import numpy_ops
from .kernels import (conv3x3 as _conv3x3, dense, depthwise3x3 as _depthwise3x3,
                      expand_depthwise_project as _edp, global_avg_pool, global_max_pool, pack_pointwise,
                      pointwise as _pointwise)

relu6 = numpy_ops.relu6  # only used unfused, by Model.trace
zero_pad = numpy_ops.zero_pad  # ditto: fused kernels take the padding as an argument
softmax = numpy_ops.softmax  # (N, classes): negligible

__all__ = ["conv3x3", "depthwise3x3", "pointwise", "expand_depthwise_project", "global_avg_pool",
           "global_max_pool", "dense", "relu6", "zero_pad", "softmax", "pack"]


def conv3x3(x, w, b, stride, pads, relu6=False):
    return _conv3x3(x, w, b, stride, pads, relu6)


def depthwise3x3(x, w, b, stride, pads, relu6=False):
    return _depthwise3x3(x, w, b, stride, pads, relu6)


def pointwise(x, w, b, relu6=False, residual=None):
    return _pointwise(x, w, b, relu6, residual)


def expand_depthwise_project(x, expand_w, expand_b, depthwise_w, depthwise_b, stride, pads, project_w,
                             project_b, residual=None):
    """The fused block in bands (``kernels/_block.py``) where that pays; ``residual`` may only be ``x``.

    Banding pays when the wide tensor the unbanded kernels would write does not fit in the
    caches; on small tensors its per-band overhead and halo rows cost more than they save,
    and when the batch has few output rows its (image, chunk) work items leave a core idle.
    Measured on 2 cores (benchmarks/bench_model.py): 1.0_224 batch 32 5.6 vs 8.3 ms/image
    banded vs whole; 0.35_96 batch 1 2.25 ms banding every block vs 1.88 unbanded. So blocks
    whose wide tensor is under ``_MIN_BANDED_BYTES``, or whose batch has fewer than
    ``_MIN_BANDED_ROWS`` output rows, run unfused. Results are bit-identical either way.
    """
    if residual is not None and residual is not x:
        raise ValueError("expand_depthwise_project: the residual must be the block's input x")
    if not banding_pays(x, depthwise_w, stride):
        h = x if expand_w is None else pointwise(x, expand_w, expand_b, True)
        h = depthwise3x3(h, depthwise_w, depthwise_b, stride, pads, True)
        return pointwise(h, project_w, project_b, False, residual)
    return _edp(x, expand_w, expand_b, depthwise_w, depthwise_b, stride, pads, project_w, project_b,
                residual is not None)


_MIN_BANDED_BYTES = 1 << 20
_MIN_BANDED_ROWS = 16


def banding_pays(x, depthwise_w, stride) -> bool:
    """Whether a block on ``x`` (array or plan Tensor) runs banded (see above)."""
    wide = x.size // x.shape[-1] * depthwise_w.shape[-1] * x.itemsize  # bytes of the (N, H, W, t*cin) tensor
    return wide >= _MIN_BANDED_BYTES and x.shape[0] * (x.shape[1] // stride) >= _MIN_BANDED_ROWS


class PlanOps:
    """``forward.py``'s ``ops`` recording into a :class:`mnv2ref.kernels.Plan` instead of computing.

    Running ``forward.forward`` on a plan's input Tensor with these ops writes the forward pass,
    exactly as ``forward.py`` describes it, as a plan: the network is not written a second time.
    The operations and their fusions are those of the functions above (same banding rule).
    """

    def __init__(self, plan):
        self.plan = plan
        self.softmax_of = None  # the Tensor the final softmax applies to (done in NumPy)

    def conv3x3(self, x, w, b, stride, pads, relu6=False):
        return self.plan.conv3x3(x, w, b, stride, pads, relu6)

    def depthwise3x3(self, x, w, b, stride, pads, relu6=False):
        return self.plan.depthwise3x3(x, w, b, stride, pads, relu6)

    def pointwise(self, x, w, b, relu6=False, residual=None):
        return self.plan.pointwise(x, w, b, relu6, residual)

    def expand_depthwise_project(self, x, expand_w, expand_b, depthwise_w, depthwise_b, stride, pads, project_w,
                                 project_b, residual=None):
        if not banding_pays(x, depthwise_w, stride):
            h = x if expand_w is None else self.pointwise(x, expand_w, expand_b, True)
            h = self.depthwise3x3(h, depthwise_w, depthwise_b, stride, pads, True)
            return self.pointwise(h, project_w, project_b, False, residual)
        return self.plan.expand_depthwise_project(x, expand_w, expand_b, depthwise_w, depthwise_b, stride, pads,
                                                  project_w, project_b, residual is not None)

    def global_avg_pool(self, x):
        return self.plan.global_avg_pool(x)

    def global_max_pool(self, x):
        return self.plan.global_max_pool(x)

    def dense(self, x, w, b):
        return self.plan.dense(x, w, b)

    def softmax(self, x):
        self.softmax_of = x
        return x


class CompiledForward:
    """The whole forward pass for one input shape: one engine program (+ the final softmax)."""

    def __init__(self, program, softmax: bool):
        self.program, self.softmax = program, softmax

    def __call__(self, x):
        y = self.program(x)
        return softmax(y) if self.softmax else y


def compile_forward(forward, shape, dtype, **kwargs) -> CompiledForward:
    """Plan ``forward(x, **kwargs)`` (``forward.forward``) for inputs of ``shape`` and ``dtype``."""
    from .kernels import Plan

    plan = Plan(dtype)
    ops = PlanOps(plan)
    y = forward(plan.input(shape), ops=ops, tap=None, **kwargs)
    if ops.softmax_of is not None and ops.softmax_of is not y:
        raise ValueError("softmax must be the last operation")
    return CompiledForward(plan.compile(y, serial_below=SERIAL_BELOW_MACS), ops.softmax_of is not None)


# A forward pass with fewer multiply-adds than this times its first calls on one thread and on
# all, and keeps the faster (``kernels/_plan.Program``): 53 layers of ~12 us each, where the
# per-layer barrier and waking the second thread cost about what it saves, depending on the CPU.
# Measured on 2 cores, 0.35_96 at batch 1 (12 M): 0.68 ms on one thread vs 0.86 on two (Intel
# Sapphire Rapids VM), ~0.9 vs ~0.5 (AMD Zen 3 VM); 0.35_96 at batch 32 (380 M) and 1.0_224 at
# batch 1 (300 M) gain 1.6x from the second thread on both.
SERIAL_BELOW_MACS = 32_000_000


def pack(params: dict) -> dict:
    """Forward-pass parameters with every 1x1 weight matrix (and the classifier's) packed for
    the pointwise kernel."""
    blocks = []
    for p in params["blocks"]:
        q = dict(p)
        for key in ("expand_w", "project_w"):
            if q.get(key) is not None:
                q[key] = pack_pointwise(q[key])
        blocks.append(q)
    out = dict(params, blocks=blocks, head=dict(params["head"], w=pack_pointwise(params["head"]["w"])))
    if params.get("classifier") is not None:
        out["classifier"] = dict(params["classifier"], w=pack_pointwise(params["classifier"]["w"]))
    return out

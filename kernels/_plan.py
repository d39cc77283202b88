"""Plans: a sequence of kernel operations decided once, run as one engine program per call.

    plan = Plan("float32")
    x = plan.input((1, 224, 224, 3))
    h = plan.conv3x3(x, w, b, 2, ((0, 1), (0, 1)), relu6=True)   # Tensor: shape only, no data
    ...
    prog = plan.compile(y)          # arena layout, packed weights, work items, thread split
    out = prog(batch)               # one engine run (``_engine.execute``): all threads, all ops

Everything that does not depend on the input values is decided in :meth:`Plan.compile`:
the operations and their work items, where every intermediate tensor lives in one arena
(tensors whose lifetimes do not overlap share memory; first fit), the per-thread scratch of
the banded blocks. Weights are used where they are, not copied (see :meth:`Plan.compile`).

The ``Plan`` methods take the same arguments as the public kernels (checked there); a
``Tensor`` stands for a not-yet-computed array (``.shape``, ``.dtype``, ``.size``,
``.ndim``, ``.itemsize``), so code written for arrays (``forward.py``) can build a plan.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from . import _engine
from ._config import get_num_threads, jit_disabled
from ._program import NF

_ALIGN = 16  # elements (64 bytes for float32) between arena/weights blocks
SLOT_IN, SLOT_OUT, SLOT_ARENA, SLOT_W = 0, 1, 2, 3
SLOT_ABS = SLOT_W  # compiled code: base address 0 (constants addressed where they are)


class Tensor:
    """A tensor of a plan: shape and dtype, no data (see module doc)."""

    __slots__ = ("plan", "shape", "dtype")

    def __init__(self, plan, shape, dtype):
        self.plan, self.shape, self.dtype = plan, tuple(int(d) for d in shape), dtype

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def itemsize(self):
        return self.dtype.itemsize

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype})"


class _Op:
    __slots__ = ("fill", "inputs", "out", "consts", "scratch", "work")

    def __init__(self, fill, inputs, out, consts, scratch_per_thread, work):
        self.fill, self.inputs, self.out, self.consts = fill, inputs, out, consts
        self.scratch, self.work = scratch_per_thread, work


class Plan:
    """An ordered list of operations over :class:`Tensor` s of one dtype (see module doc)."""

    def __init__(self, dtype, nthreads: int | None = None):
        self.dtype = np.dtype(dtype)
        self.nthreads = get_num_threads() if nthreads is None else int(nthreads)
        self.ops: list[_Op] = []
        self.inp: Tensor | None = None

    # -- building --------------------------------------------------------------------------
    def input(self, shape) -> Tensor:
        if self.inp is not None:
            raise ValueError("a plan has one input")
        self.inp = Tensor(self, shape, self.dtype)
        return self.inp

    def tensor(self, shape) -> Tensor:
        return Tensor(self, shape, self.dtype)

    def add(self, fill, inputs, out_shape, consts=(), scratch_per_thread=(0, 0), work=0) -> Tensor:
        """Record one operation. ``fill(row, loc, scratch)`` writes its program row: ``loc(t)``
        gives the (slot, offset) of a Tensor or of one of ``consts`` (arrays); ``scratch`` the
        (slot, offset) of this op's per-thread scratch (``scratch_per_thread`` elements x
        nthreads, for each of the two scratch areas); ``work``: its multiply-adds."""
        for t in inputs:
            if isinstance(t, Tensor) and t.plan is not self:
                raise ValueError("tensor of another plan")
        out = Tensor(self, out_shape, self.dtype)
        self.ops.append(_Op(fill, tuple(inputs), out, tuple(consts), tuple(scratch_per_thread), int(work)))
        return out

    # the operations (same arguments as the public kernels; see their docstrings)
    def conv3x3(self, x, w, bias, stride, pads, relu6=True):
        from ._conv import plan_conv3x3
        return plan_conv3x3(self, x, w, bias, stride, pads, relu6)

    def depthwise3x3(self, x, w, bias, stride, pads, relu6=True):
        from ._depthwise import plan_depthwise3x3
        return plan_depthwise3x3(self, x, w, bias, stride, pads, relu6)

    def pointwise(self, x, packed, bias, relu6, residual=None):
        from ._pointwise import plan_pointwise
        return plan_pointwise(self, x, packed, bias, relu6, residual)

    def expand_depthwise_project(self, x, expand, expand_bias, depthwise, depthwise_bias, stride, pads,
                                 project, project_bias, residual=False, band=None):
        from ._block import plan_block
        return plan_block(self, x, expand, expand_bias, depthwise, depthwise_bias, stride, pads, project,
                          project_bias, residual, band)

    def global_avg_pool(self, x):
        from ._head import plan_pool
        return plan_pool(self, x, False)

    def global_max_pool(self, x):
        from ._head import plan_pool
        return plan_pool(self, x, True)

    def dense(self, x, w, bias):
        from ._head import plan_dense
        return plan_dense(self, x, w, bias)

    # -- compiling ---------------------------------------------------------------------------
    def compile(self, output: Tensor, serial_below: int = 0) -> "Program":
        """Lay out memory and write the program that computes ``output`` from the input.

        ``serial_below``: if the whole program has fewer multiply-adds, its first calls time one
        thread against all (``Program.threads_probe``) and it keeps the faster: a small
        network's layers are short, and whether a barrier per layer pays depends on the CPU and
        how fast it wakes a thread (results are the same either way).

        Constant arrays (weights) are not copied: compiled code addresses them where they
        are (slot ``SLOT_ABS``, whose base address is 0, so an operand's offset is the array's
        address in elements); the program keeps a reference to each. Under
        ``NUMBA_DISABLE_JIT`` they are gathered into one array instead (slot ``SLOT_W``)."""
        if self.inp is None or not self.ops or self.ops[-1].out is not output:
            raise ValueError("compile(output): output must be the last operation's result")
        dt = self.dtype
        copy = jit_disabled()
        const_loc, keep, wparts, wsize = {}, [], [], 0
        for op in self.ops:
            for c in op.consts:
                if id(c) in const_loc:
                    continue
                a = np.ascontiguousarray(c, dt)
                if a.size and a.ctypes.data % dt.itemsize:
                    a = a.copy()  # not element-aligned: no element offset reaches it
                keep.append(a)
                if copy:
                    const_loc[id(c)] = (SLOT_W, wsize)
                    wparts.append((wsize, a))
                    wsize += -(-a.size // _ALIGN) * _ALIGN
                else:
                    const_loc[id(c)] = (SLOT_ABS, a.ctypes.data // dt.itemsize if a.size else 0)
        weights = None
        if copy:
            weights = np.zeros(max(wsize, 1), dt)
            for off, a in wparts:
                weights[off:off + a.size] = a.ravel()
        # Arena: last use of each tensor, then first-fit allocation in program order.
        last = {id(self.inp): -1}
        for i, op in enumerate(self.ops):
            for t in op.inputs:
                if isinstance(t, Tensor):
                    last[id(t)] = i
        tensor_loc = {id(self.inp): (SLOT_IN, 0), id(output): (SLOT_OUT, 0)}
        live, arena_size, scratch_locs = [], 0, []
        for i, op in enumerate(self.ops):
            if op.out is not output:
                off = _first_fit(live, op.out.size)
                live.append((off, op.out.size, id(op.out)))
                tensor_loc[id(op.out)] = (SLOT_ARENA, off)
            sc = []
            for k, n in enumerate(op.scratch):
                n *= self.nthreads
                off = _first_fit(live, n) if n else 0
                if n:
                    live.append((off, n, ("scratch", i, k)))
                sc.append((SLOT_ARENA, off))
            scratch_locs.append(sc)
            arena_size = max([arena_size] + [o + n for o, n, _ in live])
            dead = {id(t) for t in op.inputs if isinstance(t, Tensor) and last.get(id(t)) == i}
            dead |= {("scratch", i, k) for k in range(len(op.scratch))}
            if id(op.out) not in last:
                dead.add(id(op.out))
            live = [blk for blk in live if blk[2] not in dead]
        prog = np.zeros((len(self.ops), NF), np.int64)

        def loc(t):
            if isinstance(t, Tensor):
                return tensor_loc[id(t)]
            return const_loc[id(t)]

        for i, op in enumerate(self.ops):
            op.fill(prog[i], loc, scratch_locs[i], op.out)
        program = Program(self, prog, weights, keep, arena_size, output.shape)
        if sum(op.work for op in self.ops) < serial_below and program.nthreads > 1:
            program.threads_probe = {1: [], program.nthreads: []}
        return program


def _first_fit(live, n):
    """Lowest aligned offset where ``n`` elements fit between the blocks in ``live``."""
    pos = 0
    for off, size, _ in sorted(live):
        if off - pos >= n:
            return pos
        pos = max(pos, -(-(off + size) // _ALIGN) * _ALIGN)
    return pos


# Calls timed per candidate thread count before a small program keeps the faster (median).
_PROBE_CALLS = 5


def faster(samples: dict) -> int:
    """The thread count whose timed calls have the lowest median (ties: fewer threads)."""
    return min(samples, key=lambda n: (float(np.median(samples[n])), n))


class Program:
    """A compiled plan: call it with the input array (and optionally ``out``).

    ``threads_probe`` (small programs, see ``Plan.compile``): {thread count: seconds of the calls
    run with it}; the first calls alternate between the candidates, real calls with real
    results, and after ``_PROBE_CALLS`` each ``nthreads`` becomes the faster (``faster``) and
    the probe ends (None). Measured on 2 cores, 0.35_96 at batch 1: one thread 0.68 vs 0.86 ms
    on an Intel Sapphire Rapids VM, two threads ~0.5 vs ~0.9 ms on an AMD Zen 3 VM."""

    def __init__(self, plan, prog, weights, keep, arena_size, out_shape):
        self.dtype, self.nthreads = plan.dtype, plan.nthreads
        self.threads_probe = None
        self.in_shape, self.out_shape = plan.inp.shape, tuple(out_shape)
        self.prog, self.weights, self._keep = prog, weights, keep  # keep: the constants used
        self.arena = np.empty(max(arena_size, 1), plan.dtype)
        self._lock = threading.Lock()  # one call at a time: the arena is shared

    @property
    def nbytes(self) -> int:
        """Memory the program allocated: intermediate tensors + scratch (the arena)."""
        return self.arena.nbytes + (0 if self.weights is None else self.weights.nbytes)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if x.shape != self.in_shape or x.dtype != self.dtype or not x.flags.c_contiguous:
            raise ValueError(f"x: expected a C-contiguous {self.dtype} array of shape {self.in_shape}, "
                             f"got {x.dtype} {x.shape}")
        y = np.empty(self.out_shape, self.dtype) if out is None else out
        bufs = (x.reshape(-1), y.reshape(-1), self.arena, self.weights)  # weights: None unless copied
        with self._lock:
            probe = self.threads_probe
            if probe is None:
                _engine.execute(self.prog, bufs, self.nthreads)
                return y
            n = min(probe, key=lambda k: len(probe[k]))  # the candidate with fewest timings
            t0 = time.perf_counter()
            _engine.execute(self.prog, bufs, n)
            probe[n].append(time.perf_counter() - t0)
            if all(len(v) >= _PROBE_CALLS for v in probe.values()):
                self.nthreads, self.threads_probe = faster(probe), None
        return y

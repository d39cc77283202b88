"""The engine: ONE compiled function runs a whole program of kernel calls on a few threads.

A *program* is an int64 array, one row per operation (``OP_*`` below: the fields of each kind
are listed next to its executor). Operands are (slot, offset) pairs into ``bufs``, a tuple of
``NSLOTS`` flat arrays of one dtype: the input, the output, the arena of intermediate tensors
and scratch, and the weights (see ``_plan.py``, which builds programs).

    _run(prog, bufs, sync, tid, nthreads)     # one call per thread, GIL released

Each thread calls :func:`_run` once for the whole program. For every operation each thread
first takes the items of its own contiguous share, then the rest of the others' shares, from
atomic counters in ``sync`` (``_sync.next_item``): on a quiet machine a thread computes the same
pixel rows in consecutive layers, which it has just written into its own cache (measured on 2
cores, 1.0_224 batch 1: 6.5 -> 5.5 ms against one shared counter, where either thread took any
row); a thread that the OS preempts (a busy machine) simply takes fewer items. A barrier
separates consecutive operations. Each
item writes only its own part of the output and is computed by the same instruction sequence
whichever thread runs it, so results are bit-identical for any thread count and schedule.

Why this shape (compile time and call overhead, measured on main before it):

* Each ``prange`` loop made Numba build a kernel, a gufunc wrapper and a parallel wrapper
  module, each re-optimising and re-generating the tile functions it calls; five parallel
  drivers (+ the banded block) cost most of the ~74 s cold start. Here there is no ``prange``:
  the threads are plain Python threads (``_Pool``) calling a ``nogil`` function, and that
  function only dispatches: each kind's executor is a leaf (``_leaf.py``), compiled once on
  its own and called by symbol, as are the tiles the executors call.
* A model's forward pass is one program: one call per thread instead of ~50 checked kernel
  calls from Python (which made small models mostly Python).
* One signature per dtype: a float32 model never compiles float64 code.

The barrier spins (with the x86 ``pause`` hint) for a few thousand rounds, then yields the
core (``sched_yield``) while it waits, so a waiting thread does not hold a core that the
thread it waits for needs.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from numba import njit

from ._config import JIT, ensure_compiled, jit_disabled
from ._leaf import prepare, source_stamp
from ._program import (NF, NSLOTS, OP_BLOCK, OP_CONV3X3, OP_DENSE, OP_DEPTHWISE, OP_POINTWISE,
                       OP_POOL)
from ._sync import _ABORT, _ITEMS, _STRIDE, barrier
from ._block import exec_block
from ._conv import exec_conv3x3
from ._depthwise import exec_depthwise
from ._head import exec_dense, exec_pool
from ._pointwise import exec_pointwise

# --- the driver -------------------------------------------------------------------------------

def _make_run(stamp):
    """The driver, as a closure over ``stamp`` (a digest of every kernel source file).

    Numba's cache key covers the cached function's own file and closure variables, not the
    files of the functions it calls. All tile functions are linked into this one function, so
    without the stamp an edited or upgraded ``_pointwise.py`` would still load the old machine
    code from the cache."""

    def _run(prog, bufs, sync, tid, nthreads):
        """Execute every row of ``prog`` (see module doc); this thread is ``tid`` of ``nthreads``."""
        if tid == stamp:  # never true: only puts the stamp into the cache key
            return
        for i in range(prog.shape[0]):
            op = prog[i]
            kind = op[0]
            ctr = (_ITEMS + _STRIDE * nthreads * i, tid, nthreads)  # this op's counters (next_item)
            if kind == OP_POINTWISE:
                exec_pointwise(op, bufs, sync, ctr)
            elif kind == OP_DEPTHWISE:
                exec_depthwise(op, bufs, sync, ctr)
            elif kind == OP_BLOCK:
                exec_block(op, bufs, sync, ctr, tid)
            elif kind == OP_CONV3X3:
                exec_conv3x3(op, bufs, sync, ctr)
            elif kind == OP_DENSE:
                exec_dense(op, bufs, sync, ctr)
            elif kind == OP_POOL:
                exec_pool(op, bufs, sync, ctr)
            if nthreads > 1 and barrier(sync, nthreads):
                return

    return njit(**JIT)(_run)


_RUN = []


def run_function():
    """The engine's compiled driver (created on first use, not at import)."""
    if not _RUN:
        _RUN.append(_make_run(int(source_stamp()[:15], 16)))
    return _RUN[0]


# --- threads ----------------------------------------------------------------------------------

class _Pool:
    """Persistent helper threads; the calling thread is thread 0. Threads are started on first
    use (never at import) and are daemons; each waits on its own lock (``go``) between runs.

    Hand-offs cost more than they seem on a small VM: a thread blocked in the kernel takes tens of
    microseconds to be scheduled again, and each GIL hand-over can add as much (measured on the
    2-core VM: ~100-130 us per run with a start and a finish hand-off, the whole of a small
    model's pass being ~700 us). So:

    * ``go`` is a plain lock used as a binary semaphore, not ``threading.Semaphore`` (a
      Condition written in Python: another wake-up on the way).
    * There is no finish hand-off. Every program ends at a barrier that all threads pass
      (``_run``), so when the caller's ``_run`` returns, every worker has written all its
      results; the caller returns at once, and a worker finishing its Python epilogue is simply
      picked up by the next run's ``go`` (a worker cannot be two runs behind: it must pass each
      run's last barrier before the caller can start the next). Until a late worker arrives
      the caller takes its work items itself (``_sync.next_item``).
    * Only when a run was aborted (an exception in a thread) does the caller wait for every
      worker to finish, to re-raise the exception.
    """

    def __init__(self):
        self._lock = threading.Lock()   # one program at a time per process
        self._workers = []              # go locks: held (by the pool) while the worker waits
        self._job = None                # (generation, callable(tid), sync) of the current run
        self._gen = 0
        self._finished = []             # per worker: generation of the last job it finished
        self._error = None

    def _worker(self, tid, go):
        while True:
            go.acquire()
            gen, job, sync = self._job
            try:
                job(tid)
            except BaseException as e:  # never leave the others spinning in the barrier
                self._error = e
                sync[_ABORT] = 1
            finally:
                self._finished[tid - 1] = gen
                job = sync = None  # do not keep the run's arrays alive until the next run

    def run(self, prog, bufs, sync, nthreads):
        with self._lock:
            while len(self._workers) < nthreads - 1:
                go = threading.Lock()
                go.acquire()
                tid = len(self._workers) + 1
                self._finished.append(self._gen)
                t = threading.Thread(target=self._worker, args=(tid, go),
                                     name=f"mnv2ref-kernels-{tid}", daemon=True)
                t.start()
                self._workers.append(go)
            sync[:] = 0
            self._error = None
            self._gen += 1
            gen = self._gen
            run = run_function()
            self._job = (gen, lambda tid: run(prog, bufs, sync, tid, nthreads), sync)
            for go in self._workers[:nthreads - 1]:
                go.release()
            error = None
            try:
                run(prog, bufs, sync, 0, nthreads)
            except BaseException as e:
                error = e
                sync[_ABORT] = 1
            if sync[_ABORT]:  # a thread failed: wait until every worker is done with this run
                self._wait(gen, nthreads)
            # Past the last barrier (or the wait) every worker has taken the job: drop it, so the
            # caller's arrays are not kept alive until the next run.
            self._job = None
            if error is not None:
                raise error
            if sync[_ABORT]:
                raise self._error if self._error is not None else RuntimeError("engine run aborted")

    def _wait(self, gen, nthreads):
        while any(f != gen for f in self._finished[:nthreads - 1]):
            time.sleep(1e-4)


_POOL = _Pool()


def execute(prog: np.ndarray, bufs: tuple, nthreads: int) -> None:
    """Run program ``prog`` over ``bufs`` (up to ``NSLOTS`` flat C-contiguous arrays of one
    dtype, or None: see below); ``bufs[0]`` must be an array."""
    sync = np.zeros(_ITEMS + _STRIDE * max(nthreads, 1) * len(prog), np.int64)
    run = run_function()
    if jit_disabled():
        run(prog, bufs, sync, 0, 1)
        return
    # Compiled code sees the buffers as addresses + the dtype (``_sync.view``); ``bufs``
    # keeps the arrays alive until the run is over.
    # A slot given as None has base address 0: its offsets are absolute (``_plan.SLOT_ABS``).
    addrs = np.zeros(NSLOTS, np.int64)
    for i, a in enumerate(bufs):
        if a is not None:
            addrs[i] = a.ctypes.data
    jb = (addrs, bufs[0][:0])
    key = bufs[0].dtype
    if key not in _READY:
        prepare(key)  # the leaves first: the engine's code calls them by symbol (_leaf.py)
        ensure_compiled(run, (prog, jb, sync, 0, 1))
        _READY.add(key)
    if nthreads <= 1 or not len(prog):  # (the pool relies on every run ending at a barrier)
        run(prog, jb, sync, 0, 1)
    else:
        _POOL.run(prog, jb, sync, nthreads)


_READY = set()  # dtypes whose engine is compiled in this process


def compile_for(dtype) -> None:
    """Compile (or load from the cache) the engine for ``dtype`` now."""
    dt = np.dtype(dtype)
    execute(np.zeros((0, NF), np.int64), (np.zeros(1, dt),) * 3, 1)

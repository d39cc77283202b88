"""The one place for Numba compile options, the SLP-vectoriser guard and thread control.

Compile options (and why)
-------------------------
``cache=True``
    Compiled machine code is written next to the sources (``__pycache__``) or to
    ``NUMBA_CACHE_DIR`` so a fresh process loads it instead of spending seconds in LLVM.
``parallel=True`` (only on kernels with a ``prange`` loop)
    Work is split into independent output tiles; every ``prange`` iteration writes only its
    own slice of the output and never reduces across iterations, so results are
    bit-identical for any thread count.
``fastmath={'contract'}``
    Only lets LLVM fuse ``a + b * c`` into one FMA instruction (fewer roundings, twice the
    throughput). Not ``fastmath=True``: its ``reassoc`` flag lets LLVM reorder sums and in
    earlier measurements collapsed one pointwise tile to 5.6 GFLOP/s.
``nogil=True``
    Kernels release the GIL, so other Python threads can run while one executes.
``error_model='numpy'``
    Division by zero gives inf/nan instead of a Python exception check in the hot loop.
``boundscheck=False``
    Indices are computed and validated by the Python wrappers, never by the hot loops.
    (``NUMBA_BOUNDSCHECK=1`` in the environment overrides this, for debugging;
    ``NUMBA_DISABLE_JIT=1`` gets NumPy's own index checks.)

The SLP-vectoriser trap, and what we do about it
------------------------------------------------
The pointwise, conv3x3 and depthwise hot loops keep a tile of partial sums in 16-lane
*tuples* of scalars (see ``_lanes.py``) so LLVM can keep them in vector registers. Turning
16 scalar FMAs into vector FMAs is the job of LLVM's SLP (superword-level-parallelism)
vectoriser, which Numba 0.68 switches OFF by default (``numba.config.SLP_VECTORIZE``,
env ``NUMBA_SLP_VECTORIZE``, default 0). There is no loop for the loop vectoriser to
take here (the accumulator loop must be unrolled into registers), so with SLP off the
same code compiles to scalar ``vfmadd231ss``: measured pointwise 3136x144->32, 1 thread,
3.8 GFLOP/s with SLP off vs 82 with it on (``_block5``: 0 packed / 80 scalar FMAs vs
30 packed / 0 scalar). (A plain loop over channels that the loop vectoriser could take
was no alternative either: with the many arrays of a stencil, its runtime alias checks
exceed LLVM's limit and it stays scalar; measured on the depthwise border columns.)

What was measured/read in Numba 0.68.1 (numba/core/codegen.py):

* ``CPUCodegen._pass_builder`` reads ``config.SLP_VECTORIZE`` every time it builds the LLVM
  pass pipeline, i.e. at each compilation, not once at import. So setting
  ``numba.config.SLP_VECTORIZE = 1`` just before compiling a kernel (and restoring it
  after) is enough; no environment variable and no process restart are needed.
* The setting is NOT part of Numba's on-disk cache key (the key is signature + CPU name
  and features + bytecode hash). A cached object compiled with SLP off is loaded as-is by a
  process that has SLP on, and vice versa. Measured: a cache written through the guard
  below, loaded by a process with ``NUMBA_SLP_VECTORIZE=0``: 77 GFLOP/s; a cache written
  by one unguarded direct call of ``_pointwise5``, loaded through the guard: 3.8.

So: **our kernels are only ever compiled inside :func:`call`**, which takes Numba's global
compiler lock (no other thread compiles meanwhile, so nobody else sees the temporary
setting), sets ``SLP_VECTORIZE = 1``, compiles the one signature needed (or loads it from
the cache), restores the previous value and then calls the kernel outside the lock. After
that first compile, implicit compilation is disabled on the dispatcher
(``disable_compile``), so a call with new argument types can never silently compile a slow
SLP-off version; :func:`call` catches the mismatch and compiles it under the guard again.
Because every compile of these functions goes through the guard, every cache entry for
them was built with SLP on, and one cache directory suffices. (Calling the private
``_``-prefixed kernels directly before any wrapper call in a process with an empty cache
would write an SLP-off entry into the cache; don't.)

Nothing here runs at import time: importing ``mnv2ref.kernels`` compiles nothing and
changes no global Numba setting.

``NUMBA_DISABLE_JIT=1`` runs the kernel bodies as plain Python (``prange`` is ``range``,
tuples are tuples): very slow but the same arithmetic, used once in CI to check coverage
and the Python semantics of the kernels.

Compile time (measured, 2-core VM, fresh process, empty cache dir)
--------------------------------------------------------------------
About 30 s for all float32 kernels and 25 s more for float64 (pointwise ~10 s + 4 s,
depthwise ~9 s each, conv3x3 ~5 s each, dense ~3 s each; more on a loaded machine);
from a warm cache, ~0.2 s for the first call and 0.5 s for everything. The costly part is
Numba's front end on the straight-line 16-lane code (IR inlining deep-copies the callee
at every call site), so only the small lane helpers are inlined; see ``_pointwise.py``.

Threads
-------
:func:`set_num_threads` / :func:`get_num_threads` wrap Numba's. The pool size is fixed at
the first parallel call from ``NUMBA_NUM_THREADS`` (default: number of CPUs); set that
environment variable before starting Python to use more threads than CPUs, or call
``set_num_threads(n)`` with ``n <= NUMBA_NUM_THREADS`` at any time to use fewer.

Two thread pools in one process fight on a small machine: after a multi-threaded
OpenBLAS call (``x @ w`` on large arrays) its idle workers spin for up to 2^28 cycles
(~0.1 s, ``OPENBLAS_THREAD_TIMEOUT``) and Numba's threads get no core meanwhile
(measured on 2 cores: pointwise calls 10-50x slower). These kernels never call BLAS;
code mixing both should set ``OPENBLAS_THREAD_TIMEOUT=4`` or ``OPENBLAS_NUM_THREADS=1``
before NumPy is imported. Likewise any other busy process on the machine stalls a
parallel call until the preempted worker runs again (one scheduler slice, ~8 ms seen).
"""
from __future__ import annotations

import numba
from numba.core import config as _nconfig
from numba.core.compiler_lock import global_compiler_lock as _compiler_lock

# Shared by every compiled function. Copy before extending (dict(JIT, cache=False)).
JIT = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy",
           boundscheck=False)
# Tile functions: compiled only as callees of the engine's driver, whose cache entry holds
# them, so a cache file of their own would be dead weight.
LEAF = dict(JIT, cache=False)
# Small helpers inlined into their caller at Numba-IR level (never called on their own).
INLINE = dict(inline="always", fastmath={"contract"}, error_model="numpy",
              boundscheck=False)


def jit_disabled() -> bool:
    """True when ``NUMBA_DISABLE_JIT=1`` (kernels are plain Python functions)."""
    return bool(_nconfig.DISABLE_JIT)


def _compile_with_slp(kernel, args) -> None:
    """Compile (or load from cache) ``kernel`` for the types of ``args`` with SLP on."""
    sig = tuple(numba.typeof(a) for a in args)
    with _compiler_lock:
        saved = _nconfig.SLP_VECTORIZE
        _nconfig.SLP_VECTORIZE = 1
        try:
            kernel.disable_compile(False)
            kernel.compile(sig)
        finally:
            _nconfig.SLP_VECTORIZE = saved
            kernel.disable_compile(True)


def ensure_compiled(kernel, args) -> None:
    """Make sure ``kernel`` has machine code for the types of ``args`` (compiling it, SLP on,
    or loading it from the cache); afterwards a call with other types fails instead of
    silently compiling outside the guard."""
    if jit_disabled():
        return
    sig = tuple(numba.typeof(a) for a in args)
    if sig not in kernel.overloads:
        _compile_with_slp(kernel, args)


_threads = None  # threads the engine uses (None: NUMBA_NUM_THREADS)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the kernels (1 <= n <= ``NUMBA_NUM_THREADS``).

    Results do not depend on ``n``. The upper bound is fixed per process by the
    ``NUMBA_NUM_THREADS`` environment variable (default: the number of CPUs).
    """
    global _threads
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"n: expected an int in [1, {numba.config.NUMBA_NUM_THREADS}] "
                         f"(NUMBA_NUM_THREADS), got {n!r}")
    _threads = n


def get_num_threads() -> int:
    """Number of threads the kernels currently use."""
    return numba.config.NUMBA_NUM_THREADS if _threads is None else _threads

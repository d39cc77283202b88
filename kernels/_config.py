"""The one place for Numba compile options, the compile guard and thread control.

How the kernels are compiled (and why)
--------------------------------------
The engine's driver (``_engine.py``) is one small compiled function per dtype. Everything it
runs is a *leaf* (``_leaf.py``): the per-operation executors, the depthwise rows and pointwise
panel loops, and the tile functions, each compiled once on its own, cached on disk, and
called by symbol. Numba compiles a callee once on its own and again inside each caller it is
linked into (and each ``prange`` adds three more modules): main's five parallel drivers made
the cold start 74-81 s, and one driver with every tile linked into it still 32 s on a 2-core
AVX2 VM (18 s on a faster AVX-512 one), most of it typing, inlining and re-optimising the same
tile code inside the driver. As leaves, no code is compiled twice, and a cold compile is
shared by helper processes (``_jobs.py``): 15.6 s on that AVX2 VM. The tiles are short:
explicit 16-lane vector IR (``_lanes.py``), not 16 scalar lanes.

Compile options
---------------
``cache=True`` (the driver and the leaves; ``JIT``)
    Machine code is written next to the sources (``__pycache__``) or to ``NUMBA_CACHE_DIR`` so
    a fresh process loads it instead of spending seconds in LLVM. Every cache key includes a
    digest of all kernel sources (the driver is a closure over it; the leaves' cache adds it,
    ``_leaf._StampedCache``), because Numba's key covers only the function's own file: a
    changed ``_lanes.py`` must not load stale code.
``cache=False`` (``LEAF``: a leaf's own callees, e.g. a tile's tail store)
    Linked into the one leaf that calls them, whose cache entry contains them.
``inline='always'`` (``INLINE``: small helpers, executors, vector intrinsics' wrappers)
    Inlined into the caller at Numba-IR level: no module of their own to optimise and link.
    Used only for short functions: Numba re-types the inlined body at every call site.
``fastmath={'contract'}``
    Only lets LLVM fuse ``a + b * c`` into one FMA instruction (fewer roundings, twice the
    throughput); the vector intrinsics set the same single flag. Not ``fastmath=True``: its
    ``reassoc`` flag lets LLVM reorder sums (results would then depend on the compiler).
``nogil=True``
    The driver runs on several Python threads at once; it must release the GIL.
``error_model='numpy'``
    Division by zero gives inf/nan instead of a Python exception check in the hot loop.
``boundscheck=False``
    Indices are computed and validated by the Python wrappers and plans, never by the hot
    loops. (``NUMBA_BOUNDSCHECK=1`` in the environment overrides this, for debugging;
    ``NUMBA_DISABLE_JIT=1`` gets NumPy's own index checks.)
No ``parallel=True``: threads come from ``_engine._Pool`` (see there).

The SLP vectoriser, and the guard
---------------------------------
Earlier versions kept a tile's partial sums in tuples of 16 scalars and relied on LLVM's SLP
vectoriser to pack them into vector instructions; Numba 0.68 turns SLP off by default
(``NUMBA_SLP_VECTORIZE``), and with it off the same code ran at 4-8 GFLOP/s. The setting is
read at each compilation and is NOT part of Numba's cache key, so a cache written with SLP off
silently held slow code. The kernels now use explicit vector types, which LLVM compiles to
packed instructions whatever the SLP setting (tested with ``NUMBA_SLP_VECTORIZE=0``). The
guard stays, so that the machine code of the scalar leftovers (tails) does not depend on the
user's environment either: our functions are only compiled inside :func:`ensure_compiled`,
which takes Numba's compiler lock, sets ``SLP_VECTORIZE = 1``, compiles the one signature
needed (or loads it from the cache), restores the previous value, and then disables implicit
compilation on the dispatcher, so a call with other argument types fails loudly instead of
compiling outside the guard.

Nothing here runs at import time: importing ``mnv2ref.kernels`` compiles nothing and changes no
global Numba setting.

Threads
-------
:func:`set_num_threads` / :func:`get_num_threads` set the number of threads the engine uses
(default and maximum: ``NUMBA_NUM_THREADS``, i.e. the number of CPUs unless set before
Numba is imported). Results do not depend on it.

Two thread pools in one process fight on a small machine: after a multi-threaded OpenBLAS
call (``x @ w`` on large arrays) its idle workers spin for up to 2^28 cycles (~0.1 s,
``OPENBLAS_THREAD_TIMEOUT``) and the kernels' threads get no core meanwhile (measured on 2
cores: pointwise calls 10-50x slower). These kernels never call BLAS; code mixing both should
set ``OPENBLAS_THREAD_TIMEOUT=4`` or ``OPENBLAS_NUM_THREADS=1`` before NumPy is imported.
Likewise any other busy process on the machine delays each barrier until the preempted
thread runs again; a waiting thread spins briefly, then yields its core (``_sync.py``).
"""
from __future__ import annotations

import numba
from numba.core import config as _nconfig
from numba.core.compiler_lock import global_compiler_lock as _compiler_lock

# Shared by every compiled function. Copy before extending (dict(JIT, cache=False)).
JIT = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy",
           boundscheck=False)
# Callees of one leaf (``_leaf.py``): linked into it; its cache entry holds them.
LEAF = dict(JIT, cache=False)
# Small helpers inlined into their caller at Numba-IR level (never called on their own).
INLINE = dict(inline="always", fastmath={"contract"}, error_model="numpy",
              boundscheck=False)


def jit_disabled() -> bool:
    """True when ``NUMBA_DISABLE_JIT=1`` (kernels are plain Python functions)."""
    return bool(_nconfig.DISABLE_JIT)


def compile_types(kernel, sig: tuple) -> None:
    """Compile (or load from cache) ``kernel`` for the Numba types ``sig`` with SLP on."""
    if sig in kernel.overloads:
        return
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
    compile_types(kernel, sig)


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

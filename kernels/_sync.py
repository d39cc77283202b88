"""Atomics, the barrier and the work-item counter used by the engine (``_engine.py``).

``sync`` is an int64 array: barrier counter and generation on their own cache lines, an abort
flag, then per program row one work-item counter per thread. Compiled code uses LLVM atomics (sequentially
consistent read-modify-write, acquire loads, release stores); under ``NUMBA_DISABLE_JIT`` there
is one thread and the plain Python twins below are used.
"""
from __future__ import annotations

import platform
import sys

from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._config import INLINE

# sync layout (int64): barrier counter and generation on their own cache lines, an abort flag,
# then per program row one work-item counter per thread (``_STRIDE`` apart, see next_item).
_COUNT, _GEN, _ABORT, _ITEMS = 0, 8, 16, 24
_SPINS = 500


# --- atomics (compiled) and their Python twins (NUMBA_DISABLE_JIT: one thread) ----------------

def _ptr(context, builder, aryty, ary, idxty, idx):
    arr = context.make_array(aryty)(context, builder, ary)
    i = context.cast(builder, idx, idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, arr, [i], wraparound=False)


@intrinsic
def _i_fetch_add(typingctx, a, i, v):
    def codegen(context, builder, sig, args):
        p = _ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", p, val, "seq_cst")
    return types.int64(a, i, v), codegen


@intrinsic
def _i_load_acquire(typingctx, a, i):
    def codegen(context, builder, sig, args):
        p = _ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load_atomic(p, "acquire", 8)
    return types.int64(a, i), codegen


@intrinsic
def _i_store_release(typingctx, a, i, v):
    def codegen(context, builder, sig, args):
        p = _ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, p, "release", 8)
        return context.get_dummy_value()
    return types.none(a, i, v), codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def _i_relax(typingctx, spins):
    """``pause`` while spinning; after ``_SPINS`` rounds give the core away (sched_yield)."""
    def codegen(context, builder, sig, args):
        n = context.cast(builder, args[0], sig.args[0], types.int64)
        long_wait = builder.icmp_signed(">", n, ir.Constant(ir.IntType(64), _SPINS))
        with builder.if_else(long_wait) as (then, otherwise):
            with then:
                if sys.platform.startswith("linux"):
                    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                        "sched_yield")
                    builder.call(fn, [])
            with otherwise:
                if _X86:
                    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                        "llvm.x86.sse2.pause")
                    builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(spins), codegen


def fetch_add(a, i, v):
    old = a[i]
    a[i] += v
    return old


def load_acquire(a, i):
    return a[i]


def store_release(a, i, v):
    a[i] = v


def relax(spins):
    pass


_OPTS = {k: v for k, v in INLINE.items() if k != "inline"}
overload(fetch_add, jit_options=_OPTS, inline="always")(lambda a, i, v: lambda a, i, v: _i_fetch_add(a, i, v))
overload(load_acquire, jit_options=_OPTS, inline="always")(lambda a, i: lambda a, i: _i_load_acquire(a, i))
overload(store_release, jit_options=_OPTS, inline="always")(
    lambda a, i, v: lambda a, i, v: _i_store_release(a, i, v))
overload(relax, jit_options=_OPTS, inline="always")(lambda spins: lambda spins: _i_relax(spins))


@njit(**INLINE)
def barrier(sync, n):
    """Wait until all ``n`` threads arrived; True if the run was aborted meanwhile."""
    gen = load_acquire(sync, _GEN)
    if fetch_add(sync, _COUNT, 1) == n - 1:
        store_release(sync, _COUNT, 0)   # reset before releasing the others
        fetch_add(sync, _GEN, 1)
        return load_acquire(sync, _ABORT) != 0
    spins = 0
    while load_acquire(sync, _GEN) == gen:
        if load_acquire(sync, _ABORT) != 0:
            return True
        spins += 1
        relax(spins)
    return load_acquire(sync, _ABORT) != 0



@njit(**INLINE)
def next_item(sync, counter, n):
    """The next of the current operation's ``n`` work items for this thread, or ``n`` when
    none is left. ``counter`` = (first counter slot of the operation, thread, threads).

    Thread t owns items [t*n/T, (t+1)*n/T) and takes them in order from its own counter; when
    they are gone it takes the remaining ones of the other threads (from the front of each
    range). Each thread thus computes the same part of every operation's output on a quiet
    machine -- the part the same thread's previous operation wrote, which is still in its
    cache (MobileNetV2's layers keep the pixel order) -- while a preempted thread's items are
    still picked up by the others. Items are computed the same way whoever takes them."""
    base, tid, nthreads = counter
    for j in range(nthreads):
        v = tid + j
        if v >= nthreads:
            v -= nthreads
        lo = v * n // nthreads
        i = lo + fetch_add(sync, base + _STRIDE * v, 1)
        if i < (v + 1) * n // nthreads:
            return i
    return n


_STRIDE = 8  # int64s between the threads' counters of one operation: one cache line each


# --- views of the engine's flat buffers -------------------------------------------------------
# Compiled code gets the buffers as (addresses (int64 array), a 0-length array of the dtype), so
# an operand is a pointer + shape (``numba.carray``): no tuple of arrays to index at run time.
# Under NUMBA_DISABLE_JIT ``bufs`` is the tuple of flat arrays itself.

def view(bufs, slot, off, shape):
    """``shape``-shaped C-order view of buffer ``slot`` starting at element ``off``."""
    n = 1
    for d in shape:
        n *= d
    return bufs[slot][off:off + n].reshape(shape)


@intrinsic
def _i_ptr(typingctx, addrs, slot, off, proto):
    ptrty = types.CPointer(proto.dtype)

    def codegen(context, builder, sig, args):
        p = _ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        base = builder.load(p)
        o = context.cast(builder, args[2], sig.args[2], types.int64)
        size = context.get_abi_sizeof(context.get_data_type(sig.args[3].dtype))
        addr = builder.add(base, builder.mul(o, ir.Constant(ir.IntType(64), size)))
        return builder.inttoptr(addr, context.get_value_type(ptrty))
    return ptrty(addrs, slot, off, proto), codegen


@overload(view, jit_options=_OPTS)
def _view_overload(bufs, slot, off, shape):
    return lambda bufs, slot, off, shape: carray(_i_ptr(bufs[0], slot, off, bufs[1]), shape)

"""16-lane vectors: explicit LLVM ``<16 x float>`` / ``<16 x double>`` values for the kernels.

Numba has no SIMD type, and small local arrays stay in memory (measured 5-13 GFLOP/s). So
this module adds one: ``Vec`` is a Numba type whose LLVM representation is a vector of 16
elements of the array's dtype, and the helpers below are intrinsics that emit one vector
instruction each (an unaligned vector load or store, ``fmul`` + ``fadd`` that LLVM fuses
into one FMA, compare + select). LLVM legalises a 16-lane vector to 1 zmm (AVX-512,
float32), 2 ymm (AVX2 float32, or AVX-512 float64) or 4 ymm (AVX2 float64).

Why explicit vectors (and not 16 scalar lanes in a tuple, as before): the tuple version
relied on LLVM's SLP vectoriser, which Numba leaves off (``_config.py``), and produced long
straight-line code whose compilation dominated the cold start (measured: the depthwise strip
function alone 30 s, the two pointwise tiles 14 s each, 74-81 s for a first prediction).
A vector helper is one Numba call and a handful of LLVM instructions, whatever the setting
of the SLP vectoriser; the arithmetic is the same, element by element.

Arithmetic and rounding: ``fma(acc, s, a, i, j)`` is ``acc + s * a[i, j:j+16]`` with the
``contract`` fast-math flag only (``_config.JIT``'s choice), i.e. one fused multiply-add per
lane on FMA hardware, exactly what the scalar lanes compiled to. ``relu6`` reproduces Numba's
(and Python's) ``min(max(u, 0), 6)`` lane by lane, NaN and signed-zero behaviour included:
``max(u, z)`` is ``z if z > u else u``, ``min(t, six)`` is ``six if six < t else t``.

Under ``NUMBA_DISABLE_JIT=1`` the same helpers are plain NumPy on 16-element arrays (the
Python definitions below), so the kernels still run as Python for coverage.

Naming: ``a`` is a 2-D array, ``(i, j)`` the start of a 16-element row segment
``a[i, j:j+16]``; ``u, v, t, acc`` are vectors; ``s`` a scalar.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from ._config import INLINE

LANES = 16
HALF = LANES // 2


class Vec(types.Type):
    """A vector of ``LANES`` values of ``dtype`` (a Numba float type), held in registers."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Vec{LANES}({dtype})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, LANES))


_CONTRACT = ("contract",)


def _vecty(context, dtype):
    return ir.VectorType(context.get_value_type(dtype), LANES)


def _index(context, builder, ty, val):
    return context.cast(builder, val, ty, types.intp)


def _vptr(context, builder, aryty, ary, idx_types, idx_vals, width=LANES):
    """Pointer to ``width`` consecutive elements starting at ``ary[idx]`` (no wraparound)."""
    arr = context.make_array(aryty)(context, builder, ary)
    inds = [_index(context, builder, t, v) for t, v in zip(idx_types, idx_vals)]
    p = cgutils.get_item_pointer(context, builder, aryty, arr, inds, wraparound=False)
    elem = context.get_value_type(aryty.dtype)
    return builder.bitcast(p, ir.VectorType(elem, width).as_pointer())


def _vload(context, builder, aryty, ary, idx_types, idx_vals, width=LANES):
    p = _vptr(context, builder, aryty, ary, idx_types, idx_vals, width)
    return builder.load(p, align=aryty.dtype.bitwidth // 8)


def _vstore(context, builder, aryty, ary, idx_types, idx_vals, val):
    p = _vptr(context, builder, aryty, ary, idx_types, idx_vals, val.type.count)
    builder.store(val, p, align=aryty.dtype.bitwidth // 8)


def _splat(builder, vecty, s):
    v = builder.insert_element(ir.Constant(vecty, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(vecty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


def _muladd(builder, a, b, c):
    """a * b + c with only the 'contract' flag: one FMA on FMA hardware (as the scalar code was)."""
    return builder.fadd(builder.fmul(a, b, flags=_CONTRACT), c, flags=_CONTRACT)


def _scalar(context, builder, fromty, val, dtype):
    return context.cast(builder, val, fromty, dtype)


# --- intrinsics (compiled code) ---------------------------------------------------------------

@intrinsic
def _i_load(typingctx, a, i, j):
    def codegen(context, builder, sig, args):
        return _vload(context, builder, sig.args[0], args[0], sig.args[1:], args[1:])
    return Vec(a.dtype)(a, i, j), codegen


@intrinsic
def _i_load1(typingctx, a, j):
    def codegen(context, builder, sig, args):
        return _vload(context, builder, sig.args[0], args[0], sig.args[1:], args[1:])
    return Vec(a.dtype)(a, j), codegen


@intrinsic
def _i_fma(typingctx, acc, s, a, i, j):
    def codegen(context, builder, sig, args):
        vecty = _vecty(context, sig.args[2].dtype)
        w = _vload(context, builder, sig.args[2], args[2], sig.args[3:], args[3:])
        sv = _splat(builder, vecty, _scalar(context, builder, sig.args[1], args[1], sig.args[2].dtype))
        return _muladd(builder, sv, w, args[0])
    return acc(acc, s, a, i, j), codegen


@intrinsic
def _i_fma_t(typingctx, acc, a, i, j, t):
    def codegen(context, builder, sig, args):
        x = _vload(context, builder, sig.args[1], args[1], sig.args[2:4], args[2:4])
        return _muladd(builder, x, args[4], args[0])
    return acc(acc, a, i, j, t), codegen


@intrinsic
def _i_mul_t(typingctx, a, i, j, t):
    def codegen(context, builder, sig, args):
        x = _vload(context, builder, sig.args[0], args[0], sig.args[1:3], args[1:3])
        return builder.fmul(x, args[3], flags=_CONTRACT)
    return t(a, i, j, t), codegen


@intrinsic
def _i_add(typingctx, u, v):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=_CONTRACT)
    return u(u, v), codegen


@intrinsic
def _i_scale(typingctx, u, s):
    def codegen(context, builder, sig, args):
        vecty = _vecty(context, sig.args[0].dtype)
        sv = _splat(builder, vecty, _scalar(context, builder, sig.args[1], args[1], sig.args[0].dtype))
        return builder.fmul(args[0], sv, flags=_CONTRACT)
    return u(u, s), codegen


@intrinsic
def _i_relu6(typingctx, u, zero, six):
    def codegen(context, builder, sig, args):
        dt = sig.args[0].dtype
        vecty = _vecty(context, dt)
        z = _splat(builder, vecty, _scalar(context, builder, sig.args[1], args[1], dt))
        s6 = _splat(builder, vecty, _scalar(context, builder, sig.args[2], args[2], dt))
        t = builder.select(builder.fcmp_ordered(">", z, args[0]), z, args[0])   # max(u, 0)
        return builder.select(builder.fcmp_ordered("<", s6, t), s6, t)          # min(t, 6)
    return u(u, zero, six), codegen


@intrinsic
def _i_store(typingctx, a, i, j, u):
    def codegen(context, builder, sig, args):
        _vstore(context, builder, sig.args[0], args[0], sig.args[1:3], args[1:3], args[3])
        return context.get_dummy_value()
    return types.none(a, i, j, u), codegen


@intrinsic
def _i_lane(typingctx, u, j):
    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], _index(context, builder, sig.args[1], args[1]))
    return u.dtype(u, j), codegen


@intrinsic
def _i_fma2(typingctx, acc, s0, s1, a, i, j):
    def codegen(context, builder, sig, args):
        dt = sig.args[3].dtype
        vecty = _vecty(context, dt)
        lo = _splat(builder, vecty, _scalar(context, builder, sig.args[1], args[1], dt))
        hi = _splat(builder, vecty, _scalar(context, builder, sig.args[2], args[2], dt))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES),
                           list(range(HALF)) + list(range(LANES + HALF, 2 * LANES)))
        s = builder.shuffle_vector(lo, hi, mask)
        w = _vload(context, builder, sig.args[3], args[3], sig.args[4:], args[4:])
        return _muladd(builder, s, w, args[0])
    return acc(acc, s0, s1, a, i, j), codegen


@intrinsic
def _i_load2(typingctx, a, i0, i1, j):
    def codegen(context, builder, sig, args):
        aty, (ti0, ti1, tj) = sig.args[0], sig.args[1:]
        u = _vload(context, builder, aty, args[0], (ti0, tj), (args[1], args[3]), HALF)
        v = _vload(context, builder, aty, args[0], (ti1, tj), (args[2], args[3]), HALF)
        return builder.shuffle_vector(u, v, ir.Constant(ir.VectorType(ir.IntType(32), LANES),
                                                        list(range(LANES))))
    return Vec(a.dtype)(a, i0, i1, j), codegen


@intrinsic
def _i_store2(typingctx, a, i0, i1, j, u):
    def codegen(context, builder, sig, args):
        aty, (ti0, ti1, tj) = sig.args[0], sig.args[1:4]
        half = ir.VectorType(args[4].type.element, HALF)
        lo = builder.shuffle_vector(args[4], ir.Constant(args[4].type, ir.Undefined),
                                    ir.Constant(ir.VectorType(ir.IntType(32), HALF), list(range(HALF))))
        hi = builder.shuffle_vector(args[4], ir.Constant(args[4].type, ir.Undefined),
                                    ir.Constant(ir.VectorType(ir.IntType(32), HALF),
                                                list(range(HALF, LANES))))
        assert lo.type == half
        _vstore(context, builder, aty, args[0], (ti0, tj), (args[1], args[3]), lo)
        _vstore(context, builder, aty, args[0], (ti1, tj), (args[2], args[3]), hi)
        return context.get_dummy_value()
    return types.none(a, i0, i1, j, u), codegen


# --- the helpers: NumPy in Python (NUMBA_DISABLE_JIT), one intrinsic each when compiled --------

def load(a, i, j):
    """``a[i, j:j+16]`` as a vector."""
    return a[i, j:j + LANES].copy()


def load1(a, j):
    """``a[j:j+16]`` (1-D ``a``) as a vector."""
    return a[j:j + LANES].copy()


def fma(acc, s, a, i, j):
    """``acc + s * a[i, j:j+16]``: scalar ``s`` broadcast over one row segment."""
    return acc + s * a[i, j:j + LANES]


def fma_t(acc, a, i, j, t):
    """``acc + a[i, j:j+16] * t``: row segment times a vector ``t``, lane by lane."""
    return acc + a[i, j:j + LANES] * t


def mul_t(a, i, j, t):
    """``a[i, j:j+16] * t`` lane by lane."""
    return a[i, j:j + LANES] * t


def add(u, v):
    """``u + v`` lane by lane."""
    return u + v


def scale(u, s):
    """``u * s`` lane by lane (scalar ``s``)."""
    return u * s


def relu6(u, zero, six):
    """``min(max(u, zero), six)`` lane by lane, with Python's max/min semantics."""
    t = np.where(zero > u, zero, u).astype(u.dtype)
    return np.where(six < t, six, t).astype(u.dtype)


def store(a, i, j, u):
    """``a[i, j:j+16] = u``."""
    a[i, j:j + LANES] = u


def lane(u, j):
    """Element ``j`` of vector ``u``."""
    return u[j]


# Two pixels x 8 channels in one vector (lanes 0-7: pixel row i0, 8-15: i1), for a last
# panel of at most 8 output channels, so that it does not waste half the FMAs.

def fma2(acc, s0, s1, a, i, j):
    """``acc + (s0 * a[i, j:j+8], s1 * a[i, j+8:j+16])``: two broadcasts, one per half."""
    s = np.concatenate([np.full(HALF, s0), np.full(HALF, s1)]).astype(a.dtype)
    return acc + s * a[i, j:j + LANES]


def load2(a, i0, i1, j):
    """``(a[i0, j:j+8], a[i1, j:j+8])`` as one vector."""
    return np.concatenate([a[i0, j:j + HALF], a[i1, j:j + HALF]])


def store2(a, i0, i1, j, u):
    """``a[i0, j:j+8] = u[:8]; a[i1, j:j+8] = u[8:]``."""
    a[i0, j:j + HALF] = u[:HALF]
    a[i1, j:j + HALF] = u[HALF:]


def _bind(py, impl):
    """Compiled code calls ``impl`` (an intrinsic) wherever the Python helper ``py`` is called."""
    names = ", ".join(py.__code__.co_varnames[:py.__code__.co_argcount])
    ns = {"_impl": impl}
    exec(f"def typer({names}):\n    return impl\n"
         f"def impl({names}):\n    return _impl({names})\n", ns)  # same argument names
    opts = {k: v for k, v in INLINE.items() if k != "inline"}
    overload(py, jit_options=opts)(ns["typer"])


for _py, _impl in ((load, _i_load), (load1, _i_load1), (fma, _i_fma), (fma_t, _i_fma_t),
                   (mul_t, _i_mul_t), (add, _i_add), (scale, _i_scale), (relu6, _i_relu6),
                   (store, _i_store), (lane, _i_lane), (fma2, _i_fma2), (load2, _i_load2),
                   (store2, _i_store2)):
    _bind(_py, _impl)

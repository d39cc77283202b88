"""Pointwise register tiles, written out for a given number of pixel rows, and the CPU choice.

A tile of ``M`` pixels x 16 channels keeps ``M`` accumulator vectors in registers across the
whole k loop (one weight-row load, ``M`` broadcast FMAs per k). How many fit depends on the
CPU, which is why the tiles are generated for the ``M`` chosen here rather than written once:

* FMA latency is 4 cycles and two FMA units issue per cycle, so at least 8 independent
  accumulator registers are needed to keep both busy.
* AVX2: 16 ymm registers; a 16-lane float32 vector is 2 ymm, so M = 5 (10 accumulators +
  2 weight registers + broadcasts); float64 (4 ymm per vector): M = 3 (12 accumulators).
* AVX-512: 32 zmm registers; a float32 vector is one zmm, so M = 5 would leave the FMA units
  idle 3/8 of the time (measured ~80-95 GFLOP/s per core on a Sapphire Rapids with M = 5);
  M = 12 uses 12 accumulators + 1 weight register; float64 (2 zmm per vector): M = 6.

The choice is made when the engine is compiled, from the same CPU features Numba compiles
for (``NUMBA_CPU_FEATURES`` if set, else the host's); Numba's cache is keyed by them too, so
a cached engine always holds the tiles for the CPU it was compiled for. Every output element
is ``bias + x0*w0 + x1*w1 + ...`` in k order whatever ``M`` is, so results do not depend on
the choice (bit-identical across CPUs with FMA).

The source of each tile is generated from one template below (``exec``), so the M-row
variants cannot drift apart; the generated functions are ordinary Numba functions (and
plain Python under ``NUMBA_DISABLE_JIT``).
"""
from __future__ import annotations

import pathlib

import numpy as np
from numba import njit
from numba.core import config

from ._config import LEAF
from ._leaf import leaf
from ._lanes import LANES, add, fma, fma2, lane, load, load1, load2, relu6, store, store2

_RELU6, _RESIDUAL = 1, 2


def wide_registers() -> bool:
    """True when Numba compiles for a CPU with AVX-512 (32 vector registers of 512 bits)."""
    feats = config.CPU_FEATURES
    if feats is None:
        from numba.core.codegen import get_host_cpu_features

        feats = get_host_cpu_features()
    return "+avx512f" in feats.split(",")


def rows(dtype) -> int:
    """Pixel rows ``M`` of the full-panel tile for ``dtype`` on this CPU (see module doc)."""
    f32 = np.dtype(dtype) == np.float32
    if wide_registers():
        return 12 if f32 else 6
    return 5 if f32 else 3


_BLOCK = '''
def block{M}(x, w, bias, res, y, pa, pb, c0, nc, mode):
    """Pixels pa..pb-1 in tiles of {M} x one 16-channel panel ``w`` (K, 16) -> y[:, c0:c0+nc].
    Rows past pb are clamped to the last pixel (same code path) and not stored."""
    K = x.shape[1]
    zero = x.dtype.type(0.0)
    six = x.dtype.type(6.0)
    # max(., 0): the indices are non-negative, so no negative-index wraparound code.
    c0 = max(c0, 0)
    last = max(pb - 1, 0)
    b = load1(bias, c0)
    for p0 in range(max(pa, 0), pb, {M}):
{rows}
{init}
        for k in range(K):
{fmas}
        if nc == LANES:
            if mode & _RELU6:
{relus}
            if mode & _RESIDUAL:  # all loads before any store: y may alias res
{resids}
{stores}
        else:
            tail{M}(y, res, p0, pb, c0, nc, mode, {accs})
'''

_TAIL = '''
def tail{M}(y, res, p0, pb, c0, nc, mode, {accs}):
    """Epilogue + store of the first ``nc < 16`` lanes of the valid rows of a tile (last panel)."""
    for i in range(min({M}, pb - p0)):
        a = {select}
        for j in range(nc):
            v = lane(a, j)
            if mode & _RELU6:
                v = min(max(v, y.dtype.type(0.0)), y.dtype.type(6.0))
            if mode & _RESIDUAL:
                v += res[p0 + i, c0 + j]
            y[p0 + i, c0 + j] = v
'''

_HALF = '''
def half{M}(x, w, bias, res, y, pa, pb, c0, nc, mode):
    """A last panel of ``nc <= 8`` channels: tiles of {P} pixels x 8 channels, each vector
    holding 2 pixels (``pack_pointwise`` stored the 8 weight lanes twice), so the {M}
    accumulators do useful work instead of half of them."""
    K = x.shape[1]
    zero = x.dtype.type(0.0)
    six = x.dtype.type(6.0)
    c0 = max(c0, 0)
    last = max(pb - 1, 0)
    b = load1(bias, c0)
    for p0 in range(max(pa, 0), pb, {P}):
{rows}
{init}
        for k in range(K):
{fmas}
        if mode & _RELU6:
{relus}
        if nc == LANES // 2 and p0 + {P} <= pb:
            if mode & _RESIDUAL:
{resids}
{stores}
        else:  # fewer than 8 channels or a partial tile: lane by lane, in bounds
            pairs{M}(y, res, p0, pb, c0, nc, mode, {accs})
'''

_PAIRS = '''
def pairs{M}(y, res, p0, pb, c0, nc, mode, {accs}):
    """Residual add + store of the valid pixels/channels of a half-panel tile."""
    for i in range(min({P}, pb - p0)):
        a = {select}
        half = (i % 2) * (LANES // 2)
        for j in range(nc):
            v = lane(a, half + j)
            if mode & _RESIDUAL:
                v += res[p0 + i, c0 + j]
            y[p0 + i, c0 + j] = v
'''

_NAMES = dict(LANES=LANES, _RELU6=_RELU6, _RESIDUAL=_RESIDUAL, add=add, fma=fma, fma2=fma2, lane=lane,
              load=load, load1=load1, load2=load2, relu6=relu6, store=store, store2=store2)
_MADE = {}


def _lines(fmt, n, indent):
    return "\n".join(" " * indent + fmt.format(i=i, j=2 * i, k=2 * i + 1) for i in range(n))


def _select(n, step=1):
    """``a0 if i < s else a1 if i < 2s else ...`` over n accumulators."""
    return " else ".join(f"a{i} if i < {(i + 1) * step}" for i in range(n - 1)) + f" else a{n - 1}"


def _compile(src, name, leaf_dtype=None):
    """Compile one generated function. Its code object names this file, with its lines placed on
    the template's lines (so Numba's messages point at the template, and Numba's disk cache, which
    needs a real source file, accepts it). ``leaf_dtype``: a leaf of the engine (``_leaf.py``),
    compiled on its own and cached; otherwise a callee linked into the one leaf that calls it."""
    text = pathlib.Path(__file__).read_text()
    line = text[:text.index("\ndef " + name.rstrip("0123456789") + "{M}(")].count("\n") + 1
    ns = dict(_NAMES, __name__=__name__, **_MADE)
    exec(compile("\n" * (line - 1) + src.lstrip("\n"), __file__, "exec"), ns)
    if leaf_dtype is None:
        _MADE[name] = njit(**LEAF)(ns[name])
    else:
        _MADE[name] = leaf("a2 a2 a1 a2 a2 i i i i i", dtypes=(leaf_dtype,))(ns[name])
    return _MADE[name]


def block(M: int, dtype):
    """The full-panel tile of ``M`` pixel rows for ``dtype`` (generated once per ``M``)."""
    if f"block{M}" in _MADE:
        _MADE[f"block{M}"].leaf.add_dtype(dtype)
    else:
        accs = ", ".join(f"a{i}" for i in range(M))
        _compile(_TAIL.format(M=M, accs=accs, select=_select(M)), f"tail{M}")
        stores = _lines("store(y, r{i}, c0, a{i})", 1, 12) + "\n" + "\n".join(
            f"            if p0 + {i} < pb:\n                store(y, r{i}, c0, a{i})" for i in range(1, M))
        _compile(_BLOCK.format(
            M=M, accs=accs, rows=_lines("r{i} = min(p0 + {i}, last)", M, 8), init=_lines("a{i} = b", M, 8),
            fmas=_lines("a{i} = fma(a{i}, x[r{i}, k], w, k, 0)", M, 12),
            relus=_lines("a{i} = relu6(a{i}, zero, six)", M, 16),
            resids=_lines("a{i} = add(a{i}, load(res, r{i}, c0))", M, 16), stores=stores), f"block{M}",
            dtype)
    return _MADE[f"block{M}"]


def half(M: int, dtype):
    """The half-panel tile with ``M`` accumulators (2M pixels x 8 channels) for ``dtype``."""
    if f"half{M}" in _MADE:
        _MADE[f"half{M}"].leaf.add_dtype(dtype)
    else:
        accs = ", ".join(f"a{i}" for i in range(M))
        _compile(_PAIRS.format(M=M, P=2 * M, accs=accs, select=_select(M, 2)), f"pairs{M}")
        _compile(_HALF.format(
            M=M, P=2 * M, accs=accs, rows=_lines("r{i} = min(p0 + {i}, last)", 2 * M, 8),
            init=_lines("a{i} = b", M, 8),
            fmas=_lines("a{i} = fma2(a{i}, x[r{j}, k], x[r{k}, k], w, k, 0)", M, 12),
            relus=_lines("a{i} = relu6(a{i}, zero, six)", M, 12),
            resids=_lines("a{i} = add(a{i}, load2(res, r{j}, r{k}, c0))", M, 16),
            stores=_lines("store2(y, r{j}, r{k}, c0, a{i})", M, 12)), f"half{M}", dtype)
    return _MADE[f"half{M}"]

"""Tile functions compiled once each and called by symbol from the engine (cold-start design).

Numba links every compiled callee's LLVM IR into each caller and runs the full O3 pipeline and
code generation over the linked module again (``numba.core.codegen.CPUCodeLibrary.finalize``).
With all tiles linked into the one engine function, a cold start compiled every tile twice:
once on its own and once more inside the engine (about half of the ~18 s cold start, measured
on a 2-core Sapphire Rapids VM). A *leaf* here is compiled once, on its own, and cached on
disk like any ``cache=True`` function; the engine only *declares* it by a symbol name and calls
it through Numba's own calling convention, so the engine's module holds a ``declare`` and a
``call`` instead of the tile's body. (This is the "symbol linking" recipe of
``../shared/reference/numba-compile-time.md``; llvmlite's ``add_symbol`` makes the leaf's
address known to LLVM's linker before the engine's machine code is loaded or generated.)

    @leaf("a4 a2 a1 a4 i i i b")          # one letter per argument, see _KINDS
    def _tile(x, w, bias, y, n, oh, s, relu): ...

* In compiled code a call to ``_tile(...)`` becomes that external call;
  under ``NUMBA_DISABLE_JIT`` ``_tile`` is the plain Python function.
* The argument kinds fix the one signature per dtype that the leaf is compiled for; a call
  with other types fails at compile time, naming the leaf and both signatures (a different
  layout or integer width would otherwise be a second, silent compile).
* Before the engine is compiled or loaded from the cache, :func:`prepare` compiles (or loads)
  every leaf for the dtype and registers its address: a cached engine has unresolved
  references to the leaves' symbols that LLVM resolves when it loads the engine's code.
* The leaves' cache entries are keyed by a digest of every kernel source file (like the
  engine's): Numba's own key covers only the leaf's file, and a leaf inlines helpers from
  ``_lanes.py``.

Calls cost a few nanoseconds each and happen per tile row or panel, never per element; LLVM
no longer inlines a leaf into its caller (none was small enough to be inlined anyway).
"""
from __future__ import annotations

import hashlib
import inspect
import pathlib

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.caching import FunctionCache
from numba.core.errors import TypingError
from numba.core.imputils import lower_builtin
from numba.extending import type_callable

from ._config import JIT, compile_types, jit_disabled

# Argument kinds: a<d> a C-contiguous d-dimensional array of the dtype, I<d> one of int64, s a
# scalar of the dtype, i an int64, b a bool; "(I1 a1)" a tuple (one argument).
_KINDS = {"i": types.int64, "b": types.boolean}

_LEAVES = []      # every leaf, in definition order
_SYMBOLS = set()  # symbol names registered with LLVM in this process


def source_stamp() -> str:
    """Digest of every kernel source file (``kernels/*.py``): part of every cache key."""
    if not _STAMP:
        h = hashlib.sha256()
        for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
            h.update(path.read_bytes())
        _STAMP.append(h.hexdigest())
    return _STAMP[0]


_STAMP = []


class _StampedCache(FunctionCache):
    """Numba's function cache with the kernel sources' digest in the index key."""

    def _index_key(self, sig, codegen):
        return super()._index_key(sig, codegen) + (source_stamp(),)


class _Leaf:
    def __init__(self, py_func, kinds: str, dtypes, stage):
        self.py_func = py_func
        self.stage = stage
        self.name = py_func.__qualname__
        self.key = f"{py_func.__module__}.{self.name}"  # unique: the symbol's and the helpers' name
        self.kinds = kinds.split()
        self.dtypes = tuple(np.dtype(d) for d in dtypes)
        params = list(inspect.signature(py_func).parameters)
        if len(params) != len(self.signature(np.float32)):
            raise TypeError(f"leaf {self.name}: {len(params)} parameters, kinds {kinds!r}")
        self.params = params
        self._dispatcher = None

    def add_dtype(self, dtype) -> None:
        if np.dtype(dtype) not in self.dtypes:
            self.dtypes += (np.dtype(dtype),)

    def dispatcher(self):
        """The leaf's own Numba dispatcher (created on first use; cached on disk)."""
        if self._dispatcher is None:
            d = njit(**JIT)(self.py_func)
            d._cache = _StampedCache(self.py_func)
            self._dispatcher = d
        return self._dispatcher

    def signature(self, dtype) -> tuple:
        """The Numba argument types for ``dtype`` (see ``_KINDS``)."""
        nbt = getattr(types, np.dtype(dtype).name)
        out, stack = [], []
        for k in self.kinds:
            if k.startswith("("):
                stack.append(out)
                out = []
                k = k[1:]
            close = k.endswith(")")
            k = k.rstrip(")")
            if k:
                if k[0] in "aI":
                    out.append(types.Array(nbt if k[0] == "a" else types.int64, int(k[1:]), "C"))
                else:
                    out.append(nbt if k == "s" else _KINDS[k])
            if close:
                inner = tuple(out)
                out = stack.pop()
                same = all(t == inner[0] for t in inner)
                out.append(types.UniTuple(inner[0], len(inner)) if same else types.Tuple(inner))
        return tuple(out)

    def symbol(self, dtype) -> str:
        """Compile (or load) the leaf for ``dtype``, register its address; the symbol name.

        The lower stages' leaves are registered first: this leaf's machine code (compiled here or
        loaded from the cache) calls them. A symbol missing when LLVM loads code that calls it
        is a fatal LLVM error, not an exception, hence also the name: fixed by the leaf and the
        dtype (``mnv2ref.<module>.<name>.<dtype>``), not Numba's mangled name, which numbers
        functions per process, so that a leaf recompiled in another process still matches the
        references to it in cached callers."""
        dt = np.dtype(dtype)
        name = f"mnv2ref.{self.key}.{dt.name}"
        if name in _SYMBOLS:
            return name
        for dep in _LEAVES:
            if dep.stage < self.stage and dt in dep.dtypes:
                dep.symbol(dt)
        sig = self.signature(dt)
        disp = self.dispatcher()
        compile_types(disp, sig)
        cres = disp.overloads[sig]
        import llvmlite.binding as ll

        ll.add_symbol(name, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
        _SYMBOLS.add(name)
        return name


def leaf(kinds: str, dtypes=(np.float32, np.float64), stage=0):
    """Make ``py_func`` a leaf compiled on its own for each of ``dtypes`` (see module doc).
    ``stage``: leaves of stage 0 call no leaf; a leaf of stage s calls only leaves of lower
    stages (they are compiled or loaded first)."""

    def wrap(py_func):
        lf = _Leaf(py_func, kinds, dtypes, stage)
        _LEAVES.append(lf)
        py_func.leaf = lf
        if jit_disabled():
            return py_func
        _register(py_func, lf)
        return py_func

    return wrap


def _register(py_func, lf):
    """Teach Numba to type a call to ``py_func`` (checking the signature, compiling the leaf) and
    to lower it to a call of the leaf's symbol. (``type_callable`` + ``lower_builtin`` rather
    than ``@overload``: an overload compiles an implementation at every call site.)"""

    def check(argtys):
        dt = _dtype_of(argtys)
        want = lf.signature(dt) if dt in lf.dtypes else None
        if argtys != want:
            raise TypingError(
                f"leaf {lf.name}: called with ({', '.join(map(str, argtys))}); it is compiled "
                f"for ({', '.join(map(str, want or ()))}) (kinds {' '.join(lf.kinds)}, dtypes "
                f"{[d.name for d in lf.dtypes]})")
        lf.symbol(dt)
        return types.none

    # The typer takes the leaf's own parameter names: Numba folds the arguments by its signature.
    ps = ", ".join(lf.params)
    ns = {"check": check}
    exec(f"def typer({ps}):\n    return check(({ps},))\n", ns)
    type_callable(py_func)(lambda context: ns["typer"])

    @lower_builtin(py_func, types.VarArg(types.Any))
    def _lower(context, builder, sig, args):
        name = lf.symbol(_dtype_of(sig.args))
        fnty = context.call_conv.get_function_type(types.none, sig.args)
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        context.call_conv.call_function(builder, fn, types.none, sig.args, args)
        return context.get_dummy_value()


def _dtype_of(tys):
    """The float dtype of the first float array or scalar among ``tys`` (tuples searched)."""
    for t in tys:
        if isinstance(t, types.BaseTuple):
            d = _dtype_of(t.types)
        elif isinstance(t, types.Array):
            d = t.dtype
        else:
            d = t
        if isinstance(d, np.dtype) or isinstance(d, types.Float):
            return np.dtype(str(d))
    return None


def prepare(dtype) -> None:
    """Compile (or load from the cache) every leaf for ``dtype`` and register its symbol; must
    run before the engine for ``dtype`` is compiled or loaded."""
    if jit_disabled():
        return
    from ._jobs import compile_leaves

    dt = np.dtype(dtype)
    todo = [lf for lf in sorted(_LEAVES, key=lambda lf: lf.stage) if dt in lf.dtypes]
    compile_leaves(todo, dt)


def leaves() -> list:
    """Every leaf (for tests and the compile report)."""
    return list(_LEAVES)

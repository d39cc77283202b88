"""``mnv2ref compile``: compile (or load) the Numba kernels ahead of time for this machine, and the first-run
policy of the numba CLI commands.

Where the compiled code lives: Numba's on-disk cache of the ``mnv2ref.kernels`` sources, i.e.
``NUMBA_CACHE_DIR/<mangled path of the package>`` when that variable is set, otherwise the installed
package's ``kernels/__pycache__`` when it is writable, otherwise Numba's user-wide cache folder
(``~/.cache/numba/...``). ``cache_dir()`` asks Numba's own locator, so it is always the folder Numba uses.

"Compiled for this machine" is a marker file in that folder, ``mnv2ref-compiled-<key>.json``, written by a
successful compile. ``key`` hashes what Numba's cache entries depend on: the numba version, the Python
version, the CPU name and feature string Numba compiles for (``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` or
LLVM's host CPU) and the content of the kernel sources (``kernels/*.py`` and ``mnv2ref/numba_ops.py``), so
an upgrade, another CPU or another Python finds no marker. Checking it compiles nothing (~0.1 s).

First run (``first_run_backend``): when the kernels are not compiled yet and a job is small (at most
``SMALL_JOB`` = 16 images: the NumPy pass answers those in about a second or less at 1.0_224, while compiling
takes far longer), the command runs that job with the NumPy backend (same results within the tolerance table,
same output) and starts ``python -m mnv2ref compile --background`` as a detached process (own session, so
it survives the command; niced; log ``mnv2ref-compile.log`` next to the marker). A larger job waits for the
compilation, where numba then pays for itself. Every compile by these commands holds an exclusive lock,
``mnv2ref-compile.lock`` (``fcntl.flock``, released by the OS if the process dies), so two processes never
write the same cache for the first time at once (which crashes Numba, numba#4807). An explicit
``--backend numba`` always waits; ``MNV2REF_BACKGROUND_COMPILE=0`` turns the fallback off.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..fileio import atomic_path

SMALL_JOB = 16
ENV_BACKGROUND = "MNV2REF_BACKGROUND_COMPILE"
DTYPES = ("float32", "float64")
LOCK, LOG = "mnv2ref-compile.lock", "mnv2ref-compile.log"


def add_parser(sub):
    p = sub.add_parser(
        "compile", help="compile the Numba kernels ahead of time for this machine",
        description="Compile (or load from Numba's cache) the Numba kernels for this machine now, e.g. as a\n"
                    "Dockerfile `RUN mnv2ref compile` step, so the first prediction does not wait for it.\n"
                    "Prints what it compiled, how long it took and where the cache lives. The cache is valid\n"
                    "for this numba version, Python and exact CPU only (NUMBA_CACHE_DIR moves it;\n"
                    "NUMBA_CPU_NAME/NUMBA_CPU_FEATURES pin a generic target). Waits while another process\n"
                    "compiles into the same cache (a lock file there).",
        epilog="examples:\n  mnv2ref compile                       # every float32 kernel\n"
               "  mnv2ref compile --alpha 0.35 --size 96\n  mnv2ref compile --all --dtype float32 float64\n"
               "  NUMBA_CACHE_DIR=/opt/numba-cache mnv2ref compile",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--alpha", type=float, help="only what this width multiplier needs (when the kernels "
                                               "support compiling per model; otherwise everything)")
    p.add_argument("--size", type=int, metavar="S", help="only what an S x S input needs (see --alpha)")
    p.add_argument("--all", action="store_true", help="every kernel variant (the default without --alpha/--size)")
    p.add_argument("--dtype", nargs="+", choices=DTYPES, default=["float32"],
                   help="float32 (default; what predict uses) and/or float64 (trace --float64)")
    p.add_argument("--force", action="store_true", help="compile even when the marker says it is done")
    p.add_argument("--background", action="store_true", help=__import__("argparse").SUPPRESS)
    p.set_defaults(func=run)
    return p


# -- where the cache is, and whether it is filled for this machine -------------------------------------------------

def cache_dir() -> Path:
    """The folder Numba caches the ``mnv2ref.kernels`` sources in (its own locator decides)."""
    from numba.core.caching import FunctionCache

    from .. import kernels

    try:  # any plain function of the kernels package: Numba caches the whole folder in one place
        return Path(FunctionCache(inspect.unwrap(kernels.warmup))._cache_path)
    except Exception:  # noqa: BLE001 -- Numba internals moved: its in-tree default
        return Path(kernels.__file__).resolve().parent / "__pycache__"


def source_files() -> list[Path]:
    from .. import kernels

    here = Path(kernels.__file__).resolve().parent
    return sorted(here.glob("*.py")) + [Path(__file__).resolve().parent.parent / "numba_ops.py"]


def machine_key() -> dict:
    """What a Numba cache entry of the kernels depends on (numba's cache key plus the sources)."""
    import numba
    from numba.core import codegen, config

    h = hashlib.sha256()
    for f in source_files():
        if f.exists():
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    import llvmlite.binding as ll

    return {"numba": numba.__version__, "python": sys.version.split()[0] + " " + sys.implementation.name,
            "cpu_name": config.CPU_NAME or ll.get_host_cpu_name(),
            "cpu_features": config.CPU_FEATURES or codegen.get_host_cpu_features(),
            "numba_opt": str(config.OPT), "sources_sha256": h.hexdigest()}


def marker_path(folder: Path | None = None, key: dict | None = None) -> Path:
    key = key or machine_key()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (folder or cache_dir()) / f"mnv2ref-compiled-{digest}.json"


def _entries(path: Path) -> list:
    try:
        return json.loads(path.read_text()).get("compiled", [])
    except (OSError, ValueError, AttributeError):
        return []


def is_compiled(dtype: str, alpha=None, size=None, folder: Path | None = None) -> bool:
    """True when a successful compile for this machine covered ``dtype`` (and this model, when per-model)."""
    for e in _entries(marker_path(folder)):
        if e.get("dtype") == dtype and e.get("alpha") in (None, alpha) and e.get("size") in (None, size):
            return True
    return False


def write_marker(dtypes, alpha, size, seconds, folder: Path | None = None) -> Path:
    """Record a successful compile (atomically: temp file + rename)."""
    key = machine_key()
    path = marker_path(folder, key)
    entries = _entries(path) + [{"dtype": d, "alpha": alpha, "size": size, "seconds": round(seconds, 2),
                                 "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())} for d in dtypes]
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(json.dumps({"key": key, "compiled": entries}, indent=1) + "\n")
    return path


# -- the lock ---------------------------------------------------------------------------------------------------

def lock_holder(folder: Path) -> str | None:
    """The pid written by the process holding the compile lock, or None when nobody holds it."""
    with compile_lock(folder, blocking=False) as got:
        if got:
            return None
    try:
        return (folder / LOCK).read_text().strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def compile_lock(folder: Path, blocking: bool = True):
    """Exclusive lock on ``folder/mnv2ref-compile.lock``; yields whether it was acquired (always True when
    ``blocking``). Without ``fcntl`` (Windows) it yields True without locking."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield True
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- compiling --------------------------------------------------------------------------------------------------

def warmup_kwargs(alpha, size) -> dict:
    """``alpha=``/``size=`` for ``kernels.warmup`` when its signature accepts them (per-model compiling)."""
    from .. import kernels

    params = inspect.signature(kernels.warmup).parameters
    return {k: v for k, v in (("alpha", alpha), ("size", size)) if v is not None and k in params}


def compile_locked(dtypes, alpha=None, size=None, stream=None, force=False, notice_after=1.0):
    """Take the lock (waiting for another compile), compile or load, write the marker. Returns
    (seconds, per-kernel compile times, marker path or None, skipped: marker already there)."""
    from numba.core import event

    from .. import kernels
    from . import common

    folder, stream = cache_dir(), stream or sys.stderr
    holder = lock_holder(folder)
    if holder:
        print(f"mnv2ref: waiting for the Numba kernels another process (pid {holder}) is compiling...",
              file=stream, flush=True)
    kw = warmup_kwargs(alpha, size)
    with compile_lock(folder):
        todo = [d for d in dtypes if force or not is_compiled(d, kw.get("alpha"), kw.get("size"), folder)]
        t0 = time.perf_counter()
        with event.install_recorder("numba:compile") as rec:
            for d in todo or dtypes:  # already compiled: load (fast), so this process is ready too
                if kw:
                    kernels.warmup((d,), **kw)
                else:  # the "compiling, 1-2 minutes" notice only when it compiles, not when it loads
                    common.compile_kernels(d, notice_after=notice_after if todo else None, stream=stream)
        seconds = time.perf_counter() - t0
        marker = None
        if todo:
            try:
                marker = write_marker(todo, kw.get("alpha"), kw.get("size"), seconds, folder)
            except OSError as e:
                print(f"mnv2ref: cannot write {marker_path(folder)}: {e}", file=stream)
    return seconds, per_kernel(rec.buffer), marker, not todo


def per_kernel(buffer) -> list:
    """numba:compile events -> [(dispatcher name, seconds)] for the outermost compiles, largest first."""
    out, starts = {}, []
    for t, ev in buffer:
        if ev.is_start:
            starts.append(t)
            continue
        t0 = starts.pop() if starts else t
        if not starts:  # outermost: its time includes the callees it compiled
            d = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            name = getattr(getattr(d, "py_func", None), "__qualname__", type(d).__name__)
            out[name] = out.get(name, 0.0) + t - t0
    return sorted(out.items(), key=lambda kv: -kv[1])


def run(args) -> int:
    from . import common

    if args.all and (args.alpha is not None or args.size is not None):
        raise common.CLIError("--all compiles everything: give it or --alpha/--size, not both")
    if args.background:
        with contextlib.suppress(OSError, AttributeError):
            os.nice(10)  # the foreground answer (NumPy) comes first
    alpha, size = (None, None) if args.all else (args.alpha, args.size)
    seconds, kernels_s, marker, skipped = compile_locked(tuple(args.dtype), alpha, size, force=args.force)
    key, folder = machine_key(), cache_dir()
    what = " and ".join(args.dtype)
    if not warmup_kwargs(alpha, size) and (alpha is not None or size is not None):
        print("mnv2ref compile: these kernels compile per dtype, not per model: compiling every variant")
    if skipped:
        print(f"mnv2ref compile: the {what} kernels were already compiled for this machine "
              f"(loaded from the cache in {seconds:.1f} s)")
    elif kernels_s:
        print(f"mnv2ref compile: compiled the {what} kernels in {seconds:.1f} s "
              f"({len(kernels_s)} functions compiled here; CPU {key['cpu_name']}, numba {key['numba']}):")
        for name, s in kernels_s:
            print(f"  {s:7.1f} s  {name}")
        from ..kernels import _jobs

        if _jobs.LAST["helpers"]:
            print(f"  (and {_jobs.LAST['leaves']} more compiled meanwhile by {_jobs.LAST['helpers']} helper "
                  f"process(es): MNV2REF_COMPILE_JOBS)")
    else:
        print(f"mnv2ref compile: the {what} kernels are ready in {seconds:.1f} s (nothing to compile: loaded "
              f"from Numba's cache; CPU {key['cpu_name']}, numba {key['numba']})")
    src = ("NUMBA_CACHE_DIR" if os.environ.get("NUMBA_CACHE_DIR") else
           "the package's kernels/__pycache__" if folder.name == "__pycache__" and
           folder.parent == source_files()[0].parent else "Numba's user-wide cache")
    print(f"cache: {folder} ({src})")
    print(f"marker: {marker or marker_path(folder, key)}")
    return 0


# -- the first-run policy of the CLI -----------------------------------------------------------------------------

def jit_disabled() -> bool:
    """``NUMBA_DISABLE_JIT=1``: the kernels run as Python, there is nothing to compile."""
    from numba.core import config

    return bool(config.DISABLE_JIT)


def first_run_backend(cfg: dict, dtype: str, images: int | None, stream=None) -> str | None:
    """'numpy' when this small job should not wait for compilation (and the background compile has been
    started or is running), else None (the default numba backend; ``ensure_compiled`` then waits)."""
    if images is None or images > SMALL_JOB or os.environ.get(ENV_BACKGROUND, "1") == "0" or jit_disabled():
        return None
    alpha, size = cfg.get("alpha"), (cfg.get("input_shape") or (None,))[0]
    kw = warmup_kwargs(alpha, size)
    folder = cache_dir()
    if is_compiled(dtype, kw.get("alpha"), kw.get("size"), folder):
        return None
    stream = stream or sys.stderr
    holder = lock_holder(folder)
    if holder:
        how = f"while an earlier run compiles them in the background (pid {holder})"
    else:
        log = folder / LOG
        cmd = [sys.executable, "-m", "mnv2ref", "compile", "--background", "--dtype", dtype]
        cmd += [a for k, v in kw.items() for a in (f"--{k}", str(v))]
        with open(log, "ab") as f:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
        how = f"while they compile in the background (pid {p.pid}, log {log})"
    print(f"mnv2ref: the Numba kernels are not compiled for this machine yet: answering {images} image"
          f"{'s' if images != 1 else ''} with the NumPy backend (same results to rounding) {how}; later runs "
          f"use them (`mnv2ref compile` does it ahead of time).", file=stream, flush=True)
    return "numpy"


def ensure_compiled(dtype: str, cfg: dict | None = None, stream=None) -> None:
    """Before a numba run: compile or load under the lock (waiting for a background compile), mark done."""
    from . import common

    if jit_disabled():
        common.compile_kernels(dtype, stream=stream)
        return
    cfg = cfg or {}
    compile_locked((dtype,), cfg.get("alpha"), (cfg.get("input_shape") or (None,))[0], stream=stream)

"""A cold compile on several cores: the leaves compiled by helper processes, stage by stage.

Numba compiles on one thread, under one process-wide lock. The leaves (``_leaf.py``) are
independent cache entries, so other processes can compile some of them into the same on-disk
cache meanwhile (the compiler lock is per process; each leaf is compiled by exactly one
process, so no cache file has two writers). This process then loads them from the cache.

    stage 0 (tiles)  |  main: its share    helper 1: its share ...  -> each says "done 0"
    stage 1          |  (after "go": the lower stages' leaves of everyone are in the cache)
    ...
    then main loads every leaf (the helpers' from the cache) and compiles the engine.

Helpers are started only when this process has to compile a leaf (a warm start loads
everything and starts nothing). Nothing depends on them: a helper that fails to start, dies or
times out is dropped, and whatever it did not compile this process compiles itself. Number of
processes: ``MNV2REF_COMPILE_JOBS`` (default: the usable CPUs, at most 4; 1 turns helpers off).
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

_WAIT_S = 600  # longest wait for one stage of one helper before it is dropped

# Helpers started by this process so far, and the leaves they were given (for the compile report).
LAST = {"helpers": 0, "leaves": 0}


def jobs() -> int:
    """Processes for a cold compile (this one included)."""
    if os.name != "posix":  # (select() on pipes)
        return 1
    env = os.environ.get("MNV2REF_COMPILE_JOBS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"MNV2REF_COMPILE_JOBS: expected an integer, got {env!r}") from None
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        ncpu = os.cpu_count() or 1
    return max(1, min(ncpu, 4))


class _Helper:
    """One helper process, compiling ``shares`` ([stage, [leaf keys]] in stage order) for ``dtype``."""

    def __init__(self, dtype, shares):
        code = "from mnv2ref.kernels._jobs import _helper_main; _helper_main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, dtype.name, json.dumps(shares)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.alive = True

    def wait_stage(self, stage: int) -> None:
        """Wait (bounded) until the helper has compiled its share of ``stage``."""
        if not self.alive:
            return
        deadline = time.monotonic() + _WAIT_S
        while True:
            left = deadline - time.monotonic()
            ready = select.select([self.proc.stdout], [], [], max(left, 0))[0] if left > 0 else []
            line = self.proc.stdout.readline() if ready else ""
            if line.strip() == f"done {stage}":
                return
            if not ready or not line:  # timed out, or the helper exited
                self.drop()
                return

    def go(self) -> None:
        if self.alive:
            try:
                self.proc.stdin.write("go\n")
                self.proc.stdin.flush()
            except OSError:
                self.drop()

    def drop(self) -> None:
        self.alive = False
        if self.proc.poll() is None:
            self.proc.kill()
        self.close()

    def close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def compile_leaves(todo, dtype) -> None:
    """``lf.symbol(dtype)`` for every leaf of ``todo`` (sorted by stage), sharing a cold compile
    with helper processes (module doc)."""
    helpers, n = [], 1
    try:
        stages = sorted({lf.stage for lf in todo})
        done = set()
        for stage in stages:
            here = [lf for lf in todo if lf.stage == stage]
            if not helpers:
                # Until something has to be compiled, load in this process.
                while here and _loaded(here[0], dtype):
                    done.add(here.pop(0).key)
                if here and jobs() > 1:
                    n = jobs()
                    helpers = _start(todo, done, dtype, n)
            for i, lf in enumerate(here):
                if i % n == 0 or not helpers:  # this process's share (k = 0)
                    lf.symbol(dtype)
            for h in helpers:
                h.wait_stage(stage)
            for h in helpers:
                h.go()
        for lf in todo:  # the helpers' leaves from the cache (or compiled here if one failed)
            lf.symbol(dtype)
    finally:
        for h in helpers:
            h.close()


def _loaded(lf, dtype) -> bool:
    """``lf.symbol(dtype)``; True if it came from the cache (no compile)."""
    disp = lf.dispatcher()
    misses = sum(disp.stats.cache_misses.values())
    lf.symbol(dtype)
    return sum(disp.stats.cache_misses.values()) == misses


def _start(todo, done, dtype, n) -> list:
    """Start ``n - 1`` helpers; helper k compiles the leaves at positions i % n == k of each stage
    (this process takes k = 0; ``done`` are already loaded)."""
    stages = sorted({lf.stage for lf in todo})
    shares = [[] for _ in range(n)]
    for stage in stages:
        here = [lf for lf in todo if lf.stage == stage and lf.key not in done]
        for k in range(n):
            shares[k].append([stage, [lf.key for i, lf in enumerate(here) if i % n == k]])
    helpers = []
    for k in range(1, n):
        if any(keys for _, keys in shares[k]):
            try:
                helpers.append(_Helper(dtype, shares[k]))
            except OSError:
                break
    LAST["helpers"] += len(helpers)
    LAST["leaves"] += sum(len(keys) for share in shares[1:len(helpers) + 1] for _, keys in share)
    return helpers


def _helper_main() -> None:
    """A helper: compile the given leaves stage by stage; report each stage; wait for "go"."""
    import numpy as np

    from . import _leaf
    from . import _engine  # noqa: F401  (imports every kernel module: all leaves exist)

    dtype, shares = np.dtype(sys.argv[1]), json.loads(sys.argv[2])
    by_key = {lf.key: lf for lf in _leaf.leaves()}
    for stage, keys in shares:
        for key in keys:
            by_key[key].symbol(dtype)
        print(f"done {stage}", flush=True)
        if sys.stdin.readline().strip() != "go":
            return

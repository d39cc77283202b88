"""Kernel speed on MobileNetV2 1.0_224 batch-1 layer shapes: mnv2ref.kernels vs NumPy.

    python benchmarks/bench_kernels.py                    # 2 threads (both libraries)
    python benchmarks/bench_kernels.py --threads 1 --repeats 31 --json out.json

* pointwise (1x1 conv + bias + ReLU6 / linear / residual) vs NumPy BLAS matmul followed by
  the same epilogue as separate in-place NumPy passes;
* depthwise 3x3 (+ bias + ReLU6) vs a NumPy version doing 9 shifted multiply-adds in place;
* the stem conv3x3 (224x224x3 -> 112x112x32, stride 2) vs the NumPy twin.

Both sides get the same thread count (Numba's pool via ``set_num_threads``, OpenBLAS via
``OPENBLAS_NUM_THREADS`` set before NumPy loads). Calls are interleaved round by round so
a slow phase of a shared machine hits both alike: each round makes one untimed and one
timed call per side. Times are medians of ``--repeats`` rounds. GFLOP/s = 2 x
multiply-adds / time. First-call (compile or cache load) time is reported separately.

Two thread pools on 2 cores: after each call OpenBLAS's idle workers spin for up to
2^28 cycles (~0.1 s) before sleeping, and during that time Numba's threads get no core
(measured: pointwise 10-50x slower). Unless already set, this script sets
``OPENBLAS_THREAD_TIMEOUT=4`` (spin 2^4 cycles) so each side is measured without the
other's idle threads; it does not change BLAS's own speed. A model mixing both libraries
must do the same or keep BLAS single-threaded (mnv2ref.kernels.dense avoids BLAS).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

POINTWISE = [  # (pixels, Cin, Cout, epilogue)
    (12544, 16, 96, "relu6"), (12544, 32, 16, "linear"), (3136, 24, 144, "relu6"),
    (3136, 144, 24, "residual"), (784, 144, 32, "linear"), (196, 96, 576, "relu6"),
    (196, 576, 96, "residual"), (49, 320, 1280, "relu6"), (49, 960, 320, "linear"),
]
DEPTHWISE = [(112, 32, 1), (112, 96, 2), (56, 144, 1), (28, 192, 1), (14, 576, 1), (7, 960, 1)]


def _args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=21, help="interleaved rounds (median)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args()


BEST = {}  # name -> fastest round of the last _time call (to detect a stalled machine)


def _time(fns: dict, repeats: int) -> dict:
    """Interleaved timing: each round calls every fn twice and times the second call (the
    first absorbs the switch between thread pools). Returns name -> median seconds."""
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            f()
            t = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t)
    BEST.update({k: min(v) for k, v in ts.items()})
    return {k: sorted(v)[len(v) // 2] for k, v in ts.items()}


def main():
    args = _args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    import numpy as np  # after OPENBLAS_NUM_THREADS

    import mnv2ref.kernels as K

    K.set_num_threads(args.threads)
    dt = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    rows = []

    def record(kind, shape, flops, ours, numpy_t, first):
        row = dict(kind=kind, shape=shape, ours_us=ours * 1e6, numpy_us=numpy_t * 1e6,
                   ours_gflops=flops / ours / 1e9, numpy_gflops=flops / numpy_t / 1e9,
                   speedup=numpy_t / ours, first_call_s=first,
                   ours_best_us=BEST["ours"] * 1e6, numpy_best_us=BEST["np"] * 1e6)
        rows.append(row)
        print(f"{kind:9s} {str(shape):24s} {row['ours_us']:9.1f} {row['ours_gflops']:7.1f} "
              f"{row['numpy_us']:9.1f} {row['numpy_gflops']:7.1f} {row['speedup']:6.2f}x", flush=True)

    print(f"threads={args.threads} dtype={dt} repeats={args.repeats} "
          f"load={os.getloadavg()[0]:.2f} cpu={platform.machine()} "
          f"OPENBLAS_THREAD_TIMEOUT={os.environ['OPENBLAS_THREAD_TIMEOUT']}")
    print(f"{'kernel':9s} {'shape':24s} {'ours us':>9s} {'GF/s':>7s} {'numpy us':>9s} {'GF/s':>7s} {'ratio':>7s}")
    six = dt.type(6)
    for P, cin, cout, epi in POINTWISE:
        x = rng.standard_normal((P, cin)).astype(dt)
        w = (rng.standard_normal((cin, cout)) / np.sqrt(cin)).astype(dt)
        b = rng.standard_normal(cout).astype(dt)
        res = rng.standard_normal((P, cout)).astype(dt) if epi == "residual" else None
        packed = K.pack_pointwise(w)
        y, yb = np.empty((P, cout), dt), np.empty((P, cout), dt)
        relu = epi == "relu6"
        t0 = time.perf_counter()
        K.pointwise(x, packed, b, relu, res, out=y)
        first = time.perf_counter() - t0

        def blas():
            np.matmul(x, w, out=yb)
            np.add(yb, b, out=yb)
            if relu:
                np.clip(yb, 0, six, out=yb)
            if res is not None:
                np.add(yb, res, out=yb)

        t = _time({"ours": lambda: K.pointwise(x, packed, b, relu, res, out=y), "np": blas},
                  args.repeats)
        record("pointwise", (P, cin, cout, epi), 2 * P * cin * cout, t["ours"], t["np"], first)

    for H, C, s in DEPTHWISE:
        pads = ((1, 1), (1, 1)) if s == 1 else ((0, 1), (0, 1))
        x = rng.standard_normal((1, H, H, C)).astype(dt)
        w = rng.standard_normal((3, 3, C)).astype(dt)
        b = rng.standard_normal(C).astype(dt)
        t0 = time.perf_counter()
        y = K.depthwise3x3(x, w, b, s, pads)
        first = time.perf_counter() - t0
        yn, tmp = np.empty_like(y), np.empty_like(y)
        Ho, Wo = y.shape[1:3]

        def numpy_dw():
            xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
            yn[...] = b
            for dy in range(3):
                for dx in range(3):
                    patch = xp[:, dy:dy + s * (Ho - 1) + 1:s, dx:dx + s * (Wo - 1) + 1:s]
                    np.multiply(patch, w[dy, dx], out=tmp)
                    np.add(yn, tmp, out=yn)
            np.clip(yn, 0, six, out=yn)

        t = _time({"ours": lambda: K.depthwise3x3(x, w, b, s, pads, out=y), "np": numpy_dw},
                  args.repeats)
        record("depthwise", (H, C, s), 2 * 9 * y.size, t["ours"], t["np"], first)

    x = rng.standard_normal((1, 224, 224, 3)).astype(dt)
    w = rng.standard_normal((3, 3, 3, 32)).astype(dt)
    b = rng.standard_normal(32).astype(dt)
    pads = ((0, 1), (0, 1))
    t0 = time.perf_counter()
    y = K.conv3x3(x, w, b, 2, pads)
    first = time.perf_counter() - t0
    from mnv2ref.kernels import reference as R

    t = _time({"ours": lambda: K.conv3x3(x, w, b, 2, pads, out=y),
               "np": lambda: R.conv3x3(x, w, b, 2, pads)}, args.repeats)
    record("conv3x3", (224, 3, 32, 2), 2 * 27 * y.size, t["ours"], t["np"], first)

    x = rng.standard_normal((1, 1280)).astype(dt)
    w = (rng.standard_normal((1280, 1000)) / 36).astype(dt)
    b = rng.standard_normal(1000).astype(dt)
    t0 = time.perf_counter()
    K.dense(x, w, b)
    first = time.perf_counter() - t0
    t = _time({"ours": lambda: K.dense(x, w, b), "np": lambda: x @ w + b}, args.repeats)
    record("dense", (1, 1280, 1000), 2 * 1280 * 1000, t["ours"], t["np"], first)

    pw = [r for r in rows if r["kind"] == "pointwise"]
    tot_ours = sum(r["ours_us"] for r in pw)
    tot_np = sum(r["numpy_us"] for r in pw)
    print(f"pointwise total: ours {tot_ours:.0f} us, BLAS+epilogue {tot_np:.0f} us")
    noisy = [r for r in rows if r["ours_us"] > 3 * r["ours_best_us"] or r["numpy_us"] > 3 * r["numpy_best_us"]]
    if noisy:  # e.g. another process took a core: a parallel call waits a scheduler slice
        print(f"WARNING: {len(noisy)} rows have median > 3x best: the machine was busy; rerun")
    if args.json:
        meta = dict(threads=args.threads, dtype=str(dt), repeats=args.repeats,
                    openblas_thread_timeout=os.environ["OPENBLAS_THREAD_TIMEOUT"],
                    python=sys.version.split()[0], numpy=np.__version__,
                    numba=__import__("numba").__version__, machine=platform.machine(),
                    loadavg=os.getloadavg())
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Speed of the int8 engine next to TFLite's own int8 paths, each runtime in its own process.

    python benchmarks/bench_int8.py                      # the Coral uint8 1.0_224 file, batch 1 and 32
    python benchmarks/bench_int8.py --tflite FILE --threads 1 2 --rounds 3

Runtimes: mnv2ref ``kernels="reference"`` (Numba; bit-exact with BUILTIN_REF), mnv2ref
``kernels="xnnpack"`` (bit-exact with AUTO), TFLite's default path (``OpResolverType.AUTO``,
XNNPACK) and TFLite's reference kernels (``BUILTIN_REF``), from ai-edge-litert. Every measurement is
a fresh process (load, two warm-up calls, then ``--repeats`` timed calls; the minimum per call is
kept, the least disturbed by other load on a shared machine); the order of runtimes is rotated every
round and each cell reports the median over rounds of those minima. Claims are ratios from one run.
Results: ``benchmarks/results/int8-<date>-<host>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_model import cpu_name  # noqa: E402  (benchmarks/ is the script's folder)

HERE = Path(__file__).resolve().parent
CORAL = HERE.parent / "fixtures" / "coral" / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
RUNTIMES = ("mnv2ref-reference", "mnv2ref-xnnpack", "tflite-auto", "tflite-builtin-ref")

CHILD = r"""
import json, sys, time
import numpy as np
runtime, path, batch, threads, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if runtime.startswith("mnv2ref"):
    import numba
    numba.set_num_threads(threads)
    import mnv2ref
    m = mnv2ref.load_tflite(path, kernels=runtime.split("-", 1)[1])
    t = m.inputs[0]
    shape, dtype = (batch,) + t.shape[1:], t.dtype
    f = lambda x: m.predict(x)
else:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    r = OpResolverType.AUTO if runtime == "tflite-auto" else OpResolverType.BUILTIN_REF
    it = Interpreter(model_path=path, experimental_op_resolver_type=r, num_threads=threads)
    d = it.get_input_details()[0]
    shape, dtype = (batch,) + tuple(d["shape"][1:]), d["dtype"]
    it.resize_tensor_input(d["index"], shape)
    it.allocate_tensors()
    out = it.get_output_details()[0]["index"]
    def f(x):
        it.set_tensor(d["index"], x)
        it.invoke()
        return it.get_tensor(out)
rng = np.random.default_rng(0)
x = (rng.uniform(-1, 1, shape).astype(np.float32) if np.dtype(dtype) == np.float32
     else rng.integers(np.iinfo(dtype).min, int(np.iinfo(dtype).max) + 1, shape).astype(dtype))
f(x); f(x)
ts = []
for _ in range(repeats):
    t0 = time.perf_counter(); f(x); ts.append(time.perf_counter() - t0)
print(json.dumps({"ms_per_image": min(ts) * 1e3 / batch}))
"""


def measure(runtime, path, batch, threads, repeats) -> float:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(max(threads, 1)), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CHILD, runtime, str(path), str(batch), str(threads), str(repeats)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["ms_per_image"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tflite", default=str(CORAL))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    ap.add_argument("--out", default=None, help="JSON result file (default: benchmarks/results/int8-<date>-<host>.json)")
    args = ap.parse_args(argv)
    rows = []
    for threads in args.threads:
        for batch in args.batch:
            runtimes = list(args.runtimes)
            if batch > 1 and "tflite-builtin-ref" in runtimes:   # ~0.2 s/image: batch 32 alone takes minutes
                runtimes.remove("tflite-builtin-ref")
            times = {r: [] for r in runtimes}
            for rnd in range(args.rounds):
                order = runtimes[rnd % len(runtimes):] + runtimes[:rnd % len(runtimes)]
                for r in order:
                    repeats = 5 if batch > 1 else (5 if r == "tflite-builtin-ref" else 30)
                    times[r].append(measure(r, args.tflite, batch, threads, repeats))
            for r in runtimes:
                ms = statistics.median(times[r])
                rows.append({"runtime": r, "batch": batch, "threads": threads, "ms_per_image": round(ms, 3),
                             "rounds": [round(t, 3) for t in times[r]]})
                print(f"threads={threads} batch={batch:3d} {r:20s} {ms:8.2f} ms/image", flush=True)
            base = statistics.median(times["tflite-auto"]) if "tflite-auto" in times else None
            if base:
                for r in runtimes:
                    print(f"    {r:20s} {statistics.median(times[r]) / base:6.2f} x tflite-auto")
    host = platform.node() or "host"
    out = Path(args.out) if args.out else HERE / "results" / f"int8-{time.strftime('%Y-%m-%d-%H%M')}-{host}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"file": os.path.basename(args.tflite), "cpu": cpu_name(), "rows": rows,
                               "python": sys.version.split()[0]}, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

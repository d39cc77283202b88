"""One fresh process of the model benchmark: convert the Keras model once, time one runtime, or time one
cold start. Started by ``bench_model.py``; prints its result as one ``BENCH_RESULT {json}`` line on stdout.

    python benchmarks/bench_worker.py convert --config 1.0_224 --workdir D
    python benchmarks/bench_worker.py steady --runtime "onnxruntime" --config 1.0_224 --workdir D --round 0
    python benchmarks/bench_worker.py cold --runtime "mnv2ref numba" --config 1.0_224 --workdir D --t0 T

Files in the work folder, written by ``convert`` and read by every runtime (same weights everywhere):
``w_<config>.h5`` (tf_keras ``save_weights``, read by mnv2ref and by TF), ``m_<config>.tflite``
(``TFLiteConverter``), ``m_<config>.onnx`` (``tf2onnx``, NHWC input). Weights: ``fixtures/generate.py``'s
``randomize`` (the fixtures' "realistic random" recipe: random batch-norm statistics, lecun-uniform kernels).

Load gate (as in ``/work/shared/reference/peers-performance.md``): before each series wait (up to
``--gate-wait`` s) for a 1 s window in which other processes use < 5% of a core; during the series measure
the CPU everything but this process used (``/proc/stat`` minus ``/proc/self/stat``) and repeat a series
where that exceeded 0.15 cores (up to ``--tries``), keeping the cleanest. The 1-min load average and
both figures are recorded with every series.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_config(cfg: str):
    a, r = cfg.split("_")
    return float(a), int(r)


def emit(obj) -> None:
    print("BENCH_RESULT " + json.dumps(obj), flush=True)


# --- load measurement ------------------------------------------------------------------------------------------

def _busy_and_self():
    """(jiffies all CPUs spent busy, jiffies this process spent), from /proc."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # minus idle and iowait
    with open("/proc/self/stat") as f:
        s = f.read().rsplit(")", 1)[1].split()
    return busy, int(s[11]) + int(s[12])  # utime + stime (all threads)


class Others:
    """CPU used by every other process between ``start()`` and ``stop()``, in cores (None without /proc)."""

    def start(self):
        try:
            self.t, self.v = time.perf_counter(), _busy_and_self()
        except OSError:
            self.v = None
        return self

    def stop(self):
        if self.v is None:
            return None
        busy, me = _busy_and_self()
        hz = os.sysconf("SC_CLK_TCK")
        return max(0.0, ((busy - self.v[0]) - (me - self.v[1])) / hz / max(time.perf_counter() - self.t, 1e-3))


def gate(max_wait: float, window: float = 1.0, limit: float = 0.05) -> dict:
    """Wait until other processes use < ``limit`` cores over ``window`` s, at most ``max_wait`` s."""
    t0 = time.perf_counter()
    while True:
        o = Others().start()
        time.sleep(window)
        others = o.stop()
        waited = time.perf_counter() - t0
        if others is None or others < limit or waited >= max_wait:
            return {"load1": os.getloadavg()[0], "idle_others_cores": others, "gate_waited_s": round(waited, 2),
                    "gate_clean": others is not None and others < limit}


# --- runtimes: load the files, return f(x) -> softmax -----------------------------------------------------------

def load_runtime(name, cfg, workdir, threads):
    alpha, rows = parse_config(cfg)
    h5, tfl, onx = (str(Path(workdir) / f) for f in (f"w_{cfg}.h5", f"m_{cfg}.tflite", f"m_{cfg}.onnx"))
    if name.startswith("mnv2ref"):
        import mnv2ref

        backend = name.split()[1]
        if backend == "numba":
            from mnv2ref import kernels

            kernels.set_num_threads(threads)
        w = h5 if os.path.exists(h5) else None  # no TensorFlow to write the file: mnv2ref's seeded weights
        m = mnv2ref.MobileNetV2(input_shape=(rows, rows, 3), alpha=alpha, weights=w, backend=backend)
        return m.__call__
    if name == "tflite xnnpack":
        from ai_edge_litert.interpreter import Interpreter

        interps = {}

        def tflite(x):
            it = interps.get(len(x))
            if it is None:
                it = interps[len(x)] = Interpreter(model_path=tfl, num_threads=threads)
                it.resize_tensor_input(it.get_input_details()[0]["index"], list(x.shape))
                it.allocate_tensors()
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            return it.get_tensor(it.get_output_details()[0]["index"])
        return tflite
    if name == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(onx, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {inp: x})[0]
    if name == "tensorflow tf.function":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        import tf_keras

        km = tf_keras.applications.MobileNetV2(input_shape=(rows, rows, 3), alpha=alpha, weights=None)
        km.load_weights(h5)
        f = tf.function(lambda x: km(x, training=False))
        return lambda x: f(tf.constant(x)).numpy()
    if name == "pytorch eager":
        from bench_torch import torch_eager  # noqa: PLC0415 -- only when torch is installed

        return torch_eager(alpha, threads)
    raise ValueError(f"unknown runtime {name!r}")


def batch_input(batch, rows):
    import numpy as np

    return np.random.default_rng(batch).uniform(-1, 1, (batch, rows, rows, 3)).astype(np.float32)


# --- modes -----------------------------------------------------------------------------------------------------

def convert(args):
    """Keras model with the fixtures' random weights -> .h5 weights, .tflite, .onnx in the work folder."""
    import tensorflow as tf
    import tf_keras

    spec = importlib.util.spec_from_file_location("mnv2ref_fixture_generate", ROOT / "fixtures" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    alpha, rows = parse_config(args.config)
    wd = Path(args.workdir)
    km = tf_keras.applications.MobileNetV2(input_shape=(rows, rows, 3), alpha=alpha, weights=None)
    gen.randomize(km, args.seed)
    notes = {}
    t = time.perf_counter()
    km.save_weights(str(wd / f"w_{args.config}.h5"))
    notes["h5"] = f"tf_keras save_weights ({time.perf_counter() - t:.1f} s)"
    t = time.perf_counter()
    (wd / f"m_{args.config}.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(km).convert())
    notes["tflite"] = f"TFLiteConverter.from_keras_model ({time.perf_counter() - t:.1f} s)"
    try:
        import tf2onnx

        t = time.perf_counter()
        sig = (tf.TensorSpec((None, rows, rows, 3), tf.float32, name="input"),)
        tf2onnx.convert.from_keras(km, input_signature=sig, opset=13, output_path=str(wd / f"m_{args.config}.onnx"))
        notes["onnx"] = f"tf2onnx.convert.from_keras opset 13 ({time.perf_counter() - t:.1f} s)"
    except ImportError as e:
        notes["onnx"] = f"skipped: {e}"
    emit({"config": args.config, "seed": args.seed, "recipe": "fixtures/generate.py randomize (lecun)",
          "conversions": notes})


def time_series(f, x, min_calls, min_seconds, max_calls=100000):
    """Seconds per call: at least ``min_calls`` calls and ``min_seconds`` s."""
    samples, t_start = [], time.perf_counter()
    while len(samples) < max_calls and (len(samples) < min_calls or time.perf_counter() - t_start < min_seconds):
        t0 = time.perf_counter()
        f(x)
        samples.append(time.perf_counter() - t0)
    return samples


def steady(args):
    import numpy as np

    alpha, rows = parse_config(args.config)
    t = time.perf_counter()
    f = load_runtime(args.runtime, args.config, args.workdir, args.threads)
    load_s = time.perf_counter() - t
    out = []
    for batch in (int(b) for b in args.batches.split(",")):
        x = batch_input(batch, rows)
        slow = args.runtime == "mnv2ref numpy" and batch > 1
        min_calls = 3 if slow else (args.calls if batch == 1 else max(3, args.calls // 2))
        for _ in range(args.warmup):
            y = f(x)
        if args.save_outputs:
            np.save(Path(args.workdir) / f"out_{args.runtime.replace(' ', '_')}_{args.config}_b{batch}.npy",
                    np.asarray(y, np.float32).reshape(batch, -1))
        best = None
        for attempt in range(1, args.tries + 1):
            g = gate(args.gate_wait)
            f(x)  # one untimed call: this runtime's pools are awake
            o = Others().start()
            samples = time_series(f, x, min_calls, 0 if slow else args.min_seconds)
            others = o.stop()
            rec = dict(g, runtime=args.runtime, config=args.config, batch=batch, round=args.round,
                       ms_per_call=statistics.median(samples) * 1e3, n=len(samples),
                       others_cores=others, tries=attempt, threads=args.threads, load_s=round(load_s, 3))
            rec["ms_per_image"] = rec["ms_per_call"] / batch
            if best is None or (others or 0) < (best["others_cores"] or 0):
                best = rec
            if others is None or others <= args.max_others:
                break
        if args.runtime.startswith("mnv2ref"):
            import tracemalloc

            tracemalloc.start()
            try:
                f(x)
                best["peak_memory_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
            finally:
                tracemalloc.stop()
        out.append(best)
    emit({"series": out})


def cold(args):
    """First prediction at batch 1 in this fresh process; ``--t0`` is the parent's time.time() at spawn."""
    t_imp = time.time()
    import numpy as np  # noqa: F401 -- counted in the import time

    alpha, rows = parse_config(args.config)
    x = batch_input(1, rows)
    events, rec = [], None
    module = {"tflite xnnpack": "ai_edge_litert.interpreter", "onnxruntime": "onnxruntime",
              "tensorflow tf.function": "tf_keras", "pytorch eager": "torch"}.get(args.runtime)
    if module:  # imports count from process start, not from model construction (as for mnv2ref)
        importlib.import_module(module)
    if args.runtime.startswith("mnv2ref"):
        import mnv2ref  # noqa: F401
        from numba.core import event

        rec = event.install_recorder("numba:compile")
        listener = rec.__enter__()
    t_construct = time.time()
    f = load_runtime(args.runtime, args.config, args.workdir, args.threads)
    t_built = time.time()
    f(x)
    t_first = time.time()
    if rec is not None:
        rec.__exit__(None, None, None)
        for t, ev in listener.buffer:
            d = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            py = getattr(d, "py_func", None)
            name = f"{py.__module__}.{py.__qualname__}" if py is not None else type(d).__name__
            events.append((t, "start" if ev.is_start else "end", name))
    from bench_stats import compile_times

    emit({"runtime": args.runtime, "config": args.config, "from_start_s": t_first - args.t0,
          "from_construct_s": t_first - t_construct, "construct_s": t_built - t_construct,
          "imports_s": t_construct - t_imp, "compile": compile_times(events),
          "compile_total_s": sum(d["self_s"] for d in compile_times(events)),
          "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR")})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("convert", "steady", "cold"))
    ap.add_argument("--config", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--runtime")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--round", type=int, default=0)
    ap.add_argument("--calls", type=int, default=10, help="timed calls per series at least (batch 32: half)")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="each series lasts at least this long")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tries", type=int, default=3, help="repeats of a series disturbed by other processes")
    ap.add_argument("--max-others", type=float, default=0.15, help="cores other processes may use in a series")
    ap.add_argument("--gate-wait", type=float, default=20.0, help="wait at most this long for a quiet machine")
    ap.add_argument("--save-outputs", action="store_true")
    ap.add_argument("--t0", type=float, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    {"convert": convert, "steady": steady, "cold": cold}[args.mode](args)


if __name__ == "__main__":
    main()

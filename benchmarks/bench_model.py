"""Whole-model speed, side by side in one process: mnv2ref (numba, numpy) and whichever peers are installed.

    python benchmarks/bench_model.py                 # 1.0_224 and 0.35_96, batch 1 and 32, 2 threads
    python benchmarks/bench_model.py --quick         # fewer repeats (a smoke run)

Peers (``pip install -e ".[bench]"``): TensorFlow (a ``tf.function``-compiled Keras model), TFLite
float32 with XNNPACK (``ai-edge-litert``), ONNX Runtime on the same Keras model converted by
``tf2onnx``, and PyTorch eager (``torch``; the same architecture as plain ``nn`` modules with
batch-norm layers, as torchvision writes it, random weights: only its speed is compared). All run
on the same inputs with the same thread count; calls are interleaved round by round so a slow phase
of a shared machine hits every runtime alike. Timings are medians; claims are ratios measured in
this one run, never absolute limits.

mnv2ref numba runs twice: with banded blocks (the default, MobileNetV2 paper section 5.1) and with
whole tensors (``banded=False``); the peak memory of mnv2ref's forward passes (``tracemalloc``: every
NumPy array and kernel scratch buffer) is reported for each.

Also reported: per-layer time of the numba pass (pointwise vs depthwise vs the rest, GFLOP/s per
layer) and the start-up cost (import + load weights + first prediction) in a fresh process with an
empty and with a warm Numba cache. Results go to ``benchmarks/results/<date>-<host>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# OpenBLAS's idle threads spin for up to ~0.1 s after each call and, on 2 cores, stall the Numba
# kernels that run next (measured: 10-50x slower pointwise calls); the NumPy backend uses BLAS.
# Must be set before NumPy loads OpenBLAS. (See kernels/_config.py, "Thread-pool contention".)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- weights shared by every runtime -------------------------------------------------------------------------


def keras_model_and_weights(alpha, rows, folder):
    """A tf_keras MobileNetV2 with realistic random weights, saved as a legacy .h5 for mnv2ref."""
    import tf_keras

    m = tf_keras.applications.MobileNetV2(input_shape=(rows, rows, 3), alpha=alpha, weights=None)
    rng = np.random.default_rng(0)
    for layer in m.layers:
        w = layer.get_weights()
        if not w:
            continue
        if type(layer).__name__ == "BatchNormalization":
            c = w[0].shape
            w = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.5, c), rng.uniform(0.5, 2, c)]
        elif type(layer).__name__ == "Dense":
            w = [rng.normal(0, 0.02, w[0].shape), rng.normal(0, 0.1, w[1].shape)]
        else:
            k = w[0]
            fan_in = k.shape[0] * k.shape[1] * (1 if "Depthwise" in type(layer).__name__ else k.shape[2])
            w = [rng.uniform(-1, 1, k.shape) * np.sqrt(3.0 / fan_in)]
        layer.set_weights([a.astype(np.float32) for a in w])
    path = os.path.join(folder, f"w_{alpha}_{rows}.h5")
    m.save_weights(path)
    return m, path


# --- runtimes: each is a name and a function batch -> output -------------------------------------------------


def mnv2ref_runtimes(alpha, rows, weights, threads):
    import mnv2ref
    from mnv2ref import kernels

    kernels.set_num_threads(threads)
    out = {}
    for name, backend, banded in (("mnv2ref numba", "numba", True), ("mnv2ref numba whole", "numba", False),
                                  ("mnv2ref numpy", "numpy", False)):
        m = mnv2ref.MobileNetV2(input_shape=(rows, rows, 3), alpha=alpha, weights=weights, backend=backend,
                                banded=banded)
        out[name] = m.__call__  # softmax output, like the Keras model the peers run
    return out


def peak_memory(f, x):
    """Peak bytes allocated through Python/NumPy during one call ``f(x)`` (tracemalloc), input excluded."""
    import tracemalloc

    tracemalloc.start()
    try:
        f(x)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def torch_eager(alpha, threads):
    """MobileNetV2 in PyTorch eager mode, written like torchvision's (Conv2d + BatchNorm2d + ReLU6,
    NCHW, symmetric padding), from mnv2ref's (t, c, n, s) table; random weights, eval mode."""
    import torch
    from torch import nn

    from mnv2ref import arch

    torch.set_num_threads(threads)

    def cbr(cin, cout, k, s, groups=1, relu=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=1e-3)]
        return layers + [nn.ReLU6(inplace=True)] if relu else layers

    class Block(nn.Module):
        def __init__(self, b):
            super().__init__()
            hidden = b.cexp
            self.res = b.residual
            self.body = nn.Sequential(*(cbr(b.cin, hidden, 1, 1) if b.has_expand else []),
                                      *cbr(hidden, hidden, 3, b.stride, groups=hidden),
                                      *cbr(hidden, b.cout, 1, 1, relu=False))

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    blocks = arch.blocks(alpha)
    last = arch.last_channels(alpha)
    net = nn.Sequential(*cbr(3, blocks[0].cin, 3, 2), *[Block(b) for b in blocks],
                        *cbr(blocks[-1].cout, last, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(last, 1000), nn.Softmax(dim=1)).eval()

    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    return run


def peer_runtimes(keras_model, alpha, rows, threads, batches, notes):
    """tf.function, TFLite-XNNPACK, ONNX Runtime and PyTorch eager, each skipped with a reason when
    unavailable."""
    out = {}
    try:
        out["pytorch eager"] = torch_eager(alpha, threads)
    except Exception as e:  # noqa: BLE001 -- any failure to set up a peer is reported, not fatal
        notes.append(f"pytorch: skipped ({type(e).__name__}: {e})")
    try:
        import tensorflow as tf

        f = tf.function(lambda x: keras_model(x, training=False))
        out["tensorflow tf.function"] = lambda x: f(tf.constant(x)).numpy()
    except Exception as e:  # noqa: BLE001 -- any failure to set up a peer is reported, not fatal
        notes.append(f"tensorflow: skipped ({type(e).__name__}: {e})")
        return out
    try:
        from ai_edge_litert.interpreter import Interpreter

        conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        blob = conv.convert()
        interps = {}
        for b in batches:
            it = Interpreter(model_content=blob, num_threads=threads)
            inp = it.get_input_details()[0]["index"]
            it.resize_tensor_input(inp, [b, rows, rows, 3])
            it.allocate_tensors()
            interps[b] = it

        def tflite(x):
            it = interps[len(x)]
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            return it.get_tensor(it.get_output_details()[0]["index"])

        out["tflite xnnpack"] = tflite
    except Exception as e:  # noqa: BLE001
        notes.append(f"tflite: skipped ({type(e).__name__}: {e})")
    try:
        import onnxruntime as ort
        import tf2onnx

        spec = (tf.TensorSpec((None, rows, rows, 3), tf.float32, name="input"),)
        proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=13)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out["onnxruntime"] = lambda x: sess.run(None, {name: x})[0]
    except Exception as e:  # noqa: BLE001
        notes.append(f"onnxruntime: skipped ({type(e).__name__}: {e})")
    return out


# --- timing ----------------------------------------------------------------------------------------------------


def time_interleaved(runtimes, x, rounds, calls, min_seconds=0.3):
    """Median seconds per call for each runtime, calls interleaved round by round."""
    samples = {k: [] for k in runtimes}
    for f in runtimes.values():  # warm-up (and JIT) outside the timing
        f(x)
        f(x)
    for _ in range(rounds):
        for name, f in runtimes.items():
            time.sleep(0.05)  # let the previous runtime's idle threads stop spinning
            f(x)  # one untimed call: the pools of this runtime are awake
            n, t_start = 0, time.perf_counter()
            while n < calls or time.perf_counter() - t_start < min_seconds / rounds:
                t0 = time.perf_counter()
                f(x)
                samples[name].append(time.perf_counter() - t0)
                n += 1
                if name == "mnv2ref numpy" and len(x) > 1 and n >= 2:
                    break  # the slow reference: a few samples are enough
    return {k: statistics.median(v) for k, v in samples.items()}, {k: len(v) for k, v in samples.items()}


def layer_profile(alpha, rows, weights, batch, banded, repeats=20):
    """Per-layer time of the numba pass: each op call timed, matched to the Keras conv layers in order
    (a banded block is one call: its layers are reported together)."""
    import mnv2ref
    from mnv2ref import arch, forward, numba_ops

    m = mnv2ref.MobileNetV2(input_shape=(rows, rows, 3), alpha=alpha, weights=weights, backend="numba",
                            classifier_activation=None)
    x = np.random.default_rng(0).uniform(-1, 1, (batch, rows, rows, 3)).astype(np.float32)
    times = []

    class Timed:  # the numba ops, each call timed in order
        def __getattr__(self, name):
            f = getattr(numba_ops, name)

            def g(*a, **k):
                t0 = time.perf_counter()
                r = f(*a, **k)
                times.append((name, time.perf_counter() - t0))
                return r
            return g

    ops = Timed()
    per_call = []
    for _ in range(repeats):
        times.clear()
        forward.forward(x, m._params, alpha, ops=ops, activation=None, banded=banded)
        cur = [t for _, t in times]
        per_call.append(cur)
    med = np.median(np.array(per_call), axis=0)
    kinds = [k for k, _ in times]
    convs = [l for l in arch.layers(alpha, (rows, rows)) if l.macs]
    rows_out, i_conv = [], 0
    blocks = iter(arch.blocks(alpha))
    for kind, t in zip(kinds, med):
        if kind == "expand_depthwise_project":  # one banded block: its 2 or 3 conv layers at once
            spec = next(blocks)
            layers = convs[i_conv:i_conv + (3 if spec.has_expand else 2)]
            i_conv += len(layers)
            rows_out.append({"layer": spec.prefix + "(banded)", "op": "banded block", "shape": list(layers[-1].shape),
                             "ms": t * 1e3, "gflops": 2 * sum(l.macs for l in layers) * batch / t / 1e9})
        elif kind in ("conv3x3", "depthwise3x3", "pointwise", "dense"):
            if kind == "depthwise3x3":
                next(blocks)
            layer = convs[i_conv]
            i_conv += 1
            rows_out.append({"layer": layer.name, "op": kind, "shape": list(layer.shape), "ms": t * 1e3,
                             "gflops": 2 * layer.macs * batch / t / 1e9})
        else:
            rows_out.append({"layer": kind, "op": kind, "shape": [], "ms": t * 1e3, "gflops": None})
    return rows_out


def startup_times(alpha, rows, weights):
    """import + load + first predict in a fresh process: empty Numba cache, then warm."""
    code = ("import time; t0 = time.perf_counter(); import numpy as np, mnv2ref; "
            f"m = mnv2ref.MobileNetV2(input_shape=({rows}, {rows}, 3), alpha={alpha}, weights={weights!r}); "
            f"m(np.zeros((1, {rows}, {rows}, 3), np.float32)); print(time.perf_counter() - t0)")
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold cache", "warm cache"):
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            out[label] = float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else f"failed: {r.stderr[-300:]}"
    return out


# --- main ------------------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="1.0_224,0.35_96", help="alpha_rows list (default: 1.0_224,0.35_96)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=10, help="calls per runtime per round (at least)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 calls: a smoke run")
    ap.add_argument("--no-peers", action="store_true", help="only mnv2ref's two backends")
    ap.add_argument("--json", help="output path (default benchmarks/results/<date>-<host>.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.calls = 2, 3
    batches = [int(b) for b in args.batches.split(",")]
    notes, results = [], {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": cpu_name(),
                          "cores": os.cpu_count(), "threads": args.threads, "python": sys.version.split()[0],
                          "configs": {}}
    if not args.no_peers:
        try:  # TF's thread pools can only be sized before its runtime starts (first model built)
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        except ImportError:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in args.configs.split(","):
            a, r = cfg.split("_")
            alpha, rows = float(a), int(r)
            keras_model, weights = None, None
            if not args.no_peers:
                try:
                    keras_model, weights = keras_model_and_weights(alpha, rows, tmp)
                except ImportError as e:
                    notes.append(f"peers: skipped, TensorFlow/tf_keras not installed ({e})")
                    args.no_peers = True
            runtimes = mnv2ref_runtimes(alpha, rows, weights, args.threads)
            if keras_model is not None:
                runtimes.update(peer_runtimes(keras_model, alpha, rows, args.threads, batches, notes))
            res = {"batches": {}}
            for b in batches:
                x = np.random.default_rng(b).uniform(-1, 1, (b, rows, rows, 3)).astype(np.float32)
                ref = runtimes["mnv2ref numpy"](x)
                agree = {k: None if k == "pytorch eager" else  # its own random weights
                         float(np.abs(np.asarray(f(x)).reshape(ref.shape) - ref).max()) for k, f in runtimes.items()}
                med, n = time_interleaved(runtimes, x, args.rounds, args.calls)
                res["batches"][b] = {k: {"ms_per_image": med[k] * 1e3 / b, "images_per_s": b / med[k], "n": n[k],
                                         "max_abs_diff_vs_numpy": agree[k]} for k in runtimes}
                for k, f in runtimes.items():
                    if k.startswith("mnv2ref"):
                        res["batches"][b][k]["peak_memory_mb"] = peak_memory(f, x) / 1e6
                print_table(cfg, b, res["batches"][b])
            for key, banded in (("layers_batch1", False), ("blocks_batch1_banded", True)):
                res[key] = layer_profile(alpha, rows, weights, 1, banded)
                print_layers(cfg + (" banded" if banded else " whole tensors"), res[key])
            res["startup_s"] = startup_times(alpha, rows, weights)
            print(f"{cfg}: start-up (import + load + first prediction): {res['startup_s']}")
            results["configs"][cfg] = res
    results["notes"] = notes
    for n_ in notes:
        print("note:", n_)
    out = Path(args.json) if args.json else HERE / "results" / f"{time.strftime('%Y-%m-%d')}-{platform.node()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(results, indent=1))
    os.replace(tmp_out, out)
    print(f"results written to {out}")


def print_table(cfg, b, rows):
    ours = rows["mnv2ref numba"]["ms_per_image"]
    print(f"\n{cfg}  batch {b}")
    print(f"  {'runtime':<24} {'ms/image':>9} {'images/s':>9} {'numba is x faster':>18} {'max|diff|':>10} "
          f"{'peak MB':>8}")
    for k, v in sorted(rows.items(), key=lambda kv: kv[1]["ms_per_image"]):
        diff = "n/a" if v["max_abs_diff_vs_numpy"] is None else f"{v['max_abs_diff_vs_numpy']:.1e}"
        peak = f"{v['peak_memory_mb']:.1f}" if "peak_memory_mb" in v else "-"
        print(f"  {k:<24} {v['ms_per_image']:>9.3f} {v['images_per_s']:>9.1f} {v['ms_per_image'] / ours:>18.2f} "
              f"{diff:>10} {peak:>8}")


def print_layers(cfg, rows):
    tot = sum(r["ms"] for r in rows)
    by = {}
    for r in rows:
        by[r["op"]] = by.get(r["op"], 0) + r["ms"]
    print(f"\n{cfg} batch 1, numba pass by op: " + ", ".join(f"{k} {v:.3f} ms ({100 * v / tot:.0f}%)"
                                                         for k, v in sorted(by.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()

"""Whole-model speed the way users run it: every runtime in its own fresh process, rounds with the order rotated.

    python benchmarks/bench_model.py            # full run: writes benchmarks/results/<date>-<host>-<cpu>.json
    python benchmarks/bench_model.py --quick    # smoke run: 1 round, short series (…-quick.json)

Runtimes: mnv2ref (numba, the default backend; and numpy), TFLite float32 with XNNPACK (``ai-edge-litert``),
ONNX Runtime on the Keras model converted by ``tf2onnx``, TensorFlow (the tf_keras model in a
``tf.function``), and PyTorch eager when ``torch`` is installed (its own random weights: speed only). Peers
come from ``pip install -e ".[bench]"``; a missing one is skipped and the reason printed.

Method:

1. One process builds the Keras model with the fixtures' realistic random weights
   (``fixtures/generate.py``'s ``randomize``) and writes ``.h5`` weights, ``.tflite`` and ``.onnx`` into a
   temporary folder; every runtime process loads those files (same weights everywhere).
2. Start-up, per configuration, each in a fresh process: mnv2ref's **cold first prediction** at batch 1
   with an empty ``NUMBA_CACHE_DIR`` (seconds from process start and from model construction, and the
   Numba compile time per kernel from ``numba.core.event``'s ``numba:compile`` events), then its **warm
   start** (same process recipe, cache filled), the peers' cold first prediction, and
   ``mnv2ref predict one.png`` with an empty cache (the CLI answers with NumPy while the kernels compile in
   the background; the run then waits for that compile, ``mnv2ref compile``, so it disturbs nothing).
3. Steady state: ``--rounds`` rounds; in round r the runtime order is rotated by r; each (runtime,
   configuration) is one fresh process that times batch 1 then batch 32 after warm-up calls, each series
   behind the load gate described in ``bench_worker.py``. 2 threads everywhere (``--threads``).
4. Reported: ms per image, median of the per-round medians, and their min-max; the ratio of mnv2ref to the
   faster of TFLite and ONNX Runtime (ratio of the medians, and its range over the rounds) against issue 9's
   targets; peak memory of mnv2ref's pass (``tracemalloc``); max |difference| of every runtime's output from
   mnv2ref numpy's; machine facts (date, CPU, AVX2/AVX-512, versions, load). A JSON file (written
   atomically) and markdown tables on stdout, ready for the README. Ratios measured in one run are the
   claim; absolute times on a shared VM are not.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_stats as bs  # noqa: E402

WORKER = str(HERE / "bench_worker.py")
PACKAGES = ("numpy", "numba", "llvmlite", "tensorflow", "tf_keras", "ai-edge-litert", "onnxruntime", "tf2onnx",
            "onnx", "torch")


def machine_facts() -> dict:
    flags, model = set(), platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    try:
        import llvmlite.binding as ll

        llvm_cpu = ll.get_host_cpu_name()
    except Exception:  # noqa: BLE001 -- a fact we may not get
        llvm_cpu = None
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "other"
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(), "cpu": model,
            "llvm_cpu_name": llvm_cpu, "instruction_set": isa, "avx2": "avx2" in flags,
            "avx512f": "avx512f" in flags, "cores": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
            "python": sys.version.split()[0], "versions": versions}


def available(notes: list) -> list:
    """The runtimes whose packages are installed, in table order."""
    have = lambda *mods: all(importlib.util.find_spec(m) is not None for m in mods)  # noqa: E731
    need = {"mnv2ref numba": ("mnv2ref", "numba"), "mnv2ref numpy": ("mnv2ref",),
            "tflite xnnpack": ("ai_edge_litert", "tensorflow"), "onnxruntime": ("onnxruntime", "tf2onnx", "tensorflow"),
            "tensorflow tf.function": ("tensorflow", "tf_keras"), "pytorch eager": ("torch",)}
    out = []
    for rt in bs.RUNTIMES:
        if have(*need[rt]):
            out.append(rt)
        else:
            notes.append(f"{rt}: skipped (not installed: {', '.join(m for m in need[rt] if not have(m))})")
    return out


def worker(mode, env, *args, timeout=1800, t0=False) -> dict:
    """Run ``bench_worker.py mode args`` in a fresh process; its BENCH_RESULT, or {"error": ...}."""
    cmd = [sys.executable, WORKER, mode, *map(str, args)]
    if t0:
        cmd += ["--t0", repr(time.time())]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    return {"error": f"exit {p.returncode}: {(p.stderr or p.stdout)[-600:]}"}


def cli_first_answer(cfg, wd, env, image) -> dict:
    """``mnv2ref predict image`` with an empty Numba cache (fresh install), then wait for the background
    compile it started (``mnv2ref compile`` blocks on the same lock) so it disturbs no later run."""
    alpha, rows = cfg.split("_")
    e = dict(env, NUMBA_CACHE_DIR=str(wd / f"cache-cli-{cfg}"), MNV2REF_BACKGROUND_COMPILE="1")
    weights = wd / f"w_{cfg}.h5"
    cmd = [sys.executable, "-m", "mnv2ref", "predict", str(image), "--alpha", alpha, "--size", rows, "--json",
           "--weights", str(weights) if weights.exists() else "random"]
    t = time.time()
    p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600)
    out = {"from_start_s": time.time() - t, "exit": p.returncode, "stderr": p.stderr[-400:]}
    t = time.time()
    w = subprocess.run([sys.executable, "-m", "mnv2ref", "compile", "--dtype", "float32"], env=e,
                       capture_output=True, text=True, timeout=1800)
    out.update(background_compile_wait_s=time.time() - t, compile_exit=w.returncode)
    if p.returncode != 0:
        out["error"] = p.stderr[-400:]
    return out


def startups(cfgs, runtimes, wd, env, image, notes) -> dict:
    cold = {}
    for cfg in cfgs:
        cold[cfg] = {}
        e = dict(env, NUMBA_CACHE_DIR=str(wd / f"cache-{cfg}"))  # empty: nothing compiled yet
        if "mnv2ref numba" in runtimes:
            for label in ("mnv2ref numba", "mnv2ref numba warm"):
                r = worker("cold", e, "--runtime", "mnv2ref numba", "--config", cfg, "--workdir", wd, t0=True)
                cold[cfg][label] = r
                print(f"  {cfg} {label}: {r.get('from_start_s', r.get('error'))}", file=sys.stderr)
        for rt in ("tflite xnnpack", "onnxruntime", "tensorflow tf.function"):
            if rt in runtimes:
                cold[cfg][rt] = worker("cold", e, "--runtime", rt, "--config", cfg, "--workdir", wd, t0=True)
        if image is not None:
            cold[cfg]["mnv2ref cli predict"] = cli_first_answer(cfg, wd, env, image)
        for rt, r in cold[cfg].items():
            if "error" in r:
                notes.append(f"cold start {cfg} {rt}: {r['error'][-300:]}")
    return cold


def agreement(cfgs, batches, runtimes, wd) -> dict:
    import numpy as np

    out = {}
    for cfg in cfgs:
        for b in batches:
            ref_path = wd / f"out_mnv2ref_numpy_{cfg}_b{b}.npy"
            if not ref_path.exists():
                continue
            ref = np.load(ref_path)
            for rt in runtimes:
                p = wd / f"out_{rt.replace(' ', '_')}_{cfg}_b{b}.npy"
                if rt != "pytorch eager" and p.exists():
                    y = np.load(p)
                    diff = float(np.abs(y - ref).max())
                    out.setdefault(cfg, {}).setdefault(str(b), {})[rt] = {
                        "max_abs_diff": diff, "relative": diff / float(np.abs(ref).max()),
                        "argmax_agree": float((y.argmax(1) == ref.argmax(1)).mean())}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="1.0_224,0.35_96", help="alpha_rows list (default: 1.0_224,0.35_96)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtimes", help="comma-separated subset of: " + ", ".join(bs.RUNTIMES))
    ap.add_argument("--quick", action="store_true", help="1 round, short series, no load-gate waiting: a smoke run")
    ap.add_argument("--no-startup", action="store_true", help="skip the cold/warm start measurements")
    ap.add_argument("--gate-wait", type=float, default=20.0, help="seconds to wait for a quiet machine per series")
    ap.add_argument("--json", help="output path (default benchmarks/results/<date>-<host>-<cpu>[-quick].json)")
    args = ap.parse_args(argv)
    series_opts = ["--threads", args.threads, "--batches", args.batches, "--gate-wait", args.gate_wait]
    if args.quick:
        args.rounds = 1
        series_opts += ["--calls", 3, "--min-seconds", 0.2, "--warmup", 1, "--tries", 1, "--gate-wait", 1]
    t_run = time.time()
    notes = []
    facts = machine_facts()
    runtimes = available(notes)
    if args.runtimes:
        runtimes = [r for r in runtimes if r in args.runtimes.split(",")]
    cfgs, batches = args.configs.split(","), [int(b) for b in args.batches.split(",")]
    n = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, NUMBA_NUM_THREADS=n, MKL_NUM_THREADS=n,
               OPENBLAS_THREAD_TIMEOUT="4", TF_CPP_MIN_LOG_LEVEL="2", MNV2REF_BACKGROUND_COMPILE="0",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    result = {"machine": facts, "settings": {"rounds": args.rounds, "threads": args.threads, "quick": args.quick,
                                             "configs": cfgs, "batches": batches, "runtimes": runtimes}}
    with tempfile.TemporaryDirectory(prefix="mnv2ref-bench-") as tmp:
        wd = Path(tmp)
        print(f"benchmark: {', '.join(runtimes)}; {cfgs} x batch {batches}; {args.rounds} round(s)", file=sys.stderr)
        conv = {}
        if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("tf_keras"):
            for cfg in cfgs:
                conv[cfg] = worker("convert", env, "--config", cfg, "--workdir", wd)
                if "error" in conv[cfg]:
                    notes.append(f"conversion {cfg} failed: {conv[cfg]['error']}")
        else:
            notes.append("no TensorFlow: mnv2ref runs alone on weights=None random weights")
        result["conversions"] = conv
        image = None
        if importlib.util.find_spec("PIL"):
            from PIL import Image

            image = wd / "one.png"
            Image.new("RGB", (320, 240), (120, 160, 200)).save(image)
        if not args.no_startup:
            print("start-up (fresh processes, empty Numba cache)...", file=sys.stderr)
            result["startup"] = startups(cfgs, runtimes, wd, env, image, notes)
        series = []
        for r in range(args.rounds):
            for cfg in cfgs:
                e = dict(env, NUMBA_CACHE_DIR=str(wd / f"cache-{cfg}"))
                for rt in bs.rotation(runtimes, r):
                    res = worker("steady", e, "--runtime", rt, "--config", cfg, "--workdir", wd, "--round", r,
                                 *series_opts, *(["--save-outputs"] if r == 0 else []))
                    if "error" in res:
                        notes.append(f"round {r} {rt} {cfg}: {res['error'][-300:]}")
                        continue
                    series += res["series"]
                    print(f"  round {r} {cfg} {rt}: " + ", ".join(f"b{s['batch']} {s['ms_per_image']:.3g} ms/image"
                                                                 for s in res["series"]), file=sys.stderr)
        result["agreement"] = agreement(cfgs, batches, runtimes, wd)
    summary = bs.summarize(series)
    result.update(series=series, summary=summary, ratios=bs.targets(summary, series),
                  peak_memory_mb=peak_memory(series), notes=notes, duration_s=round(time.time() - t_run, 1))
    # The LLVM CPU name too: one host name can be a different CPU from one day to the next.
    name = (f"{time.strftime('%Y-%m-%d', time.gmtime())}-{platform.node()}-{result['machine']['llvm_cpu_name']}"
            f"{'-quick' if args.quick else ''}.json")
    out = Path(args.json) if args.json else HERE / "results" / name
    bs.write_json(out, result)
    print(report(result))
    print(f"\nresults written to {out} ({result['duration_s']:.0f} s)", file=sys.stderr)


def peak_memory(series) -> dict:
    out = {}
    for s in series:
        if "peak_memory_mb" in s:
            out.setdefault(s["config"], {}).setdefault(str(s["batch"]), {})[s["runtime"]] = s["peak_memory_mb"]
    return out


def report(res) -> str:
    m = res["machine"]
    gates = res["series"]
    lines = [f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['instruction_set']}; LLVM CPU "
             f"{m['llvm_cpu_name']}), numba {m['versions']['numba']}, {res['settings']['threads']} threads, "
             f"{res['settings']['rounds']} round(s){' (--quick: noisy smoke run)' if res['settings']['quick'] else ''}.",
             "", "ms per image, median of the rounds (min-max of the per-round medians); ratio = mnv2ref / the faster "
             "of TFLite and ONNX Runtime:", "", bs.speed_table(res["summary"], res["series"])]
    if gates:
        others = [s["others_cores"] for s in gates if s.get("others_cores") is not None]
        loads = [s["load1"] for s in gates]
        lines += ["", f"Load: {len(gates)} series, 1-min loadavg at series start {min(loads):.2f}-{max(loads):.2f}; "
                  f"{sum(s['gate_clean'] for s in gates)} started on a quiet machine; CPU used by other processes "
                  f"during a series {min(others, default=0):.2f}-{max(others, default=0):.2f} cores; "
                  f"{sum(s['tries'] > 1 for s in gates)} series repeated."]
    if res.get("startup"):
        lines += ["", bs.start_table(res["startup"]), "", "Cold compile time per kernel (self = nested compiles "
                  "excluded):", "", bs.kernel_table(res["startup"])]
    if res["peak_memory_mb"]:
        lines += ["", "| peak memory (tracemalloc), MB | " + " | ".join(
            f"{c} b{b} {rt.split()[1]}" for c, bb in res["peak_memory_mb"].items() for b, rr in bb.items() for rt in rr)
            + " |", "|---|" + "---|" * sum(len(rr) for bb in res["peak_memory_mb"].values() for rr in bb.values()),
            "| mnv2ref | " + " | ".join(f"{v:.1f}" for bb in res["peak_memory_mb"].values() for rr in bb.values()
                                       for v in rr.values()) + " |"]
    agree = [d for c in res.get("agreement", {}).values() for b in c.values() for d in b.values()]
    if agree:
        lines += ["", f"Outputs vs mnv2ref numpy's softmax: max |diff| / max |ref| <= "
                  f"{max(d['relative'] for d in agree):.1e}, argmax agreement >= "
                  f"{100 * min(d['argmax_agree'] for d in agree):.0f}% (every runtime, configuration and batch)."]
    lines += [f"note: {n}" for n in res["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

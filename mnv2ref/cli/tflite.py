"""``--tflite FILE`` for ``predict``, ``trace`` and ``summary``, and ``compare`` on integer traces.

The quantized model is ``mnv2ref.load_tflite`` (``mnv2ref.tflite``; extra ``mnv2ref[tflite]``). Each
command's parser gets the options with one ``extend(parser, command)`` call, which also routes the
command to this module when ``--tflite`` is given (``compare``: when the traces hold integer tensors).

Images -> the file's input (``to_input``): resized to the input tensor's H x W like ``keras.utils.load_img``
(``--interpolation``, ``--keep-aspect-ratio``), then

* float32 input: Keras's ``preprocess_input``, ``x = p / 127.5 - 1``;
* int8 / uint8 input, ``--pixels auto`` (default): the pixels themselves (``p``, or ``p - 128`` for int8)
  when the input's quantization is exactly ``p / 128 - 1`` (scale 1/128, zero point 128 for uint8 / 0
  for int8: the TF1-era files, e.g. Coral's, which TFLite's own examples feed raw pixels); otherwise
  ``x = p / 127.5 - 1`` quantized with the input's scale and zero point by TFLite's QUANTIZE
  (``round(x / s) + zp``, halves away from zero, clamped): what the converter's representative data
  (Keras preprocessing) calibrated. ``--pixels raw`` / ``--pixels keras`` force one rule.

A ``trace --tflite`` file holds one array per tensor the graph computes, under its TFLite tensor name,
input first, in graph order (``QuantizedModel.trace``), plus ``_tensors``: a JSON string with each
tensor's index, dtype, shape, scale, zero point and quantized dimension (``json.loads(z["_tensors"][()])``),
and ``_file``: the model's path, sha256 and the kernels used. Written atomically.

``compare A B`` switches to the exact integer comparison when a shared key holds integers in both files:
per tensor equal, or the count of differing elements, the largest difference in steps, the first
differing index (C order) with both values, and how many elements differ by 1, 2, 3, 4 and more steps. A golden of
``fixtures/int8`` (keys ``ref/<case>/<tensor index>``) is read by tensor name with ``--prefix-b ref/<case>/``.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter, OrderedDict

import numpy as np

from ..fileio import atomic_path, sha256_file
from . import common

PIXELS = ("auto", "raw", "keras")


# -- wiring -----------------------------------------------------------------------------------------------------

def extend(p, command: str):
    """Add this module's options to ``p`` (the ``command`` parser) and route to it when they apply."""
    inner = p.get_default("func")
    if command == "compare":
        p.set_defaults(func=lambda args: run_compare(args) if is_integer_compare(args) else inner(args))
        return p
    p.add_argument("--tflite", metavar="FILE",
                   help="a quantized TFLite MobileNetV2 (.tflite, int8/uint8) instead of Keras weights: run by "
                        "mnv2ref.load_tflite, bit for bit with TFLite's reference kernels")
    if command != "summary":
        p.add_argument("--kernels", choices=("reference", "numpy", "xnnpack"), default="reference",
                       help="with --tflite: TFLite's reference kernels (default; Numba), the same in NumPy only, "
                            "or the arithmetic of TFLite's default XNNPACK path")
        p.add_argument("--pixels", choices=PIXELS, default="auto",
                       help="with --tflite: how pixels become the input tensor (default auto; see "
                            "`mnv2ref predict --help`'s module docs: raw pixels for p/128-1 inputs, else Keras's "
                            "p/127.5-1 quantized with the input's scale and zero point)")
    if command == "predict":
        p.add_argument("--labels", metavar="FILE",
                       help="with --tflite: class names, one per line (as many as classes, or one fewer when "
                            "class 0 is 'background'); default: ImageNet's for 1000 / 1001 classes")
    if command == "summary":
        p.add_argument("--op", type=int, action="append", metavar="K",
                       help="with --tflite: only op K (repeatable), its per-channel arrays printed in full")
    run = {"predict": run_predict, "trace": run_trace, "summary": run_summary}[command]
    p.set_defaults(func=lambda args: run(args) if getattr(args, "tflite", None) else inner(args))
    return p


def load(args):
    from .. import load_tflite

    try:
        return load_tflite(args.tflite, kernels=getattr(args, "kernels", "reference"))
    except ImportError as e:
        raise common.CLIError(str(e)) from None


# -- inputs -----------------------------------------------------------------------------------------------------

def raw_convention(t) -> bool:
    """True when the input's quantization is exactly ``p / 128 - 1`` for pixels p (raw pixels are exact)."""
    if t.dtype not in (np.dtype(np.uint8), np.dtype(np.int8)) or t.scale.size != 1:
        return False
    return np.float32(t.scale[0]) == np.float32(1 / 128) and int(t.zero_point[0]) == 128 + np.iinfo(t.dtype).min


def to_input(pixels: np.ndarray, t, mode: str = "auto") -> np.ndarray:
    """(N, H, W, 3) pixels in [0, 255] -> the input tensor ``t``'s dtype (see the module docstring)."""
    from ..imagenet import preprocess_input
    from ..tflite import ops_ref

    pixels = np.asarray(pixels, np.float32)
    if t.dtype == np.float32:
        return preprocess_input(pixels.copy())
    if t.dtype not in (np.dtype(np.uint8), np.dtype(np.int8)):
        raise common.CLIError(f"{t.name!r}: input dtype {t.dtype} is not float32, int8 or uint8")
    if mode == "raw" or (mode == "auto" and raw_convention(t)):
        return (np.round(pixels) + np.iinfo(t.dtype).min).clip(np.iinfo(t.dtype).min,
                                                                np.iinfo(t.dtype).max).astype(t.dtype)
    x = preprocess_input(pixels.copy())
    return ops_ref.quantize(x, {"scale": np.float32(t.scale[0]), "zero_point": int(t.zero_point[0])}, t.dtype)


def pixels_rule(t, mode: str) -> str:
    if t.dtype == np.float32:
        return "p/127.5 - 1 (float32 input)"
    if mode == "raw" or (mode == "auto" and raw_convention(t)):
        return "raw pixels" + (" - 128" if t.dtype == np.int8 else "")
    zp = int(t.zero_point[0])
    return f"round((p/127.5 - 1) / {float(t.scale[0]):.7g}) {'-' if zp < 0 else '+'} {abs(zp)}"


def read_image(path: str, t, args) -> np.ndarray:
    """An image file, or a .npy array: fed as is if it has the input's dtype, else taken as pixels."""
    hw = tuple(t.shape[1:3])
    if path.lower().endswith(".npy"):
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise common.CLIError(f"cannot read {path!r}: {e}") from None
        x = x[None] if x.ndim == 3 else x
        if x.dtype == t.dtype:
            return x
        if x.ndim != 4 or tuple(x.shape[1:]) != hw + (3,):
            raise common.CLIError(f"{path!r}: pixels of shape {x.shape}; the model takes (N, {hw[0]}, {hw[1]}, 3)")
        return to_input(x, t, args.pixels)
    px = common.read_input(path, hw, args.interpolation, args.keep_aspect_ratio)
    return to_input(px, t, args.pixels)


def dequantize(y: np.ndarray, t) -> np.ndarray:
    if t.scale.size == 0 or not np.issubdtype(y.dtype, np.integer):
        return y.astype(np.float64)
    return (y.astype(np.float64) - float(t.zero_point[0])) * float(t.scale[0])


# -- predict ----------------------------------------------------------------------------------------------------

def read_labels(path: str | None, classes: int) -> list[tuple[str, str]]:
    """(wnid or "", class name) for ``classes`` outputs (see ``--labels``)."""
    if path is None:
        if classes in (1000, 1001):
            from ..imagenet import class_index

            idx = class_index()
            names = [tuple(idx[str(i)]) for i in range(1000)]
            return names if classes == 1000 else [("", "background")] + names
        return [("", f"class_{i}") for i in range(classes)]
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise common.CLIError(f"cannot read labels {path!r}: {e}") from None
    names = [("", n) for n in names]
    if len(names) == classes:
        return names
    if len(names) == classes - 1:
        return [("", "background")] + names
    raise common.CLIError(f"{path!r} has {len(names)} labels; the model has {classes} classes")


def run_predict(args) -> int:
    from . import predict as P

    if args.top < 1 or args.batch_size < 1:
        raise common.CLIError("--top and --batch-size must be positive")
    model = load(args)
    t_in, t_out = model.inputs[0], model.outputs[0]
    classes = int(t_out.shape[-1])
    labels = read_labels(args.labels, classes)
    fmt, out, files, todo = P.plan(args)
    k = min(args.top, classes)

    def top(q):
        """One image's output row (classes,) -> its top-k records, ties in class order."""
        score = dequantize(q, t_out)
        order = np.argsort(-q.astype(np.int64) if q.dtype.kind in "iu" else -q, kind="stable")[:k]
        recs = [{"rank": r + 1, "class_index": int(c), "wnid": labels[c][0], "label": labels[c][1],
                 "score": float(score[c])} for r, c in enumerate(order)]
        if fmt == "json":  # the raw output value too: what TFLite's output tensor holds
            for d, c in zip(recs, order):
                d["raw"] = q[c].item()
        return recs

    def classify(batch):
        return [top(y.reshape(-1)) for y in model.predict(np.stack(batch))]

    return P.run_batches(args, fmt, out, files, todo, lambda path: read_image(path, t_in, args)[0], classify)


# -- trace ------------------------------------------------------------------------------------------------------

def tensor_meta(t) -> dict:
    return {"index": int(t.index), "dtype": str(np.dtype(t.dtype)), "shape": [int(s) for s in t.shape],
            "scale": [float(s) for s in np.ravel(t.scale)], "zero_point": [int(z) for z in np.ravel(t.zero_point)],
            "quantized_dimension": int(t.quantized_dimension)}


def save_npz_atomic(path: str, arrays: dict, compress: bool):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)


def run_trace(args) -> int:
    import fnmatch

    from .trace import patterns, stats

    if args.float64:
        raise common.CLIError("--float64 is for Keras weights; a --tflite file computes in its own integer types")
    model = load(args)
    x = read_image(args.input, model.inputs[0], args)
    tensors = model.trace(x)
    pats = patterns(args.layers)
    keep = [n for i, n in enumerate(tensors) if i == 0 or not pats or any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if pats and len(keep) == 1:
        raise common.CLIError(f"no tensor matches {pats}; names look like {list(tensors)[1]!r} "
                              "(see `mnv2ref summary --tflite FILE`)")
    arrays = OrderedDict((n, tensors[n]) for n in keep)
    meta = {n: tensor_meta(model.tensors[n]) for n in keep}
    arrays["_tensors"] = np.array(json.dumps(meta))
    arrays["_file"] = np.array(json.dumps({"path": os.path.abspath(args.tflite), "sha256": sha256_file(args.tflite),
                                           "kernels": args.kernels,
                                           "pixels": pixels_rule(model.inputs[0], args.pixels)}))
    save_npz_atomic(args.out, arrays, args.compress)
    info = {n: {**stats(tensors[n]), **{k: meta[n][k] for k in ("scale", "zero_point")}} for n in keep}
    if args.json:
        common.dump_json({"out": args.out, "file": args.tflite, "kernels": args.kernels,
                          "tensors": [{"name": n, **s} for n, s in info.items()]})
        return 0
    w = min(max(len(short(n)) for n in keep), 48) + 2
    print(f"{'#':>3} {'tensor':<{w}}{'shape':<16}{'dtype':<8}{'scale':>11}{'zp':>5}{'min':>9}{'max':>9}{'mean':>10}")
    for i, n in enumerate(keep):
        s = info[n]
        sc = (f"{s['scale'][0]:.4g}" if len(s["scale"]) == 1 else f"{len(s['scale'])}ch") if s["scale"] else "-"
        zp = str(s["zero_point"][0]) if len(s["zero_point"]) == 1 else "-"
        print(f"{i:>3} {short(n)[:w - 2]:<{w}}{'x'.join(map(str, s['shape'])):<16}{s['dtype']:<8}{sc:>11}{zp:>5}"
              f"{s['min']:>9.4g}{s['max']:>9.4g}{s['mean']:>10.4g}")
    print(f"wrote {len(keep)} tensors (input first, graph order; kernels={args.kernels}; input: "
          f"{pixels_rule(model.inputs[0], args.pixels)}) and their quantization (_tensors) to {args.out}")
    return 0


def short(name: str) -> str:
    """The first of TFLite's ';'-joined graph names (the full name is in --json and the trace keys)."""
    return name.split(";")[0]


# -- summary ----------------------------------------------------------------------------------------------------

def plain(v):
    """JSON-able: arrays -> lists, NumPy scalars -> Python numbers, tuples -> lists."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def op_record(model, op) -> dict:
    def t(name):
        if name is None:
            return None
        return {"name": name, **tensor_meta(model.tensors[name])}
    return {"index": op.index, "op": op.name, "inputs": [t(n) for n in op.inputs], "outputs": [t(n) for n in op.outputs],
            "options": plain(op.options), "quant": plain(op.quant)}


def fmt_value(v, full: bool) -> str:
    a = np.asarray(v)
    if a.ndim == 0 or a.size == 1:
        x = a.reshape(-1)[0] if a.size else a
        return f"{x.item():.7g}" if a.dtype.kind == "f" else str(x.item() if hasattr(x, "item") else x)
    lo, hi = a.min(), a.max()
    if lo == hi:  # e.g. a per-tensor multiplier repeated per channel
        return f"[{a.size}] all {lo:.7g}" if a.dtype.kind == "f" else f"[{a.size}] all {lo}"
    if full or a.size <= 4:
        return "[" + ", ".join(f"{x:.7g}" if a.dtype.kind == "f" else str(x) for x in a.reshape(-1).tolist()) + "]"
    return f"[{a.size}] {lo:.7g}..{hi:.7g}" if a.dtype.kind == "f" else f"[{a.size}] {lo}..{hi}"


def fmt_tensor(role: str, t: dict | None, full: bool) -> str:
    if t is None:
        return f"    {role:<4} (none)"
    q = ""
    if t["scale"]:
        q = f"  scale {fmt_value(np.array(t['scale'], np.float32), full)}  zp {fmt_value(np.array(t['zero_point']), full)}"
    return f"    {role:<4} {'x'.join(map(str, t['shape'])):<14}{t['dtype']:<8}{short(t['name'])}{q}"


def run_summary(args) -> int:
    model = load(args)
    ops = model.ops if not args.op else [model.ops[k] for k in args.op if 0 <= k < len(model.ops)]
    if args.op and len(ops) != len(args.op):
        raise common.CLIError(f"--op: the file has ops 0..{len(model.ops) - 1}")
    recs = [op_record(model, op) for op in ops]
    counts = Counter(op.name for op in model.ops)
    head = {"file": args.tflite, "sha256": sha256_file(args.tflite), "n_ops": len(model.ops),
            "op_counts": dict(counts), "input": {"name": model.inputs[0].name, **tensor_meta(model.inputs[0])},
            "output": {"name": model.outputs[0].name, **tensor_meta(model.outputs[0])}}
    if args.json:
        common.dump_json({**head, "ops": recs})
        return 0
    full = bool(args.op)
    print(f"{os.path.basename(args.tflite)}: {len(model.ops)} ops ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    print(fmt_tensor("in", head["input"], True).strip() + "\n" + fmt_tensor("out", head["output"], True).strip())
    roles = {"CONV_2D": ("in", "w", "b"), "DEPTHWISE_CONV_2D": ("in", "w", "b"), "FULLY_CONNECTED": ("in", "w", "b"),
             "ADD": ("in1", "in2")}
    for r in recs:
        o = r["options"]
        opts = " ".join(f"{k}={plain(v)}" for k, v in o.items() if v not in (None, "NONE") and k != "fused_activation")
        print(f"\nop {r['index']}  {r['op']}  {opts}")
        names = roles.get(r["op"], ("in", "arg", "arg"))
        for i, t in enumerate(r["inputs"]):
            print(fmt_tensor(names[i] if i < len(names) else "arg", t, full))
        for t in r["outputs"]:
            print(fmt_tensor("out", t, full))
        if r["quant"]:
            items = [f"{k} {fmt_value(v, full) if isinstance(v, np.ndarray) else plain(v)}"
                     for k, v in op_quant(model, r["index"]).items()]
            print("    quant " + "; ".join(items))
    if not full:
        print("\nper-channel arrays are shown as [count] min..max: `--op K` prints them in full, --json gives all")
    return 0


def op_quant(model, index: int) -> dict:
    return next(op.quant for op in model.ops if op.index == index)


# -- compare ----------------------------------------------------------------------------------------------------

def load_trace(path: str, prefix: str) -> dict:
    """A trace's arrays by tensor name; a golden's ``<prefix><tensor index>`` keys are renamed by its ``name``."""
    from .trace import load_layers

    arrays = load_layers(path, prefix)
    if arrays and all(k.isdigit() for k in arrays):
        with np.load(path, allow_pickle=False) as z:
            if "index" in z.files and "name" in z.files:
                names = dict(zip((int(i) for i in z["index"]), (str(n) for n in z["name"])))
                arrays = OrderedDict((names.get(int(k), k), a) for k, a in arrays.items())
    return arrays


def is_integer_compare(args) -> bool:
    try:
        A, B = load_trace(args.a, args.prefix_a), load_trace(args.b, args.prefix_b)
    except common.CLIError:
        return False  # the float compare reports it
    return any(A[k].dtype.kind in "iu" and B[k].dtype.kind in "iu" for k in A if k in B)


def diff_row(name: str, a: np.ndarray, b: np.ndarray, steps_ok: float) -> dict:
    row = {"name": name, "shape_a": list(a.shape), "shape_b": list(b.shape), "dtype_a": str(a.dtype),
           "dtype_b": str(b.dtype)}
    if a.shape != b.shape:
        return {**row, "ok": False, "error": f"shape {a.shape} vs {b.shape}"}
    integer = a.dtype.kind in "iub" and b.dtype.kind in "iub"
    d = a.astype(np.int64) - b.astype(np.int64) if integer else a.astype(np.float64) - b.astype(np.float64)
    nz = np.flatnonzero(d)
    row.update(n=int(d.size), differing=int(nz.size), integer=bool(integer))
    if nz.size == 0:
        return {**row, "ok": True, "max_diff": 0}
    ad = np.abs(d)
    first = tuple(int(i) for i in np.unravel_index(int(nz[0]), d.shape))
    worst = tuple(int(i) for i in np.unravel_index(int(ad.argmax()), d.shape))
    row.update(max_diff=ad.max().item(), first_index=list(first), first_a=a[first].item(), first_b=b[first].item(),
               max_index=list(worst), ok=bool(ad.max() <= steps_ok))
    if integer:
        nzd = ad[ad > 0]
        steps = {str(k): int((nzd == k).sum()) for k in range(1, 5)}
        steps[">4"] = int((nzd > 4).sum())
        row["by_steps"] = {k: v for k, v in steps.items() if v}
    return row


def compare_traces(a_path, b_path, prefix_a="", prefix_b="", steps_ok: float = 0) -> dict:
    A, B = load_trace(a_path, prefix_a), load_trace(b_path, prefix_b)
    rows = [diff_row(k, A[k], B[k], steps_ok) for k in A if k in B]
    first = next((r["name"] for r in rows if r.get("differing") or r.get("error")), None)
    bad = next((r["name"] for r in rows if not r["ok"]), None)
    return {"a": a_path, "b": b_path, "mode": "exact", "max_steps_allowed": steps_ok, "tensors": rows,
            "first_difference": first, "first_failure": bad, "ok": bool(rows) and bad is None,
            "only_in_a": [k for k in A if k not in B], "only_in_b": [k for k in B if k not in A]}


def run_compare(args) -> int:
    res = compare_traces(args.a, args.b, args.prefix_a, args.prefix_b, args.atol)
    if args.json:
        common.dump_json(res)
        return 0 if res["ok"] else 1
    rows = res["tensors"]
    w = min(max(len(short(r["name"])) for r in rows), 56) + 2
    print(f"A: {args.a}\nB: {args.b} (reference)\nexact integer comparison"
          + (f", up to {args.atol:g} steps allowed" if args.atol else "") + "\n")
    print(f"{'#':>3} {'tensor':<{w}}{'shape':<15}{'differ':>9}{'max':>6}  first differing index (A vs B)   steps")
    for i, r in enumerate(rows):
        if args.failures_only and r["ok"] and not r.get("differing"):
            continue
        shape = "x".join(map(str, r["shape_a"]))
        if r.get("error"):
            status = "FAIL " + r["error"]
            print(f"{i:>3} {short(r['name'])[:w - 2]:<{w}}{shape:<15}{'':>9}{'':>6}  {status}")
            continue
        if not r["differing"]:
            print(f"{i:>3} {short(r['name'])[:w - 2]:<{w}}{shape:<15}{0:>9}{0:>6}  equal")
            continue
        where = f"{tuple(r['first_index'])} {r['first_a']} vs {r['first_b']}"
        steps = " ".join(f"{k}:{v}" for k, v in r.get("by_steps", {}).items())
        mark = "   <-- first difference" if r["name"] == res["first_difference"] else ""
        print(f"{i:>3} {short(r['name'])[:w - 2]:<{w}}{shape:<15}{r['differing']:>9}{r['max_diff']:>6.4g}  "
              f"{where:<32}{steps}{mark}")
    for side in ("a", "b"):
        only = res[f"only_in_{side}"]
        if only:
            print(f"only in {side.upper()} ({len(only)}): {', '.join(short(n) for n in only[:6])}"
                  f"{' ...' if len(only) > 6 else ''}")
    n_diff = sum(bool(r.get("differing")) or bool(r.get("error")) for r in rows)
    if res["ok"] and not n_diff:
        print(f"\nall {len(rows)} common tensors equal")
        return 0
    first = next(r for r in rows if r["name"] == res["first_difference"])
    detail = first.get("error") or (f"{first['differing']} of {first['n']} elements differ, by up to "
                                    f"{first['max_diff']:.4g}; first at {tuple(first['first_index'])}")
    verdict = "within the allowed steps" if res["ok"] else "differ"
    print(f"\n{n_diff} of {len(rows)} tensors {verdict}; first: {first['name']} ({detail})")
    return 0 if res["ok"] else 1

"""``mnv2ref trace`` (every intermediate tensor to a plain .npz) and ``mnv2ref compare`` (two such files).

A trace file holds ``input`` (pixels, 0..255, before preprocessing),
``preprocessed`` (after ``preprocess_input``) and one array per Keras layer,
under the Keras layer name, in model order -- nothing else, so NumPy, a
TensorFlow dump (see the README, "mnv2ref compare") or any port can write or read the same keys.
"""
from __future__ import annotations

import argparse
import fnmatch
import math
import sys

import numpy as np

from . import common, tflite


def add_parsers(sub):
    p = sub.add_parser(
        "trace", help="every layer's output for one input, under its Keras name, to a .npz",
        description="Run one image (or a .npy / .npz 'input' array of pixels 0..255) through the model and save "
                    "every intermediate tensor under its Keras layer name, plus 'input' and 'preprocessed', in a "
                    "plain .npz. Conv layers hold the convolution before batch-norm, exactly like Keras's conv "
                    "layer outputs. Prints min / max / mean / std per layer.",
        epilog="examples:\n  mnv2ref trace cat.jpg --weights w_0.35_96.h5 --out ours.npz\n"
               "  mnv2ref trace cat.jpg --weights w.h5 --out dw.npz --layers '*depthwise*' --float64\n"
               "  mnv2ref trace fixtures/golden_0.35_96.npz --weights w.h5 --out ours.npz   # its 'input' array",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IMAGE", help="image file, .npy array (H,W,3)/(N,H,W,3), or .npz with 'input'")
    common.add_weights_arg(p)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--layers", action="append", metavar="PATTERN",
                   help="keep only layers matching this shell pattern (e.g. 'block_2_*'); repeatable or "
                        "comma-separated; 'input' and 'preprocessed' are always kept")
    p.add_argument("--float64", action="store_true", help="run the float64 reference pass")
    common.add_alpha_arg(p)
    common.add_size_args(p, default_help="from the weights file name, or the input array; 224 otherwise")
    common.add_model_shape_args(p)
    common.add_image_args(p)
    common.add_backend_arg(p, "numpy", ", the readable reference pass: one image needs no compiled kernels")
    p.add_argument("--compress", action="store_true", help="np.savez_compressed instead of np.savez")
    p.add_argument("--json", action="store_true", help="print the per-layer statistics as JSON")
    p.set_defaults(func=run_trace)
    tflite.extend(p, "trace")  # --tflite FILE, --kernels, --pixels (cli/tflite.py)

    c = sub.add_parser(
        "compare", help="two trace .npz files, layer by layer: max abs / relative error, first failing layer",
        description="For every key the two files share (in A's order): max|a-b|, the relative error "
                    "max|a-b| / max|b| (B is the reference) and the cosine similarity. A layer fails when its "
                    "relative error exceeds --rtol and its max abs error exceeds --atol. Keys 'layer/<name>' (the "
                    "golden fixtures' layout) are read as '<name>'. Exit status 0 when every layer passes, 1 when "
                    "one fails (the first is named), 2 when nothing can be compared.",
        epilog="examples:\n  mnv2ref compare ours.npz tf_dump.npz\n"
               "  mnv2ref compare my_port.npz ours.npz --rtol 1e-4 --json\n"
               "  mnv2ref compare ours.npz fixtures/golden_0.5_97x131_avg.npz --prefix-b static/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("a", metavar="A.npz")
    c.add_argument("b", metavar="B.npz", help="the reference")
    from ..compare import TOLERANCE

    c.add_argument("--rtol", type=float, default=TOLERANCE["float32"],
                   help=f"max relative error max|a-b|/max|b| per layer (default {TOLERANCE['float32']:g}, what "
                        "separates a correct float32 port from a bug)")
    c.add_argument("--atol", type=float, default=0.0, help="a layer also passes when max|a-b| <= atol (default 0)")
    c.add_argument("--prefix-a", default="", help="use only A's keys starting with this prefix (stripped)")
    c.add_argument("--prefix-b", default="", help="use only B's keys starting with this prefix (stripped)")
    c.add_argument("--failures-only", action="store_true", help="print only the failing layers and the verdict")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=run_compare)
    tflite.extend(c, "compare")  # integer traces: exact comparison (cli/tflite.py)


# -- trace ----------------------------------------------------------------------------------------------------------

def patterns(values) -> list[str]:
    return [p.strip() for v in (values or []) for p in v.split(",") if p.strip()]


def stats(a: np.ndarray) -> dict:
    a64 = np.asarray(a, np.float64)
    return {"shape": list(a.shape), "dtype": str(a.dtype), "min": float(a64.min()), "max": float(a64.max()),
            "mean": float(a64.mean()), "std": float(a64.std())}


def run_trace(args) -> int:
    from ..imagenet import preprocess_input

    hw_in = common.input_hw_of(args.input)
    model, cfg = common.build_model(args, input_hw=hw_in, dtype="float64" if args.float64 else "float32")
    hw = model.input_shape[1:3] if model.static else None
    x = common.read_input(args.input, hw, args.interpolation, args.keep_aspect_ratio)
    pre = preprocess_input(x.copy())  # float32, bit-identical to Keras; the float64 model casts it
    layers = model.trace(pre)
    pats = patterns(args.layers)
    keep = [n for n in layers if not pats or any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if pats and not keep:
        raise common.CLIError(f"no layer matches {pats}; layer names look like 'block_2_expand_relu' "
                              "(see `mnv2ref summary`)")
    arrays = {"input": x, "preprocessed": pre, **{n: layers[n] for n in keep}}
    (np.savez_compressed if args.compress else np.savez)(args.out, **arrays)
    info = {n: stats(a) for n, a in arrays.items()}
    if args.json:
        common.dump_json({"out": args.out, "model": model.name, "dtype": str(model.dtype),
                          "weights": cfg.get("weights"),
                          "arrays": [{"name": n, **s} for n, s in info.items()]})
        return 0
    w = max(len(n) for n in arrays) + 2
    print(f"{'key':<{w}}{'shape':<18}{'min':>11}{'max':>11}{'mean':>11}{'std':>11}")
    for n, s in info.items():
        print(f"{n:<{w}}{'x'.join(map(str, s['shape'])):<18}{s['min']:>11.4g}{s['max']:>11.4g}"
              f"{s['mean']:>11.4g}{s['std']:>11.4g}")
    mb = sum(a.nbytes for a in arrays.values()) / 2**20
    print(f"wrote {len(arrays)} arrays ({len(keep)} layers + input, preprocessed; {mb:.1f} MiB, {model.dtype}) "
          f"to {args.out}")
    return 0


# -- compare --------------------------------------------------------------------------------------------------------

def load_layers(path: str, prefix: str = "") -> dict:
    """Numeric arrays of a .npz by normalised key: optional ``prefix`` stripped, then a leading 'layer/'."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic[:2] != b"PK":
            raise ValueError("not an .npz (zip) file" + (" but a single .npy array" if magic == b"\x93NUMPY" else ""))
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise common.CLIError(f"cannot read {path!r} as .npz: {e}") from None
    out = {}
    with z:
        for k in z.files:
            if prefix and not k.startswith(prefix):
                continue
            name = k[len(prefix):]
            name = name[len("layer/"):] if name.startswith("layer/") else name
            a = z[k]
            if a.dtype.kind in "fiub" and a.ndim > 0:
                out[name] = a
    if not out:
        raise common.CLIError(f"{path!r} has no numeric arrays" + (f" under prefix {prefix!r}" if prefix else ""))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def compare_files(a_path, b_path, rtol, atol, prefix_a="", prefix_b="") -> dict:
    from ..compare import layer_error

    A, B = load_layers(a_path, prefix_a), load_layers(b_path, prefix_b)
    common_keys = [k for k in A if k in B]
    rows, first = [], None
    for k in common_keys:
        row = {"name": k, "shape_a": list(A[k].shape), "shape_b": list(B[k].shape)}
        try:
            e = layer_error(k, A[k], B[k])
        except AssertionError as err:
            row.update(max_abs=None, max_ref=None, rel=None, cosine=None, where=None, ok=False, error=str(err))
        else:
            ok = bool(e.rel <= rtol or e.max_abs <= atol)
            row.update(max_abs=e.max_abs, max_ref=e.ref_max, rel=e.rel, where=list(e.index),
                       cosine=cosine(A[k], B[k]), ok=ok)
        rows.append(row)
        if not row["ok"] and first is None:
            first = k
    return {"a": a_path, "b": b_path, "rtol": rtol, "atol": atol, "layers": rows, "first_failure": first,
            "ok": bool(rows) and first is None, "only_in_a": [k for k in A if k not in B],
            "only_in_b": [k for k in B if k not in A]}


def _num(v):
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.3g}"


def prefix_hint(res) -> str:
    """When one file's keys carry a 'xxx/' prefix the other's lack, say which --prefix option to use."""
    for side in ("a", "b"):
        pre = sorted({k.split("/")[0] + "/" for k in res[f"only_in_{side}"] if "/" in k})
        if pre:
            return f"hint: {side.upper()} has keys under {', '.join(pre)}: select them with --prefix-{side} {pre[0]}"
    return ""


def run_compare(args) -> int:
    res = compare_files(args.a, args.b, args.rtol, args.atol, args.prefix_a, args.prefix_b)
    if not res["layers"]:
        msg = (f"no common keys: A has {list(res['only_in_a'])[:4]}..., B has {list(res['only_in_b'])[:4]}... "
               + (prefix_hint(res) or "(try --prefix-a / --prefix-b)"))
        if args.json:
            common.dump_json({**res, "error": msg})
        else:
            print(f"mnv2ref compare: {msg}", file=sys.stderr)
        return 2
    if args.json:
        common.dump_json(res)
        return 0 if res["ok"] else 1
    w = max(len(r["name"]) for r in res["layers"]) + 2
    print(f"A: {args.a}\nB: {args.b} (reference)\n")
    print(f"{'layer':<{w}}{'shape':<16}{'max|a-b|':>11}{'max|b|':>10}{'rel':>11}{'1-cosine':>10}  status")
    for r in res["layers"]:
        if args.failures_only and r["ok"]:
            continue
        shape = "x".join(map(str, r["shape_a"]))
        if r.get("error"):
            status = "FAIL shape " + "x".join(map(str, r["shape_a"])) + " vs " + "x".join(map(str, r["shape_b"]))
        else:
            status = "ok" if r["ok"] else "FAIL"
        if r["name"] == res["first_failure"]:
            status += "   <-- first over tolerance"
        cos = "-" if r["cosine"] is None else f"{max(0.0, 1 - r['cosine']):.2g}"
        print(f"{r['name']:<{w}}{shape:<16}{_num(r['max_abs']):>11}{_num(r['max_ref']):>10}{_num(r['rel']):>11}"
              f"{cos:>10}  {status}")
    for side in ("a", "b"):
        only = res[f"only_in_{side}"]
        if only:
            print(f"only in {side.upper()} ({len(only)}): {', '.join(only[:8])}{' ...' if len(only) > 8 else ''}")
    hint = prefix_hint(res)
    if hint:
        print(hint)
    n_bad = sum(not r["ok"] for r in res["layers"])
    tol = f"rel <= {args.rtol:g}" + (f" or abs <= {args.atol:g}" if args.atol else "")
    if res["ok"]:
        worst = max(res["layers"], key=lambda r: r["rel"])
        print(f"\nall {len(res['layers'])} common layers within {tol}; worst {worst['name']} rel {worst['rel']:.3g}"
              + (f" (but {len(res['only_in_a'])} keys only in A, {len(res['only_in_b'])} only in B)"
                 if len(res["only_in_a"]) + len(res["only_in_b"]) > len(res["layers"]) else ""))
        return 0
    first = next(r for r in res["layers"] if r["name"] == res["first_failure"])
    detail = first.get("error") or f"rel {first['rel']:.3g}, max|a-b| {first['max_abs']:.3g} at {tuple(first['where'])}"
    print(f"\n{n_bad} of {len(res['layers'])} layers over tolerance ({tol}); first: {first['name']} ({detail})")
    return 1

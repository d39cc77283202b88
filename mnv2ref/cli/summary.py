"""``mnv2ref summary`` (every layer, or the paper's Table 2 view) and ``mnv2ref table`` (the 22 published models)."""
from __future__ import annotations

import argparse
import json
from importlib import resources

from . import common, tflite

CONVENTION = ("MACs: 1 multiply + 1 add = 1; convolutions, depthwise convolutions and the classifier only "
              "(batch-norm, ReLU6, padding, residual adds and pooling count 0). Params: every array, batch-norm's "
              "four included (Keras's count_params). Memory: bytes of each layer's output, one image, float32.")


def add_parsers(sub):
    p = sub.add_parser(
        "summary", help="every layer: Keras name, shape, params, multiply-adds, memory (or --table2)",
        description="Every Keras layer of MobileNetV2 with its output shape, parameters, multiply-adds and "
                    "activation memory, computed from the architecture (no weights needed). " + CONVENTION,
        epilog="examples:\n  mnv2ref summary\n  mnv2ref summary --alpha 0.35 --size 96 --json\n"
               "  mnv2ref summary --alpha 0.5 --table2\n  mnv2ref summary --alpha 0.5 --input-shape 97 131 --no-top",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0)")
    common.add_size_args(p, default_help="224")
    p.add_argument("--no-top", action="store_true", help="without global pooling and the classifier")
    p.add_argument("--pooling", choices=("avg", "max"), help="pooling of a --no-top model")
    p.add_argument("--classes", type=int, default=1000, help="classifier width (default 1000)")
    p.add_argument("--dynamic", action="store_true",
                   help="a --no-top model built with input_shape=(None, None, 3): stride-2 padding as Keras pads it "
                        "then (matters for odd sizes)")
    p.add_argument("--table2", action="store_true",
                   help="the compact stage view of the paper's Table 2 (input, operator, t, c, n, s) instead")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_summary)
    tflite.extend(p, "summary")  # --tflite FILE, --op (cli/tflite.py)

    t = sub.add_parser(
        "table", help="the 22 published models: computed vs published multiply-adds and parameters",
        description="Multiply-adds (conv + depthwise + classifier, floored to millions) and parameters (no "
                    "batch-norm, rounded to 0.01 M) computed from the architecture, next to the published figures "
                    "(and accuracies) of the MobileNetV2 table. Exit status 1 if any computed figure differs.")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.set_defaults(func=run_table)


def run_summary(args) -> int:
    from .. import summary

    hw = common.requested_hw(args) or (224, 224)
    if min(hw) < 32:
        raise common.CLIError(f"input size must be at least 32x32, got {hw[0]}x{hw[1]}")
    top = not args.no_top
    if args.pooling and top:
        raise common.CLIError("--pooling applies to a --no-top model only")
    if args.dynamic and top:
        raise common.CLIError("--dynamic applies to a --no-top model only (a model with its top has a fixed size)")
    static_hw = (None, None) if args.dynamic else None
    name = f"mobilenetv2_{args.alpha:0.2f}_{hw[0] if hw[0] == hw[1] else str(hw[0]) + 'x' + str(hw[1])}"
    title = (f"Model: {name} (alpha {args.alpha}, input {hw[0]}x{hw[1]}x3, "
             f"{'with top' if top else 'no top' + (', pooling ' + args.pooling if args.pooling else '')}"
             f"{', dynamic input shape' if args.dynamic else ''})")
    if args.table2:
        if not top or args.dynamic:
            raise common.CLIError("--table2 shows the whole network: drop --no-top / --dynamic")
        rows = summary.table2(args.alpha, hw, args.classes)
        if args.json:
            common.dump_json({"model": name, "alpha": args.alpha, "input_shape": [hw[0], hw[1], 3], "table2": rows})
        else:
            print(summary.format_table2(rows, title))
        return 0
    rows = summary.layer_rows(args.alpha, hw, top, args.pooling, args.classes, static_hw)
    if args.json:
        common.dump_json({"model": name, "alpha": args.alpha, "input_shape": [hw[0], hw[1], 3], "include_top": top,
                          "pooling": args.pooling, "dynamic": args.dynamic, "convention": CONVENTION,
                          "layers": rows, "totals": summary.totals(rows)})
    else:
        print(summary.format_layers(rows, title))
    return 0


def published() -> list[dict]:
    """The 22 published rows shipped with the package (mnv2ref/data/published.json)."""
    with resources.files("mnv2ref").joinpath("data/published.json").open("r", encoding="utf-8") as f:
        return json.load(f)["models"]


def table_rows() -> list[dict]:
    from .. import arch

    pub = {(p["alpha"], p["rows"]): p for p in published()}
    rows = []
    for alpha, r in arch.PUBLISHED:
        macs, params = arch.published_row(alpha, r)
        p = pub[(alpha, r)]
        rows.append({"model": f"mobilenet_v2_{alpha}_{r}", "macs_millions": macs, "params_millions": params,
                     "macs_exact": arch.count_macs(alpha, (r, r)), "params_exact": arch.published_params(alpha),
                     "published_macs_millions": p["macs_millions"],
                     "published_params_millions": p["params_millions"],
                     "match": macs == p["macs_millions"] and abs(params - p["params_millions"]) < 1e-9,
                     "top1": p["top1"], "top5": p["top5"]})
    return rows


def run_table(args) -> int:
    rows = table_rows()
    if args.json:
        common.dump_json(rows)
    else:
        print(f"{'model':<24}{'MACs (M)':>9}{'published':>10}{'params (M)':>11}{'published':>10}  {'match':<6}"
              f"{'top-1':>6}{'top-5':>6}{'exact MACs':>14}{'exact params':>14}")
        for r in rows:
            print(f"{r['model']:<24}{r['macs_millions']:>9}{r['published_macs_millions']:>10}"
                  f"{r['params_millions']:>11.2f}{r['published_params_millions']:>10.2f}  "
                  f"{'yes' if r['match'] else 'NO':<6}{r['top1']:>6.1f}{r['top5']:>6.1f}"
                  f"{r['macs_exact']:>14,}{r['params_exact']:>14,}")
        n = sum(r["match"] for r in rows)
        print(f"{n} of {len(rows)} computed rows match the published table. MACs: convs + depthwise + classifier, "
              "floored; params: no batch-norm. Accuracies are the published ImageNet figures (not measured here).")
    return 0 if all(r["match"] for r in rows) else 1

"""The ``mnv2ref`` command (also ``python -m mnv2ref``)."""
from __future__ import annotations

import argparse
import json
import sys


def cmd_verify(args) -> int:
    from .verify import as_json, report, verify

    try:
        manifest, results = verify(args.fixtures)
    except FileNotFoundError as e:
        print(f"mnv2ref verify: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(as_json(manifest, results), indent=1))
    else:
        print(report(manifest, results))
    return 0 if all(not r.failures for r in results) else 1


def cmd_table(args) -> int:
    from . import arch

    rows = []
    for alpha, r in arch.PUBLISHED:
        macs, params = arch.published_row(alpha, r)
        rows.append({"model": f"mobilenet_v2_{alpha}_{r}", "macs_millions": macs, "params_millions": params,
                     "macs_exact": arch.count_macs(alpha, (r, r)), "params_exact": arch.published_params(alpha)})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'model':<24} {'MACs (M)':>9} {'params (M)':>10}   exact MACs  exact params")
        for row in rows:
            print(f"{row['model']:<24} {row['macs_millions']:>9} {row['params_millions']:>10.2f}  "
                  f"{row['macs_exact']:>11,} {row['params_exact']:>13,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mnv2ref", description="Keras's MobileNetV2, exact and framework-free.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check against the TensorFlow golden fixtures, per stage",
                       description="Run the golden fixtures (weights written by Keras, every layer computed by "
                                   "TensorFlow) through mnv2ref in float32 and float64 and print the agreement "
                                   "per stage. Exit status 1 if any layer is over tolerance.")
    v.add_argument("--fixtures", help="fixture folder (default: the repository's fixtures/)")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(func=cmd_verify)
    t = sub.add_parser("table", help="the 22 published models' multiply-adds and parameters, computed",
                       description="Multiply-adds (conv + depthwise + classifier, floored to millions) and "
                                   "parameters (no batch-norm, rounded to 0.01 M) computed from the architecture.")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.set_defaults(func=cmd_table)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``mnv2ref`` command (also ``python -m mnv2ref``).

Subcommands (each has ``--help``; human-readable output by default, ``--json`` for programs):

    predict   top-k ImageNet classes for images and folders       (cli/predict.py)
    summary   every layer: shape, params, MACs, memory; --table2   (cli/summary.py, summary.py)
    table     the 22 published models, computed vs published       (cli/summary.py)
    trace     every layer's output for one input, to a .npz        (cli/trace.py)
    compare   two trace files layer by layer, first failing layer  (cli/trace.py)
    export    weights for porters: BN folded, HWIO/OIHW, manifest  (cli/export.py, export.py)
    show      a layer's or a block's feature maps as a PNG grid    (cli/show.py, show.py)
    verify    the TensorFlow golden fixtures, per stage            (verify.py)
    compile   the Numba kernels, ahead of time for this machine    (cli/compile.py)

predict, trace and summary take ``--tflite FILE`` (a quantized TFLite file) and compare compares integer
traces exactly (cli/tflite.py).

Exit status: 0 success; 1 a check failed (compare, verify, table); 2 usage or input error.
Set MNV2REF_DEBUG=1 to see tracebacks instead of one-line errors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def cmd_verify(args) -> int:
    from .verify import as_json, report, verify

    try:
        manifest, results = verify(args.fixtures, **({"backend": args.backend} if args.backend else {}))
    except FileNotFoundError as e:
        print(f"mnv2ref verify: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(as_json(manifest, results), indent=1))
    else:
        print(report(manifest, results))
    return 0 if all(not r.failures for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .cli import compile as compile_cmd
    from .cli import export, predict, show, summary, trace
    from .cli.common import add_backend_arg

    p = argparse.ArgumentParser(prog="mnv2ref", description="Keras's MobileNetV2, exact and framework-free.",
                                epilog="`mnv2ref COMMAND --help` describes each command.")
    p.add_argument("--version", action="version", version=f"mnv2ref {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict.add_parser(sub)
    summary.add_parsers(sub)  # summary, table
    trace.add_parsers(sub)  # trace, compare
    export.add_parser(sub)
    show.add_parser(sub)
    v = sub.add_parser("verify", help="check against the TensorFlow golden fixtures, per stage",
                       description="Run the golden fixtures (weights written by Keras, every layer computed by "
                                   "TensorFlow) through mnv2ref in float32 and float64 and print the agreement "
                                   "per stage. Exit status 1 if any layer is over tolerance.")
    v.add_argument("--fixtures", help="fixture folder (default: the repository's fixtures/)")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    add_backend_arg(v)
    v.set_defaults(func=cmd_verify)
    compile_cmd.add_parser(sub)
    return p


def main(argv=None) -> int:
    from .cli.common import CLIError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `mnv2ref summary | head`
        sys.stderr.close()
        return 0
    except (CLIError, OSError, ValueError) as e:
        if os.environ.get("MNV2REF_DEBUG"):
            raise
        print(f"mnv2ref {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``mnv2ref predict ... --scheduler ADDRESS|local[:N] --output DIR``: the same command on a Dask cluster.

Wired into ``cli/predict.py`` with two lines; the work is ``mnv2ref.distributed.predict``. Without
``--scheduler`` none of this runs and ``mnv2ref predict`` is unchanged.
"""
from __future__ import annotations

import json
import sys

from .common import CLIError


def add_args(p):
    g = p.add_argument_group("many machines (Dask; needs pip install 'mnv2ref[dask]')")
    g.add_argument("--scheduler", metavar="ADDRESS|local[:N]",
                   help="run on a Dask cluster: a scheduler address (tcp://host:8786) or 'local[:N]' (N worker "
                        "processes on this machine); results go to --output as a Parquet dataset")
    g.add_argument("--output", metavar="DIR",
                   help="with --scheduler: the Parquet dataset folder (one part file per chunk + _mnv2ref.json); "
                        "on a real cluster a folder every worker can write")
    g.add_argument("--features", action="store_true",
                   help="with --scheduler: also write the pooled out_relu embedding (1280 or 1792 floats)")
    g.add_argument("--chunk-size", type=int, default=256, metavar="N",
                   help="with --scheduler: files per task and per part file (default 256)")


def wanted(args) -> bool:
    """True when the run goes to a cluster; refuses the cluster-only options without --scheduler."""
    if args.scheduler is None:
        given = [o for o, v in (("--output", args.output), ("--features", args.features),
                                ("--chunk-size", args.chunk_size != 256)) if v]
        if given:
            raise CLIError(f"{', '.join(given)} need --scheduler ADDRESS|local[:N] (a Dask cluster)")
        return False
    if not args.output:
        raise CLIError("--scheduler needs --output DIR (the Parquet dataset to write)")
    if args.json or args.csv:
        raise CLIError("--json/--csv write one process's results; with --scheduler the results go to --output "
                       "(Parquet)")
    return True


def run(args) -> int:
    try:
        from .. import distributed
        distributed.require()
    except ImportError as e:
        raise CLIError(str(e)) from None
    kw = {"seed": args.seed} if args.weights in ("random", "none", "None") else {}
    if args.backend:
        kw["backend"] = args.backend
    weights = None if args.weights in ("random", "none", "None") else args.weights
    try:
        s = distributed.predict(args.paths, args.output, client=args.scheduler, weights=weights, alpha=args.alpha,
                                size=args.size, top=args.top, features=args.features, chunk_size=args.chunk_size,
                                resume=args.resume, batch_size=args.batch_size, interpolation=args.interpolation,
                                keep_aspect_ratio=args.keep_aspect_ratio, progress=args.progress, **kw)
        status = 0
    except distributed.ChunksFailed as e:
        print(f"mnv2ref predict: {e}", file=sys.stderr)
        s, status = e.summary, 1
    print(f"mnv2ref predict: {s['classified']} classified, {s['errors']} unreadable, {s['chunks']} chunks "
          f"({s['computed']} computed, {s['skipped']} already done, {len(s['failed'])} failed) in {s['seconds']:.1f} s"
          f" ({s['images_per_s']:.1f} images/s); results in {s['output']}", file=sys.stderr)
    print(json.dumps(s))
    return status

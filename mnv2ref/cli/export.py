"""``mnv2ref export``: the weights in a porter's layout, with a JSON manifest of the graph (``mnv2ref/export.py``)."""
from __future__ import annotations

import argparse
import os
import warnings

from . import common


def add_parser(sub):
    p = sub.add_parser(
        "export", help="weights for porters: BN folded (or not), HWIO or OIHW, with a graph manifest",
        description="Write the weights keyed by Keras layer name ('Conv1/kernel', 'Conv1/bias', ...), batch-norm "
                    "folded into kernel + bias (or, with --no-fold, kept as gamma/beta/moving_mean/"
                    "moving_variance next to the bias-free kernel), in TensorFlow's HWIO or PyTorch/ONNX's OIHW "
                    "layout (depthwise as C,1,3,3). The .npz also holds '__manifest__' (JSON: every op in order "
                    "with its input/output tensors, kernel size, stride, explicit padding, activation) and the "
                    "same manifest is written next to it as .json. Padding is computed for the input size.",
        epilog="examples:\n  mnv2ref export --weights w_0.35_96.h5 --out folded.npz\n"
               "  mnv2ref export --weights w_0.35_96.h5 --out torch.npz --layout oihw\n"
               "  mnv2ref export --weights w_0.35_96.h5 --out raw.npz --no-fold --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_weights_arg(p)
    p.add_argument("--out", required=True, help="output .npz (the manifest goes to the same name with .json)")
    p.add_argument("--layout", choices=("hwio", "oihw"), default="hwio",
                   help="hwio: TensorFlow/Keras (default); oihw: PyTorch/ONNX, depthwise (C, 1, 3, 3)")
    p.add_argument("--no-fold", action="store_true", help="keep batch-norm apart instead of folding it")
    p.add_argument("--float64", action="store_true", help="write float64 arrays (folding is always done in float64)")
    common.add_alpha_arg(p)
    common.add_size_args(p)
    common.add_model_shape_args(p)
    p.add_argument("--no-sidecar", action="store_true", help="do not write the .json manifest next to the .npz")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def raw_weights(cfg: dict, seed: int = 0) -> tuple[dict, str]:
    from .. import convert, h5io
    from ..model import resolve_imagenet

    classes = cfg.get("classes", 1000)
    if cfg["weights"] is None:
        return convert.random_raw(cfg["alpha"], cfg["include_top"], classes, seed), f"random (seed={seed})"
    path = cfg["weights"]
    if path == "imagenet":
        rows = cfg["input_shape"][0] if cfg["input_shape"][0] in (96, 128, 160, 192, 224) else 224
        path = resolve_imagenet(cfg["alpha"], rows, cfg["include_top"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from ..formats import load_raw  # every Keras format
        except ImportError:
            return convert.assign(h5io.read_legacy_h5(path), cfg["alpha"], cfg["include_top"], classes, path), path
        return load_raw(cfg.get("_file") or path, cfg["alpha"], cfg["include_top"], classes), path


def run(args) -> int:
    from .. import export

    cfg = common.model_config(args)
    raw, source = raw_weights(cfg, args.seed)
    h, w = cfg["input_shape"][:2]
    hw = (h, w) if h is not None else (common.requested_hw(args) or (224, 224))
    static_hw = None if h is not None else (None, None)
    name = f"mobilenetv2_{cfg['alpha']:0.2f}_{hw[0]}"
    arrays, manifest = export.export(raw, cfg["alpha"], hw, cfg["include_top"], cfg.get("classes", 1000), static_hw,
                                     args.layout, not args.no_fold, "float64" if args.float64 else "float32",
                                     name=name, source=os.path.basename(source), pooling=cfg.get("pooling"))
    out, side = export.save(args.out, arrays, manifest, sidecar=not args.no_sidecar)
    if args.json:
        common.dump_json(manifest)
        return 0
    ops = manifest["ops"]
    w = max(len(k) for k in arrays) + 2
    print(f"{'array':<{w}}{'shape':<18}{'op':<18}{'stride':>6}  padding [[t,b],[l,r]]  activation")
    for op in ops:
        keys = [op[k] for k in ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance") if op.get(k)]
        for j, k in enumerate(keys):
            extra = (f"{op['op']:<18}{op.get('stride', ''):>6}  {str(op.get('padding', '')):<22}"
                     f"{op.get('activation') or ''}") if j == 0 else ""
            print(f"{k:<{w}}{'x'.join(map(str, arrays[k].shape)):<18}{extra}")
    n = sum(a.size for a in arrays.values())
    print(f"wrote {len(arrays)} arrays ({n:,} numbers, {manifest['dtype']}, layout {args.layout}, "
          f"{'batch-norm folded' if manifest['folded'] else 'batch-norm kept apart'}) and {len(ops)} ops to {out}"
          + (f"; manifest also in {side}" if side else ""))
    return 0

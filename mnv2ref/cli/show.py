"""``mnv2ref show``: a layer's feature maps, or a whole inverted residual block, as a PNG (see ``mnv2ref/show.py``)."""
from __future__ import annotations

import argparse
import difflib
import os

from . import common


def add_parser(sub):
    p = sub.add_parser(
        "show", help="a layer's feature maps (or a whole block with --block N) as a labelled PNG grid",
        description="Run one image and draw the chosen layer's output channels as a grid (Pillow only), each "
                    "channel scaled on its own, labelled with its index, the layer name and shape. --block N draws "
                    "inverted residual block N side by side: input, expanded (1x1 + ReLU6), depthwise (3x3 + "
                    "ReLU6), projected (linear 1x1) and output (with the residual).",
        epilog="examples:\n  mnv2ref show cat.jpg --weights w_0.35_96.h5 --layer block_2_expand_relu --out maps.png\n"
               "  mnv2ref show cat.jpg --weights w_0.35_96.h5 --block 2 --out block_2.png\n"
               "  mnv2ref show cat.jpg --weights random --alpha 1.0 --size 224 --block 2 --out b2.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IMAGE", help="image file, .npy array or .npz with 'input'")
    common.add_weights_arg(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--layer", metavar="NAME",
                      help="Keras layer name, e.g. block_2_expand_relu (see `mnv2ref summary`)")
    what.add_argument("--block", type=int, metavar="N", help="inverted residual block 0..16, drawn step by step")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--max-channels", type=int, default=None,
                   help="draw at most this many channels per tensor (default 64 for --layer, 48 for --block)")
    p.add_argument("--cell", type=int, default=None,
                   help="cell size in pixels (default 64 for --layer, 48 for --block)")
    p.add_argument("--full-color", action="store_true", help="save 24-bit RGB instead of a 256-colour palette")
    p.add_argument("--index", type=int, default=0, help="which image of a batch input (default 0)")
    common.add_alpha_arg(p)
    common.add_size_args(p, default_help="from the weights file name, or the input array; 224 otherwise")
    common.add_model_shape_args(p)
    common.add_image_args(p)
    common.add_backend_arg(p, "numpy", ", the readable reference pass: one image needs no compiled kernels")
    p.set_defaults(func=run)


def block_tensors(alpha: float, n: int):
    """[(caption, Keras tensor name)] and arrow labels for inverted residual block ``n``."""
    from .. import arch

    blocks = arch.blocks(alpha)
    if not 0 <= n < len(blocks):
        raise common.CLIError(f"--block must be 0..{len(blocks) - 1}, got {n}")
    b, p = blocks[n], blocks[n].prefix
    prev = "Conv1_relu" if n == 0 else blocks[n - 1].prefix + ("add" if blocks[n - 1].residual else "project_BN")
    panels = [("input", prev)]
    arrows = []
    if b.has_expand:
        panels.append(("expanded", p + "expand_relu"))
        arrows.append(f"expand 1x1 conv\n+ BN + ReLU6\n{b.cin} -> {b.cexp} channels\n(t = {b.t})")
    panels.append(("depthwise", p + "depthwise_relu"))
    arrows.append(f"depthwise 3x3\nstride {b.stride}" + (" (pad)" if b.stride == 2 else "") +
                  f"\n+ BN + ReLU6\n{b.cexp} channels")
    panels.append(("projected (linear)", p + "project_BN"))
    arrows.append(f"project 1x1 conv\n+ BN, no ReLU6\n{b.cexp} -> {b.cout} channels")
    if b.residual:
        panels.append(("output = input + projected", p + "add"))
        arrows.append("add the block\ninput (residual)")
    title = [f"{p.rstrip('_')}: inverted residual block {n}, expansion t={b.t}, stride {b.stride}, "
             + ("residual (stride 1, same width)" if b.residual else
                "no residual (" + ("stride 2" if b.stride == 2 else "width changes") + ")")]
    return b, panels, arrows, title


def run(args) -> int:
    from .. import show
    from ..imagenet import preprocess_input

    hw_in = common.input_hw_of(args.input)
    model, cfg = common.build_model(args, input_hw=hw_in)
    hw = model.input_shape[1:3] if model.static else None
    x = common.read_input(args.input, hw, args.interpolation, args.keep_aspect_ratio)
    if not 0 <= args.index < len(x):
        raise common.CLIError(f"--index {args.index} out of range: the input has {len(x)} image(s)")
    x = x[args.index:args.index + 1]
    tr = model.trace(preprocess_input(x.copy()))
    source = os.path.basename(str(cfg.get("weights"))) if cfg.get("weights") else f"random (seed {args.seed})"
    where = f"model {model.name}, weights {source}, image {os.path.basename(args.input)}"
    if args.layer:
        if args.layer not in tr:
            near = difflib.get_close_matches(args.layer, list(tr), n=4)
            raise common.CLIError(f"no layer {args.layer!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))
        kinds = {l.name: l.kind for l in model.layers(x.shape[1:3])}
        img = show.layer_figure(tr[args.layer][0], args.layer, kinds.get(args.layer, ""), image=x[0],
                                max_channels=args.max_channels or 64, cell=args.cell or 64, note=where)
        print(f"wrote {args.out}: {args.layer} {'x'.join(map(str, tr[args.layer].shape[1:]))} "
              f"({img.size[0]}x{img.size[1]} px)")
    else:
        b, names, arrows, title = block_tensors(model.alpha, args.block)
        panels = [(cap, name, tr[name][0]) for cap, name in names]
        img = show.block_figure(panels, arrows, title + [where], image=x[0],
                                max_channels=args.max_channels or 48, cell=args.cell or 48)
        print(f"wrote {args.out}: block {args.block}: " + " -> ".join(
            f"{name} {'x'.join(map(str, t.shape))}" for _, name, t in panels) + f" ({img.size[0]}x{img.size[1]} px)")
    if not args.full_color:  # a 256-colour palette: the colour maps are smooth, the file ~2x smaller
        from PIL import Image

        img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    img.save(args.out, optimize=True)
    return 0

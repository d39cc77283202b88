#!/usr/bin/env python
"""One inverted residual block, step by step: every number of docs/inverted_residual.md.

Block ``block_2`` of MobileNetV2 1.0 at 224x224 (the paper's model): stride 1,
24 -> 144 -> 144 -> 24 channels, with a residual connection. The script

1. runs the whole model on a drawn test picture and records every Keras layer (``model.trace``);
2. recomputes the block's four steps by hand with NumPy from the folded weights and checks
   them against the traced tensors;
3. prints each step's shape, parameters, multiply-adds and memory, and the line of
   mnv2ref's code that computes it;
4. measures why the projection is linear (the paper's ReLU-on-a-spiral experiment, and the
   share of negative values a ReLU6 would destroy in this block) and what the residual costs;
5. with ``--images DIR``, draws the pictures of the walk-through (the test picture, the block,
   the spiral experiment).

Weights: ``--weights random`` (default; seeded He-normal, so it runs anywhere and the numbers
are reproducible), ``imagenet`` (the official file in the Keras cache) or a Keras .h5 file.
Counts do not depend on the weights; the measured fractions do.

    python examples/inverted_residual.py
    python examples/inverted_residual.py --images docs/img
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import mnv2ref
from mnv2ref import arch, numpy_ops

ALPHA, SIZE, BLOCK = 1.0, 224, 2
F32 = 4  # bytes per float32
ROOT = Path(mnv2ref.__file__).resolve().parent


def scene(w: int = SIZE, h: int = SIZE):
    """The test picture: sky, sun, a house with a door, a fence, grass. Drawn, so no file is needed."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    for y in range(h):
        d.line([(0, y), (w, y)], fill=(90 + 60 * y // h, 150 + 40 * y // h, 230 - 40 * y // h))
    d.rectangle([0, int(h * .7), w, h], fill=(70, 140, 60))
    d.ellipse([int(w * .68), int(h * .08), int(w * .88), int(h * .08) + int(w * .2)], fill=(250, 220, 60))
    d.rectangle([int(w * .15), int(h * .45), int(w * .45), int(h * .8)], fill=(180, 60, 50))
    d.polygon([(int(w * .1), int(h * .47)), (int(w * .3), int(h * .22)), (int(w * .5), int(h * .47))],
              fill=(100, 50, 40))
    d.rectangle([int(w * .26), int(h * .6), int(w * .34), int(h * .8)], fill=(60, 40, 30))
    for i in range(6):
        x = int(w * .55) + i * w // 20
        d.line([(x, int(h * .72)), (x, int(h * .95))], fill=(240, 240, 240), width=max(2, w // 50))
    return img


def code_line(module: str, snippet: str) -> str:
    """'mnv2ref/forward.py:50' for the first line of ``module`` containing ``snippet``."""
    lines = (ROOT / module).read_text().splitlines()
    for i, line in enumerate(lines, 1):
        if snippet in line:
            return f"mnv2ref/{module}:{i}"
    raise LookupError(f"{snippet!r} not found in mnv2ref/{module}: the walk-through needs updating")


def spiral(n_points: int = 600):
    t = np.linspace(0.5, 4.5 * np.pi, n_points)
    pts = np.stack([t * np.cos(t), t * np.sin(t)], 1)
    return t, pts / np.abs(pts).max()


def relu_spiral(dims=(2, 3, 5, 15, 30), draws: int = 20, seed: int = 0):
    """The paper's Figure 1: a 2-D spiral x embedded into n dims by a random T (n x 2), then ReLU.

    What survives the ReLU is recovered from the coordinates it left positive (least squares on
    those rows of T; a point with fewer than two such rows cannot be fully recovered). Returns
    {n: (points recovered with the first T, relative error ||x_rec - x|| / ||x|| averaged over
    ``draws`` random T)}.
    """
    rng = np.random.default_rng(seed)
    _, x = spiral()
    out = {}
    for n in dims:
        errors, first = [], None
        for _ in range(draws):
            T = rng.normal(size=(n, 2))
            z = np.maximum(x @ T.T, 0)  # ReLU(T x), one row per point
            active = (z > 0).astype(float)
            M = np.einsum("ki,ia,ib->kab", active, T, T)  # normal equations on the active rows
            rec = np.einsum("kab,kb->ka", np.linalg.pinv(M), z @ T)
            errors.append(np.linalg.norm(rec - x) / np.linalg.norm(x))
            first = rec if first is None else first
        out[n] = (first, float(np.mean(errors)))
    return out


def draw_spiral(results, path):
    from PIL import Image, ImageDraw

    from mnv2ref.show import font

    t, x = spiral()
    panels = [("input (2-D)", x, None)] + [(f"n = {n}", r, e) for n, (r, e) in results.items()]
    S, pad, top = 170, 10, 46
    img = Image.new("RGB", (len(panels) * (S + pad) + pad, S + top + 30), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((pad, 4), "A 2-D spiral x through ReLU(T x) in n dimensions (T random, n x 2), then recovered from the "
                     "coordinates the ReLU left positive.", fill=(20, 20, 20), font=font(13))
    d.text((pad, 22), "Error = |x_rec - x| / |x|, mean over 20 random T (one T drawn). Few dimensions: the ReLU "
                      "destroys information; many: it keeps it.", fill=(70, 70, 70), font=font(12))
    colours = (np.stack([np.linspace(40, 250, len(t)), np.linspace(60, 120, len(t)), np.linspace(200, 40, len(t))], 1)
               .astype(int))
    for k, (title, pts, err) in enumerate(panels):
        x0 = pad + k * (S + pad)
        d.rectangle([x0, top, x0 + S, top + S], outline=(200, 200, 200))
        m = max(1.0, float(np.abs(pts).max()))
        for (px, py), c in zip(pts, colours):
            u, v = x0 + S / 2 + px / m * (S / 2 - 6), top + S / 2 - py / m * (S / 2 - 6)
            d.ellipse([u - 1.5, v - 1.5, u + 1.5, v + 1.5], fill=tuple(c))
        label = title if err is None else f"{title}: error {err:.2f}"
        d.text((x0 + 4, top + S + 6), label, fill=(20, 20, 20), font=font(12))
    img.save(path, optimize=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="random", help="random (default, seed 0), imagenet, or a Keras .h5 file")
    ap.add_argument("--images", metavar="DIR", help="also write the walk-through's pictures into DIR")
    args = ap.parse_args(argv)

    weights = None if args.weights == "random" else args.weights
    model = mnv2ref.MobileNetV2(alpha=ALPHA, input_shape=(SIZE, SIZE, 3), weights=weights, seed=0, backend="numpy")
    picture = scene()
    x = mnv2ref.preprocess_input(mnv2ref.img_to_array(picture)[None])
    tr = model.trace(x)

    spec = arch.blocks(ALPHA)[BLOCK]
    p, P = model.params["blocks"][BLOCK], spec.prefix
    layers = {l.name: l for l in model.layers()}
    block_in = tr["block_1_project_BN"]
    H, W = block_in.shape[1:3]
    print(f"model: {model.name}, weights: {args.weights}; block {P.rstrip('_')}: t={spec.t}, "
          f"{spec.cin} -> {spec.cexp} -> {spec.cout} channels, stride {spec.stride}, residual {spec.residual}")

    # -- the four steps, by hand ---------------------------------------------------------------------
    expanded = numpy_ops.relu6(block_in @ p["expand_w"] + p["expand_b"])
    padded = np.pad(expanded, ((0, 0), (1, 1), (1, 1), (0, 0)))
    depthwise = sum(padded[:, i:i + H, j:j + W, :] * p["depthwise_w"][i, j] for i in range(3) for j in range(3))
    depthwise = numpy_ops.relu6(depthwise + p["depthwise_b"])
    projected = depthwise @ p["project_w"] + p["project_b"]
    output = block_in + projected
    manual = {P + "expand_relu": expanded, P + "depthwise_relu": depthwise, P + "project_BN": projected,
              P + "add": output}
    agree = all(np.allclose(v, tr[k], rtol=0, atol=1e-5 * float(np.abs(tr[k]).max())) for k, v in manual.items())
    print(f"hand-computed steps agree with model.trace to 1e-5 of each tensor's max: {'yes' if agree else 'NO'}")

    # -- shapes, parameters, multiply-adds, memory --------------------------------------------------------
    def kparams(name):  # Keras's count: kernel, and the 4 batch-norm arrays
        return sum(int(np.prod(s)) for s in layers[name].weights)

    steps = [
        ("input", "block_1_project_BN", None, None, None, None),
        ("expand 1x1 + BN + ReLU6", P + "expand_relu", P + "expand", P + "expand_BN",
         code_line("forward.py", "h = _conv(ops.pointwise, h, expand_w"), code_line("numpy_ops.py", "def pointwise")),
        ("depthwise 3x3 + BN + ReLU6", P + "depthwise_relu", P + "depthwise", P + "depthwise_BN",
         code_line("forward.py", "h = _conv(ops.depthwise3x3"), code_line("numpy_ops.py", "def depthwise3x3")),
        ("project 1x1 + BN (linear)", P + "project_BN", P + "project", P + "project_BN",
         code_line("forward.py", "return _conv(ops.pointwise, h, project_w"),
         code_line("numpy_ops.py", "def pointwise")),
        ("add (residual)", P + "add", None, None,
         code_line("forward.py", "y = tap(add, residual + y)"), code_line("numpy_ops.py", "y += residual")),
    ]
    print()
    print(f"{'step':<28}{'tensor':<24}{'shape':<12}{'weights':>9}{'+BN':>6}{'MACs':>13}{'bytes':>12}  code")
    tot_w = tot_bn = tot_mac = 0
    for label, tensor, conv, bn, line, op_line in steps:
        shape = tr[tensor].shape[1:]
        wts = int(np.prod(layers[conv].weights[0])) if conv else 0
        bnp = kparams(bn) if bn and conv != bn else 0
        macs = layers[conv].macs if conv else 0
        tot_w, tot_bn, tot_mac = tot_w + wts, tot_bn + bnp, tot_mac + macs
        nbytes = int(np.prod(shape)) * F32
        where = f"{line} ({op_line})" if line else ""
        print(f"{label:<28}{tensor:<24}{'x'.join(map(str, shape)):<12}{wts:>9,}{bnp:>6,}{macs:>13,}{nbytes:>12,}"
              f"  {where}")
    print(f"{'block total':<64}{tot_w:>9,}{tot_bn:>6,}{tot_mac:>13,}")
    print(f"block parameters, Keras count (with batch-norm): {tot_w + tot_bn:,}; without batch-norm: {tot_w:,}")
    print(f"batch-norm folding: {code_line('convert.py', 'def _fold')}; the block: "
          f"{code_line('forward.py', 'def inverted_residual')}; ReLU6: {code_line('numpy_ops.py', 'def relu6')}")
    full_thin = H * W * 9 * spec.cin * spec.cout
    full_wide = H * W * 9 * spec.cexp * spec.cexp
    print(f"for comparison: a full 3x3 conv {spec.cin} -> {spec.cout} at {H}x{W}: {full_thin:,} MACs; "
          f"{spec.cexp} -> {spec.cexp}: {full_wide:,} MACs ({full_wide / tot_mac:.1f} x the whole block)")
    thin, wide = H * W * spec.cout * F32, H * W * spec.cexp * F32
    print(f"memory: bottleneck tensor {thin:,} bytes, expanded tensor {wide:,} bytes ({wide // thin} x); "
          f"layer by layer the block peaks at {2 * wide + thin:,} bytes (expanded + depthwise output + the "
          f"block input kept for the add)")

    # -- why the projection is linear ------------------------------------------------------------------
    print()
    neg = float(np.mean(projected < 0))
    dead_e = int(np.sum(np.all(expanded == 0, axis=(0, 1, 2))))
    print(f"ReLU6 zeroes {100 * np.mean(expanded == 0):.1f}% of the expanded tensor ({dead_e} of {spec.cexp} "
          f"channels entirely) and {100 * np.mean(depthwise == 0):.1f}% of the depthwise output")
    print(f"the projection (linear) has {100 * neg:.1f}% negative values: a ReLU6 there would set them to 0, "
          f"in a tensor of only {spec.cout} channels")
    res = relu_spiral()
    print("spiral through ReLU in n dims, relative error of what can be recovered: "
          + ", ".join(f"n={n}: {e:.2f}" for n, (_, e) in res.items()))

    # -- why the residual joins the bottlenecks ------------------------------------------------------------
    adds = H * W * spec.cout
    print(f"the residual add: {adds:,} additions on {spec.cout}-channel tensors (joining the {spec.cexp}-channel "
          f"expanded tensors instead would hold {wide:,} bytes instead of {thin:,} and take {H * W * spec.cexp:,} "
          f"additions)")

    if args.images:
        out = Path(args.images)
        out.mkdir(parents=True, exist_ok=True)
        picture.save(out / "scene.png", optimize=True)
        draw_spiral(res, out / "relu_spiral.png")
        print(f"wrote {out / 'scene.png'} and {out / 'relu_spiral.png'}; the feature maps: "
              f"mnv2ref show {out / 'scene.png'} --weights random --alpha 1.0 --size 224 --block 2 --max-channels 32 "
              f"--out {out / 'block_2.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

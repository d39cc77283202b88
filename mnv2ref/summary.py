"""Per-layer summary (Keras names, shapes, parameters, multiply-adds, activation memory) and the paper's Table 2.

Everything is computed from ``arch.layers`` -- nothing is run. Conventions:

* parameters: every array, batch-norm's four included (Keras's ``count_params()``);
  ``moving_mean`` and ``moving_variance`` are the non-trainable ones;
* multiply-adds (MACs): one multiply + one add = 1; convolutions, depthwise
  convolutions and the classifier only (batch-norm, ReLU6, padding, residual
  adds and pooling are 0), the convention of the published 300M for 1.0_224;
* activation memory: the bytes of each layer's output for one image in float32;
  ``peak_bytes`` is the most memory live at once when the layers run one after
  the other without fusion (the layer's input + its output + a block input kept
  for a residual add).
"""
from __future__ import annotations

from . import arch

FLOAT32_BYTES = 4


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def layer_rows(alpha: float, input_hw=(224, 224), include_top: bool = True, pooling=None, classes: int = 1000,
               static_hw=None) -> list[dict]:
    """One dict per Keras layer (the input layer first): name, kind, output_shape, params, macs, activation_bytes."""
    h, w = input_hw
    rows = [{"name": "input_1", "kind": "InputLayer", "output_shape": [h, w, 3], "params": 0,
             "non_trainable_params": 0, "macs": 0, "activation_bytes": h * w * 3 * FLOAT32_BYTES}]
    for layer in arch.layers(alpha, tuple(input_hw), include_top, pooling, classes, static_hw):
        params = sum(_size(s) for s in layer.weights)
        frozen = sum(_size(s) for s in layer.weights[2:]) if layer.kind == "BatchNormalization" else 0
        rows.append({"name": layer.name, "kind": layer.kind, "output_shape": list(layer.shape), "params": params,
                     "non_trainable_params": frozen, "macs": layer.macs,
                     "activation_bytes": _size(layer.shape) * FLOAT32_BYTES})
    return rows


def peak_bytes(rows: list[dict]) -> int:
    """Most bytes live at once running layer by layer (input + output + a pending residual), one image, float32."""
    names = {r["name"] for r in rows}
    peak, held, prev = 0, 0, rows[0]["activation_bytes"]
    for r in rows[1:]:
        name, out = r["name"], r["activation_bytes"]
        if name.endswith("_expand") or name == "expanded_conv_depthwise":  # first layer of a block
            prefix = name[:-len("expand")] if name.endswith("_expand") else "expanded_conv_"
            live = prev + out  # the block input is this layer's input
            held = prev if prefix + "add" in names else 0  # kept for the residual add
        else:
            live = prev + out + held
        if name.endswith("_add"):
            held = 0
        peak, prev = max(peak, live), out
    return peak


def totals(rows: list[dict]) -> dict:
    params = sum(r["params"] for r in rows)
    frozen = sum(r["non_trainable_params"] for r in rows)
    return {"params": params, "trainable_params": params - frozen, "non_trainable_params": frozen,
            "macs": sum(r["macs"] for r in rows), "activation_bytes": sum(r["activation_bytes"] for r in rows),
            "largest_activation_bytes": max(r["activation_bytes"] for r in rows), "peak_bytes": peak_bytes(rows)}


def human_bytes(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def shape_str(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def format_layers(rows: list[dict], title: str = "") -> str:
    w = max(len(f"{r['name']} ({r['kind']})") for r in rows) + 2
    head = f"{'Layer (type)':<{w}}{'Output shape':<16}{'Params':>10}{'MACs':>14}{'Memory (f32)':>14}"
    lines = ([title] if title else []) + [head, "=" * len(head)]
    for r in rows:
        lines.append(f"{r['name'] + ' (' + r['kind'] + ')':<{w}}{shape_str(r['output_shape']):<16}"
                     f"{r['params']:>10,}{r['macs']:>14,}{human_bytes(r['activation_bytes']):>14}")
    t = totals(rows)
    lines += ["=" * len(head),
              f"Total params: {t['params']:,} (trainable {t['trainable_params']:,}, "
              f"non-trainable {t['non_trainable_params']:,})",
              f"Multiply-adds: {t['macs']:,} ({t['macs'] / 1e6:.1f} M; convs + depthwise + classifier)",
              f"Activations: {human_bytes(t['activation_bytes'])} summed over {len(rows)} layers; largest "
              f"{human_bytes(t['largest_activation_bytes'])}; peak live layer by layer "
              f"{human_bytes(t['peak_bytes'])} (one image, float32)"]
    return "\n".join(lines)


# -- the paper's Table 2 --------------------------------------------------------------------------------------------

def table2(alpha: float, input_hw=(224, 224), classes: int = 1000) -> list[dict]:
    """The stage view of the paper's Table 2 for ``alpha`` (channels after ``make_divisible``) at ``input_hw``.

    Rows: input (HxWxC), operator, t, c, n, s, the Keras layers it covers, and its params and MACs.
    """
    layers = {l.name: l for l in arch.layers(alpha, tuple(input_hw), True, None, classes)}
    blocks = arch.blocks(alpha)

    def stage_cost(names):
        ls = [l for n, l in layers.items() if any(n == k or n.startswith(k + "_") for k in names)]
        return sum(_size(s) for l in ls for s in l.weights), sum(l.macs for l in ls)

    h, w = input_hw
    shape = (h, w, 3)
    rows = []
    p, m = stage_cost(["Conv1", "bn_Conv1"])
    rows.append(dict(input=list(shape), operator="conv2d 3x3", t=None, c=arch.stem_channels(alpha), n=1, s=2,
                     keras="Conv1", params=p, macs=m))
    shape = layers["Conv1_relu"].shape
    i = 0
    for t, c, n, s in arch.TABLE2:
        group = blocks[i:i + n]
        names = [b.prefix.rstrip("_") for b in group]
        p, m = stage_cost(names)
        rows.append(dict(input=list(shape), operator="bottleneck", t=t, c=group[0].cout, n=n, s=s,
                         keras=names[0] if n == 1 else f"{names[0]} .. {names[-1]}", params=p, macs=m))
        last = group[-1].prefix + ("add" if group[-1].residual else "project_BN")
        shape = layers[last].shape
        i += n
    p, m = stage_cost(["Conv_1"])
    rows.append(dict(input=list(shape), operator="conv2d 1x1", t=None, c=arch.last_channels(alpha), n=1, s=1,
                     keras="Conv_1", params=p, macs=m))
    shape = layers["out_relu"].shape
    rows.append(dict(input=list(shape), operator=f"avgpool {shape[0]}x{shape[1]}", t=None, c=None, n=1, s=None,
                     keras="global_average_pooling2d", params=0, macs=0))
    p, m = stage_cost(["predictions"])
    rows.append(dict(input=[1, 1, shape[2]], operator="conv2d 1x1", t=None, c=classes, n=None, s=None,
                     keras="predictions (Dense)", params=p, macs=m))
    return rows


def format_table2(rows: list[dict], title: str = "") -> str:
    def v(x):
        return "-" if x is None else str(x)

    head = (f"{'input':<14}{'operator':<14}{'t':>3}{'c':>6}{'n':>3}{'s':>3}   {'Keras layers':<26}"
            f"{'params':>10}{'MACs':>14}")
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{shape_str(r['input']):<14}{r['operator']:<14}{v(r['t']):>3}{v(r['c']):>6}{v(r['n']):>3}"
                     f"{v(r['s']):>3}   {r['keras']:<26}{r['params']:>10,}{r['macs']:>14,}")
    lines.append("-" * len(head))
    lines.append(f"{'':<14}{'total':<58}{sum(r['params'] for r in rows):>10,}{sum(r['macs'] for r in rows):>14,}")
    return "\n".join(lines)

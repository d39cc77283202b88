"""Check mnv2ref against the golden fixtures TensorFlow produced (``fixtures/``).

For each fixture (weights written by Keras, inputs, and every layer's output
computed by TensorFlow), run our float32 and float64 passes and measure, per
layer, ``max|a - b| / max|b|`` for:

* ours float32 vs TensorFlow float32  (must be <= TOLERANCE["float32"])
* ours float64 vs TensorFlow float32  (must be <= TOLERANCE["float64"])
* TensorFlow float32 vs ours float64  (TensorFlow's own rounding error, for scale)
* ours float32 vs ours float64        (our rounding error: should be no worse than TensorFlow's)

plus: preprocessing bit-exact against TensorFlow's, logits, and identical
top-5 classes. What this shows: that the architecture, padding, batch-norm,
activations and weight loading match Keras exactly, on random but realistic
weights. It does not measure ImageNet accuracy (no ImageNet weights or data here).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .compare import TOLERANCE, compare_layers, layer_error
from .imagenet import preprocess_input


def default_fixture_dir() -> Path | None:
    """The repository's ``fixtures/`` next to the package (editable installs), or $MNV2REF_FIXTURES."""
    env = os.environ.get("MNV2REF_FIXTURES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent / "fixtures"
    return here if (here / "manifest.json").exists() else None


def stage_of(name: str) -> str:
    """Keras layer name -> stage of the paper's Table 2 view (stem, block_0..block_16, head, top)."""
    if name.startswith(("Conv1", "bn_Conv1")):
        return "stem"
    if name.startswith("expanded_conv_"):
        return "block_0"
    m = re.match(r"block_(\d+)_", name)
    if m:
        return f"block_{m.group(1)}"
    if name in ("Conv_1", "Conv_1_bn", "out_relu"):
        return "head"
    return "top"


@dataclass
class VariantResult:
    """One model variant of one fixture (e.g. 0.5_97x131_avg built with a fixed or a dynamic input shape)."""

    label: str
    layers: list = field(default_factory=list)  # [(name, e32 vs TF, e64 vs TF, TF vs f64, e32 vs e64)]
    extra: dict = field(default_factory=dict)  # logits / probs / preprocessing / top-5
    failures: list = field(default_factory=list)

    def stages(self):
        """[(stage, n layers, max of each error column)] in model order."""
        out, seen = [], {}
        for name, *errs in self.layers:
            s = stage_of(name)
            if s not in seen:
                seen[s] = [s, 0, [0.0] * 4]
                out.append(seen[s])
            seen[s][1] += 1
            seen[s][2] = [max(a, b) for a, b in zip(seen[s][2], errs)]
        return [(s, n, tuple(e)) for s, n, e in out]


def _variants(npz):
    if "layer_order" in npz:
        return [("", True)]
    return [(p, p == "static/") for p in ("static/", "dynamic/") if p + "layer_order" in npz]


def build(cfg: dict, folder: Path, static: bool, dtype: str, activation="default", backend="numba"):
    from .model import MobileNetV2

    shape = tuple(cfg["input_shape"]) if static else (None, None, 3)
    act = cfg.get("classifier_activation", "softmax") if activation == "default" else activation
    return MobileNetV2(input_shape=shape, alpha=cfg["alpha"], include_top=cfg["include_top"],
                       weights=str(folder / cfg["weights_file"]), pooling=cfg.get("pooling"),
                       classes=cfg.get("classes") or 1000, classifier_activation=act, dtype=dtype,
                       backend=backend)


def check_fixture(name: str, cfg: dict, folder: Path, backend: str = "numba") -> list[VariantResult]:
    """Run every variant of one fixture in float32 and float64 and measure all four errors per layer."""
    with np.load(folder / cfg["golden_file"]) as z:
        npz = {k: z[k] for k in z.files}
    results = []
    pre = preprocess_input(npz["input"].copy())
    for prefix, static in _variants(npz):
        r = VariantResult(f"{name}" + (f" ({prefix.rstrip('/')} input shape)" if prefix else ""))
        if not np.array_equal(pre, npz["preprocessed"]):
            r.failures.append("preprocess_input differs from TensorFlow's")
        r.extra["preprocess_input bit-exact"] = bool(np.array_equal(pre, npz["preprocessed"]))
        order = [str(n) for n in npz[prefix + "layer_order"]]
        tf = {n: npz[f"{prefix}layer/{n}"] for n in order}
        x = npz["preprocessed"]
        t32 = build(cfg, folder, static, "float32", backend=backend).trace(x)
        t64 = build(cfg, folder, static, "float64", backend=backend).trace(x)
        e32, e64 = compare_layers(t32, tf, order), compare_layers(t64, tf, order)
        tfv64 = compare_layers(tf, t64, order)
        s32 = compare_layers(t32, t64, order)
        for a, b, c, d in zip(e32, e64, tfv64, s32):
            r.layers.append((a.name, a.rel, b.rel, c.rel, d.rel))
            if not a.rel <= TOLERANCE["float32"]:
                r.failures.append(f"float32 vs TF: {a}")
            if not b.rel <= TOLERANCE["float64"]:
                r.failures.append(f"float64 vs TF: {b}")
        if "logits" in npz:
            for dt in ("float32", "float64"):
                lo = build(cfg, folder, static, dt, activation=None, backend=backend).predict(x)
                e = layer_error("logits", lo, npz["logits"])
                r.extra[f"logits {dt} vs TF"] = e.rel
                if not e.rel <= TOLERANCE[dt]:
                    r.failures.append(f"{dt} vs TF: {e}")
        out_name = order[-1]
        ours, ref = t32[out_name], tf[out_name]
        if ours.ndim == 2:
            same = all(list(np.argsort(-a)[:5]) == list(np.argsort(-b)[:5]) for a, b in zip(ours, ref))
            r.extra["top-5 classes identical"] = bool(same)
            if not same:
                r.failures.append(f"top-5 order of {out_name} differs from TensorFlow")
        results.append(r)
    return results


def verify(folder: Path | None = None, backend: str = "numba") -> tuple[dict, list[VariantResult]]:
    """Check every fixture listed in ``folder/manifest.json``; returns (manifest, results)."""
    folder = Path(folder) if folder else default_fixture_dir()
    if folder is None or not (folder / "manifest.json").exists():
        raise FileNotFoundError("golden fixtures not found: run from a clone of the repository (pip install -e .), "
                                "or pass --fixtures DIR / set MNV2REF_FIXTURES")
    manifest = json.loads((folder / "manifest.json").read_text())
    results = []
    for name, cfg in manifest["fixtures"].items():
        results += check_fixture(name, cfg, folder, backend)
    return manifest, results


def report(manifest: dict, results: list[VariantResult]) -> str:
    """A human-readable per-stage table."""
    v = manifest.get("versions", {})
    lines = [
        f"Golden fixtures made by TensorFlow {v.get('tensorflow', '?')} / tf_keras {v.get('tf_keras', '?')} "
        "with random, realistic weights (not ImageNet weights).",
        "Errors are max|a - b| / max|b| per layer, the worst layer of each stage shown. 'ours f32 vs TF': our "
        f"float32 pass vs TensorFlow's (tolerance {TOLERANCE['float32']:g}); 'TF f32 error' and 'ours f32 error':",
        "each float32 pass vs our float64 pass (the exact reference; it must itself be within "
        f"{TOLERANCE['float64']:g} of TF).",
        "",
    ]
    hdr = f"{'stage':<9} {'layers':>6}  {'ours f32 vs TF':>14}  {'TF f32 error':>12}  {'ours f32 error':>14}"
    for r in results:
        lines += [f"== {r.label}", hdr]
        tot = tuple(max(l[i] for l in r.layers) for i in range(1, 5))
        for s, n, (a, b, c, d) in r.stages() + [("all", len(r.layers), tot)]:
            lines.append(f"{s:<9} {n:>6}  {a:>14.2e}  {c:>12.2e}  {d:>14.2e}")
        for k, val in r.extra.items():
            lines.append(f"  {k}: {val:.2e}" if isinstance(val, float) else f"  {k}: {val}")
        lines.append(f"  result: {'OK' if not r.failures else 'FAIL: ' + r.failures[0]}")
        lines.append("")
    ok = all(not r.failures for r in results)
    lines.append("verify: all fixtures agree with TensorFlow" if ok else "verify: FAILED")
    return "\n".join(lines)


def as_json(manifest: dict, results: list[VariantResult]) -> dict:
    cols = ("ours_f32_vs_tf", "ours_f64_vs_tf", "tf_f32_vs_f64", "ours_f32_vs_f64")
    return {
        "ok": all(not r.failures for r in results),
        "tolerance": TOLERANCE,
        "versions": manifest.get("versions", {}),
        "variants": [{
            "label": r.label,
            "failures": r.failures,
            "extra": r.extra,
            "stages": [{"stage": s, "layers": n, **dict(zip(cols, e))} for s, n, e in r.stages()],
            "layers": [{"name": l[0], **dict(zip(cols, l[1:]))} for l in r.layers],
        } for r in results],
    }

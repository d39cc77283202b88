"""Step 2 of loading: match the file's layers to the architecture, check, fold batch-norm.

``assign`` pairs the layers with weights read by ``h5io`` with
``arch.weighted_layers`` by *position*, as Keras's legacy loader does
(``by_name=False``): counts and every shape must agree; names are only a
cross-check. ``fold`` then folds each BatchNormalization into the convolution
before it and reshapes to the layouts the forward pass uses.

Every layout change, in one place (Keras HDF5 -> forward-pass parameter):

=======================  ===================  =======================  ==========================
Keras layer              Keras array(s)       forward-pass key         shape
=======================  ===================  =======================  ==========================
Conv1 + bn_Conv1         kernel (3,3,3,C)     stem: w                  (3, 3, 3, C)  HWIO, scaled
DepthwiseConv2D + BN     kernel (3,3,C,1)     depthwise_w              (3, 3, C)     last axis dropped
1x1 Conv2D + BN          kernel (1,1,Ci,Co)   expand_w/project_w, w    (Ci, Co)      1x1 axes dropped
any conv + its BN        gamma,beta,mean,var  ..._b / b                (C,)          beta - mean*scale
predictions (Dense)      kernel (Ci,K), bias  classifier: w, b         (Ci, K), (K,) unchanged
=======================  ===================  =======================  ==========================

Folding (epsilon inside the square root, Keras's formula
``gamma * (x - mean) / sqrt(var + eps) + beta``)::

    scale = gamma / sqrt(moving_variance + 1e-3)
    w'    = w * scale            (per output channel)
    b'    = beta - moving_mean * scale

It is done in float64 and rounded once to the model's dtype, so the float32
folded weights are as exact as float32 allows.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import arch

#: Names under which a layer appears in older Keras files (the 2018 keras-applications port
#: named the classifier ``Logits``).
ALIASES = {"predictions": {"Logits"}}
BN_ORDER = ("gamma", "beta", "moving_mean", "moving_variance")


def _var_name(weight_name: str) -> str:
    """'bn_Conv1/gamma:0' -> 'gamma'; 'block_1_depthwise/depthwise_kernel:0' -> 'depthwise_kernel'."""
    return weight_name.split("/")[-1].split(":")[0]


def _describe(alpha, include_top, classes):
    top = f"include_top=True, classes={classes}" if include_top else "include_top=False"
    return f"MobileNetV2(alpha={alpha}, {top})"


def guess_config(file_layers) -> str:
    """A human hint: which alpha / top the file's shapes look like (used in error messages).

    Alpha comes from ``fitting_alphas`` (the one inference, also ``infer_alpha``'s): from Conv1's width
    alone, and from all 19 widths when the file has the 104 backbone layers in front.
    """
    try:
        stem = int(file_layers[0].weights[0][1].shape[-1])
        last = [l for l in file_layers if len(l.weights) == 1][-1].weights[0][1].shape[-1]
    except (IndexError, AttributeError, TypeError):
        return "no MobileNetV2 layout recognised"
    alphas, _ = fitting_alphas((stem,) + (None,) * (len(width_signature(1.0)) - 1))
    hint = f"Conv1 has {stem} filters (alpha in {alphas or '?'})"
    if len(file_layers) >= 104:
        try:
            official, span = fitting_alphas(file_signature(file_layers[:104]))
        except ValueError:
            official, span = [], None
        hint += ("; its 19 layer widths fit " + (
            f"alpha={official[0]}" if official else
            f"no official alpha, any alpha from about {span[0]:.4g} to {span[1]:.4g}" if span else "no alpha"))
    dense = [l for l in file_layers if len(l.weights) == 2]
    top = f"with a top of {dense[-1].weights[0][1].shape[-1]} classes" if dense else "without top"
    return f"{hint}, {len(file_layers)} layers with weights, {top}" + (
        f", last layer {last} wide" if not dense else "")


def assign(file_layers, alpha: float, include_top: bool = True, classes: int = 1000, path: str = "") -> dict:
    """Match file layers to ``arch.weighted_layers`` by position -> {Keras name: {var: array}}.

    Raises ValueError naming the file, the layer, and both shapes on any mismatch.
    """
    want = arch.weighted_layers(alpha, include_top, classes)
    where = f"{path!r}: " if path else ""
    if len(file_layers) != len(want):
        raise ValueError(
            f"{where}the file has {len(file_layers)} layers with weights, {_describe(alpha, include_top, classes)} "
            f"has {len(want)}. The file: {guess_config(file_layers)}."
        )
    known = {l.name for l in want}
    raw = {}
    for got, layer in zip(file_layers, want):
        if got.name != layer.name and got.name not in ALIASES.get(layer.name, ()):
            if got.name in known:  # a MobileNetV2 name in the wrong place: the files don't line up
                raise ValueError(f"{where}layer {got.name!r} is where {layer.name!r} should be")
            warnings.warn(f"{where}layer {got.name!r} loaded as {layer.name!r} (matched by position)", stacklevel=3)
        if len(got.weights) != len(layer.weights):
            raise ValueError(f"{where}layer {layer.name!r}: {len(got.weights)} arrays in the file, "
                             f"expected {len(layer.weights)}")
        names = [_var_name(n) for n, _ in got.weights]
        if layer.kind == "BatchNormalization":
            if all(n in BN_ORDER for n in names) and tuple(names) != BN_ORDER:
                raise ValueError(f"{where}layer {layer.name!r}: batch-norm arrays are in the order {names}, "
                                 f"expected {list(BN_ORDER)}")
            keys = BN_ORDER
        elif layer.kind == "Dense":
            keys = ("kernel", "bias")
        else:
            keys = ("kernel",)
        entry = {}
        for key, (wname, a), shape in zip(keys, got.weights, layer.weights):
            if a.shape != tuple(shape):
                raise ValueError(
                    f"{where}layer {layer.name!r} array {wname!r}: shape {a.shape} in the file, {tuple(shape)} "
                    f"expected by {_describe(alpha, include_top, classes)}. The file: {guess_config(file_layers)}."
                )
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"{where}layer {layer.name!r} array {wname!r} has dtype {a.dtype}, not floating")
            entry[key] = a
        raw[layer.name] = entry
    return raw


def _fold(kernel, bn):
    """(kernel with output channels last, BN dict) -> (scaled kernel, bias), in float64."""
    eps = arch.BN_EPSILON
    k = np.asarray(kernel, np.float64)
    scale = np.asarray(bn["gamma"], np.float64) / np.sqrt(np.asarray(bn["moving_variance"], np.float64) + eps)
    bias = np.asarray(bn["beta"], np.float64) - np.asarray(bn["moving_mean"], np.float64) * scale
    return k * scale, bias


def fold(raw: dict, alpha: float, include_top: bool, dtype="float32") -> dict:
    """Raw Keras arrays -> the forward pass's parameter mapping (BN folded, layouts changed).

    Returns ``{"stem": {w, b}, "blocks": [{expand_w, expand_b, depthwise_w, ...}, ...],
    "head": {w, b}, "classifier": {w, b}}``; keys match the forward functions' arguments.
    """
    dt = np.dtype(dtype)

    def cast(*arrays):
        return [np.ascontiguousarray(a, dt) for a in arrays]

    w, b = _fold(raw["Conv1"]["kernel"], raw["bn_Conv1"])
    params = {"stem": dict(zip(("w", "b"), cast(w, b))), "blocks": []}
    for spec in arch.blocks(alpha):
        p, bp = spec.prefix, {}
        if spec.has_expand:
            w, b = _fold(raw[p + "expand"]["kernel"][0, 0], raw[p + "expand_BN"])
            bp["expand_w"], bp["expand_b"] = cast(w, b)
        w, b = _fold(raw[p + "depthwise"]["kernel"][:, :, :, 0], raw[p + "depthwise_BN"])
        bp["depthwise_w"], bp["depthwise_b"] = cast(w, b)
        w, b = _fold(raw[p + "project"]["kernel"][0, 0], raw[p + "project_BN"])
        bp["project_w"], bp["project_b"] = cast(w, b)
        params["blocks"].append(bp)
    w, b = _fold(raw["Conv_1"]["kernel"][0, 0], raw["Conv_1_bn"])
    params["head"] = dict(zip(("w", "b"), cast(w, b)))
    if include_top:
        params["classifier"] = dict(zip(("w", "b"), cast(raw["predictions"]["kernel"], raw["predictions"]["bias"])))
    return params


def random_raw(alpha: float, include_top: bool = True, classes: int = 1000, seed: int = 0) -> dict:
    """Random weights in Keras's raw layout: He-normal kernels, Keras's initial batch-norm.

    He-normal (std = sqrt(2 / fan_in)) keeps activations in range through the
    ReLU6s, so a random model is usable for teaching and benchmarks. Batch-norm
    starts as Keras's (gamma 1, beta 0, mean 0, variance 1); the classifier is
    Glorot-uniform with a zero bias, like Keras's Dense. Seeded: same seed, same model.
    """
    rng = np.random.default_rng(seed)
    raw = {}
    for layer in arch.weighted_layers(alpha, include_top, classes):
        shapes = layer.weights
        if layer.kind == "BatchNormalization":
            c = shapes[0][0]
            raw[layer.name] = dict(zip(BN_ORDER, (np.ones(c), np.zeros(c), np.zeros(c), np.ones(c))))
        elif layer.kind == "Dense":
            fan_in, fan_out = shapes[0]
            lim = np.sqrt(6.0 / (fan_in + fan_out))
            raw[layer.name] = {"kernel": rng.uniform(-lim, lim, shapes[0]), "bias": np.zeros(shapes[1])}
        else:
            kh, kw, cin, cout = shapes[0]
            fan_in = kh * kw * (1 if layer.kind == "DepthwiseConv2D" else cin)
            raw[layer.name] = {"kernel": rng.normal(0.0, np.sqrt(2.0 / fan_in), shapes[0])}
    return {name: {k: v.astype(np.float32) for k, v in d.items()} for name, d in raw.items()}


# --- working out alpha from the file's widths (used by ``formats.infer`` / ``mnv2ref.load``) ----------------
#
# The architecture depends on alpha only through 19 channel counts: Conv1's width, the 17 block output
# widths and Conv_1's width (expand widths are 6x the input). Every alpha that reproduces these 19
# numbers builds the same network, so "the" alpha of a file is: the official one if one fits (they
# all differ), else the shortest decimal among those that fit, reported as ambiguous.

#: The widths are piecewise constant in alpha; the pieces are searched up to this alpha.
MAX_ALPHA = 4.0


def width_signature(alpha: float) -> tuple:
    """(Conv1 width, 17 block output widths, Conv_1 width) for ``alpha``: all the shapes depend on."""
    return (arch.stem_channels(alpha), *(b.cout for b in arch.blocks(alpha)), arch.last_channels(alpha))


def _signature_positions() -> list[tuple[int, str]]:
    """(index among the 104 backbone layers with weights, Keras name) of Conv1, each project conv, Conv_1."""
    names = [l.name for l in arch.weighted_layers(1.0, include_top=False)]
    keep = ["Conv1"] + [b.prefix + "project" for b in arch.blocks(1.0)] + ["Conv_1"]
    return [(names.index(n), n) for n in keep]


def file_signature(backbone, path: str = "") -> tuple:
    """The width signature read from the file's 104 backbone layers (in model order)."""
    where = f"{path!r}: " if path else ""
    sig = []
    for i, name in _signature_positions():
        try:
            shape = backbone[i].weights[0][1].shape
        except (IndexError, AttributeError):
            raise ValueError(f"{where}the file has {len(backbone)} backbone layers with weights, MobileNetV2 has "
                             f"104; there is no layer in the position of {name!r}") from None
        if len(shape) != 4:
            raise ValueError(f"{where}layer {backbone[i].name!r} (in the position of {name!r}) has a kernel of "
                             f"shape {shape}, expected a 4-D convolution kernel (kh, kw, in, out)")
        sig.append(int(shape[-1]))
    return tuple(sig)


def _breakpoints(max_alpha: float = MAX_ALPHA) -> list[float]:
    """Every alpha where one of the 19 widths can change (``int(c*alpha)``, ``_make_divisible``'s steps)."""
    pts = {1.0}
    for c in sorted({c for _, c, _, _ in arch.TABLE2}):
        pts.update(n / c for n in range(1, int(c * max_alpha) + 1))
    for base in (arch.STEM_CHANNELS, arch.LAST_CHANNELS):
        for k in range(1, int(base * max_alpha / 8) + 2):
            pts.update(((8 * k - 4) / base, 8 * k / (0.9 * base)))
    return sorted(p for p in pts if 0 < p <= max_alpha)


_TABLE: dict | None = None


def _signature_table() -> dict:
    """{width signature: [alphas sampled at every breakpoint and between them]} (built once, ~0.1 s)."""
    global _TABLE
    if _TABLE is None:
        pts = _breakpoints()
        samples = pts + [(a + b) / 2 for a, b in zip(pts, pts[1:])] + [pts[0] / 2]
        table: dict = {}
        for a in samples:
            table.setdefault(width_signature(a), []).append(a)
        _TABLE = table
    return _TABLE


def _shortest_decimal(sig: tuple, lo: float, hi: float) -> float:
    """The roundest alpha in [lo, hi] with signature ``sig``: a multiple of 0.1, else 0.05, 0.01, 0.005, ..."""
    for digits in range(1, 7):
        for step in (10.0 ** -digits, 5 * 10.0 ** -(digits + 1)):
            for k in range(int(lo / step), int(hi / step) + 2):
                a = round(k * step, digits + 1)
                if a > 0 and width_signature(a) == sig:
                    return a
    return lo


def _describe_signature(sig: tuple) -> str:
    return f"Conv1 {sig[0]}, blocks {list(sig[1:-1])}, Conv_1 {sig[-1]}"


def fitting_alphas(widths) -> tuple[list[float], tuple[float, float] | None]:
    """Which alphas reproduce ``widths``: the 19-entry width signature, ``None`` where a width is unknown.

    Returns (the official alphas that fit, in ``arch.IMAGENET_ALPHAS`` order; (lo, hi), the smallest and
    largest alpha in (0, ``MAX_ALPHA``] that fits, or None if none does). The one inference of alpha from
    widths: ``infer_alpha`` (a file's full signature) and ``guess_config`` (error hints, partial) use it.
    """
    widths = tuple(widths)

    def fits(sig):
        return all(w is None or w == s for w, s in zip(widths, sig))

    official = [a for a in arch.IMAGENET_ALPHAS if fits(width_signature(a))]
    table = _signature_table()
    if all(w is not None for w in widths):
        samples = table.get(widths, [])
    else:
        samples = [a for sig, alphas in table.items() if fits(sig) for a in alphas]
    return official, ((min(samples), max(samples)) if samples else None)


def infer_alpha(backbone, hint: float | None = None, path: str = "") -> tuple[float, str | None]:
    """(alpha, note) from the widths of the file's 104 backbone layers.

    The official alpha that reproduces the widths if there is one; else ``hint`` (e.g. parsed from the
    model name in the file's config) if it does; else the shortest decimal among all alphas that do,
    with a note saying the alpha is not unique. ValueError naming the file and the first differing
    layer if no alpha reproduces them.
    """
    sig = file_signature(backbone, path)
    official, span = fitting_alphas(sig)
    if official:  # the official alphas' signatures all differ: at most one fits
        return official[0], None
    if hint is not None and hint > 0 and width_signature(hint) == sig:
        return float(hint), None
    if span is None:
        where = f"{path!r}: " if path else ""
        near = min(arch.IMAGENET_ALPHAS, key=lambda a: sum(x != y for x, y in zip(width_signature(a), sig)))
        want = width_signature(near)
        i = next(i for i, (x, y) in enumerate(zip(want, sig)) if x != y)
        name = _signature_positions()[i][1]
        raise ValueError(
            f"{where}no width multiplier alpha (0 < alpha <= {MAX_ALPHA}) reproduces the file's channel counts "
            f"({_describe_signature(sig)}); the nearest official alpha {near} differs at layer {name!r}: "
            f"{sig[i]} output channels in the file, {want[i]} for alpha={near}")
    lo, hi = span
    alpha = _shortest_decimal(sig, lo, hi)
    return alpha, (f"the channel counts ({_describe_signature(sig)}) fit no official alpha and every alpha from "
                   f"about {lo:.4g} to {hi:.4g} reproduces them; using alpha={alpha} (same network whichever "
                   f"is chosen; pass alpha=... to name another)")

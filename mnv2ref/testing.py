"""Seeded "random but realistic" MobileNetV2 weights: the one recipe of the fixtures, tests and benchmarks.

NumPy only (no TensorFlow at import or call): ``fixtures/generate.py``, ``fixtures/generate_formats.py``,
``fixtures/generate_int8.py`` (through the float fixtures' files), the tests and the benchmarks all draw
their weights here, so a committed fixture can be re-derived without TensorFlow
(``tests/test_recipe.py`` checks every committed weight file against this module).

The recipe, per variable, drawn in order from one ``numpy.random.default_rng(seed)`` (float64 draws cast
to float32, so the values depend on NumPy's generator only, not on the TF or Keras version):

* kernels, ``kernels="lecun"`` (default): Conv2D and DepthwiseConv2D kernels lecun_uniform
  ``U(+-sqrt(3 / fan_in))`` on the *true* fan-in (kh*kw*Cin; 9 for a 3x3 depthwise filter), the Dense
  kernel glorot_uniform. ``kernels="keras-default"``: Keras's own default, glorot_uniform
  ``U(+-sqrt(6 / (fan_in + fan_out)))`` with Keras's fans everywhere -- a (3, 3, C, 1) depthwise kernel
  then counts fan_in = 9C, fan_out = 9, which shrinks the input-dependent signal ~C/2 times per depthwise
  conv (with the batch norm below a full-size network's output stops depending on its input; fine for
  the small-alpha format fixtures, bad for goldens);
* BatchNormalization: gamma ~ U(0.5, 1.5), beta ~ N(0, 0.2), moving_mean ~ N(0, 0.5),
  moving_variance ~ U(0.5, 2) (N's second number is a standard deviation), drawn in that order;
* every bias ~ N(0, 0.1) (MobileNetV2's convolutions have none; its Dense has one).

A variable is described by a spec ``(layer_class, kind, shape)``: ``kind`` the Keras variable name
(``kernel``, ``depthwise_kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``),
``layer_class`` ("Conv2D", "DepthwiseConv2D", "Dense", ...) or None -- only needed to tell a Keras 3
depthwise ``kernel`` from a Conv2D one under ``kernels="lecun"``.

Entry points: ``realistic(specs, seed)`` (the core), ``realistic_raw(alpha, ...)`` (mnv2ref's raw layout,
``{layer: {var: array}}``, from ``arch``), ``keras_weights(model, seed)`` (a Keras model's
``set_weights`` list; any Keras, nested models included) and ``variable_specs(variables)``.
"""
from __future__ import annotations

import numpy as np

KERNELS = ("lecun", "keras-default")
BN = ("gamma", "beta", "moving_mean", "moving_variance")
_BN_DRAW = {"gamma": ("uniform", 0.5, 1.5), "beta": ("normal", 0.0, 0.2),
            "moving_mean": ("normal", 0.0, 0.5), "moving_variance": ("uniform", 0.5, 2.0)}


def keras_fans(shape) -> tuple[int, int]:
    """Keras's ``_compute_fans`` (tf_keras/src/initializers/initializers.py): (fan_in, fan_out)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    rf = 1
    for d in shape[:-2]:
        rf *= d
    return shape[-2] * rf, shape[-1] * rf


def glorot_uniform(rng: np.random.Generator, shape) -> np.ndarray:
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out)) with Keras's fans: Keras's default kernel initialiser."""
    fan_in, fan_out = keras_fans(shape)
    limit = np.sqrt(6.0 / max(1.0, fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def lecun_uniform(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """U(-l, l), l = sqrt(3 / fan_in): Keras's ``lecun_uniform`` on a given fan-in."""
    limit = np.sqrt(3.0 / max(1, fan_in))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def draw(rng: np.random.Generator, kind: str, shape, layer_class: str | None = None,
         kernels: str = "lecun") -> np.ndarray:
    """One variable of the recipe (see the module docstring), float32."""
    shape = tuple(int(s) for s in shape)
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernel recipe {kernels!r}; expected one of {KERNELS}")
    if kind in ("kernel", "depthwise_kernel"):
        if kernels == "keras-default" or len(shape) != 4:  # Dense kernels are glorot in both recipes
            return glorot_uniform(rng, shape)
        depthwise = kind == "depthwise_kernel" or layer_class == "DepthwiseConv2D"
        return lecun_uniform(rng, shape, shape[0] * shape[1] * (1 if depthwise else shape[2]))
    if kind in _BN_DRAW:
        how, a, b = _BN_DRAW[kind]
        return getattr(rng, how)(a, b, size=shape).astype(np.float32)
    if kind == "bias":
        return rng.normal(0.0, 0.1, size=shape).astype(np.float32)
    raise ValueError(f"no recipe for a variable of kind {kind!r} (shape {shape}, layer class {layer_class})")


def realistic(specs, seed: int, kernels: str = "lecun") -> list[np.ndarray]:
    """[array per spec] for ``specs`` = iterable of ``(layer_class, kind, shape)``, in order, one seeded rng."""
    rng = np.random.default_rng(seed)
    return [draw(rng, kind, shape, cls, kernels) for cls, kind, shape in specs]


def variable_kind(name: str) -> str:
    """A Keras variable's kind from its name: ``'block_1_depthwise/depthwise_kernel:0'`` -> ``'depthwise_kernel'``."""
    return str(name).split("/")[-1].split(":")[0]


def variable_specs(variables, layer_class=None) -> list[tuple]:
    """Specs for Keras variables (anything with ``.name`` and ``.shape``, e.g. ``model.weights``)."""
    return [(layer_class, variable_kind(v.name), tuple(int(d) for d in v.shape)) for v in variables]


def keras_specs(model) -> list[tuple]:
    """Specs for ``model.weights`` (tf_keras or Keras 3), with each variable's layer class.

    Walks the layers (nested models included) to find each variable's owner; the order is
    ``model.weights``'s, which is what ``model.set_weights`` takes.
    """
    owner = {}

    def walk(layer):
        subs = getattr(layer, "layers", None)
        if subs:
            for s in subs:
                walk(s)
        else:
            for v in layer.weights:
                owner.setdefault(id(v), type(layer).__name__)
    walk(model)
    return [(owner.get(id(v)), variable_kind(v.name), tuple(int(d) for d in v.shape)) for v in model.weights]


def keras_weights(model, seed: int, kernels: str = "lecun") -> list[np.ndarray]:
    """The recipe's weights for a Keras model, in ``model.set_weights`` order."""
    return realistic(keras_specs(model), seed, kernels)


def raw_specs(alpha: float, include_top: bool = True, classes: int = 1000) -> list[tuple]:
    """(layer name, specs) of MobileNetV2's weighted layers in Keras's layer order (``arch.weighted_layers``)."""
    from . import arch

    out = []
    for layer in arch.weighted_layers(alpha, include_top, classes):
        if layer.kind == "BatchNormalization":
            names = BN
        elif layer.kind == "Dense":
            names = ("kernel", "bias")
        else:
            names = ("kernel",)
        out.append((layer.name, [(layer.kind, n, s) for n, s in zip(names, layer.weights)]))
    return out


def realistic_raw(alpha: float, include_top: bool = True, classes: int = 1000, seed: int = 0,
                  kernels: str = "lecun") -> dict:
    """The recipe in mnv2ref's raw layout ``{layer name: {var: float32 array}}`` (``convert.assign``'s).

    The same numbers, for the same seed, as ``keras_weights`` on tf_keras's
    ``MobileNetV2(alpha, include_top, classes)``: e.g. ``realistic_raw(0.35, seed=35096)`` is
    ``fixtures/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5``.
    """
    layers = raw_specs(alpha, include_top, classes)
    flat = iter(realistic([s for _, specs in layers for s in specs], seed, kernels))
    return {name: {kind: next(flat) for _, kind, _ in specs} for name, specs in layers}

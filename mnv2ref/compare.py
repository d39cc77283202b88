"""The one comparison helper and the one tolerance table.

Errors are measured per layer as ``max|ours - ref| / max|ref|`` (normalised
max error): element-wise relative error is meaningless for values near zero
(shared/reference/keras-facts.md, section 5).

Where the numbers come from (measured; see README "Numerical agreement"):

* TensorFlow's own float32 pass differs from an exact float64 pass by at most
  ~6e-7 of max|ref| per layer with realistic random weights, and tf_keras and
  Keras 3 differ from each other by the same amount.
* So a correct float32 port sits within ~1e-6 of TensorFlow, and a float64
  pass within TensorFlow's own float32 error (~6e-7) of it.

The bounds keep >= 5x headroom over those measurements and are still ~100x
below the smallest real bug we inject in the tests (a wrong padding, epsilon,
ReLU6 cap, residual or batch-norm order moves some layer by > 1e-3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

#: max|ours - ref| / max|ref| allowed per layer.
TOLERANCE = {
    "float32": 1e-5,  # our float32 pass vs TensorFlow float32
    "float64": 3e-6,  # our float64 pass vs TensorFlow float32 (bounded by TF's own float32 error)
}
#: Our float32 pass vs our float64 pass must stay within this multiple of TensorFlow's own
#: float32 error (TF float32 vs our float64) -- "no less accurate than TensorFlow", up to the
#: different summation order of the kernels -- or within ACCURACY_FLOOR, whichever is larger.
ACCURACY_FACTOR, ACCURACY_FLOOR = 3.0, 1e-6


@dataclass
class LayerError:
    """How far ``ours`` is from ``ref`` for one named tensor."""

    name: str
    max_abs: float  # max |ours - ref|
    ref_max: float  # max |ref|
    index: tuple  # where max_abs occurs

    @property
    def rel(self) -> float:
        return self.max_abs / self.ref_max if self.ref_max > 0 else self.max_abs

    def __str__(self):
        return (f"{self.name}: max|ours-ref| = {self.max_abs:.3g} at {self.index} "
                f"(max|ref| = {self.ref_max:.3g}, ratio {self.rel:.3g})")


def layer_error(name: str, ours, ref) -> LayerError:
    """Compare one tensor; shapes must match exactly (a shape mismatch is an AssertionError naming both)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        raise AssertionError(f"{name}: shape {ours.shape} (ours) != {ref.shape} (reference)")
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    if diff.size == 0:
        return LayerError(name, 0.0, 0.0, ())
    if not np.all(np.isfinite(diff)):
        i = tuple(int(v) for v in np.unravel_index(np.argmax(~np.isfinite(diff)), diff.shape))
        return LayerError(name, float("inf"), float(np.nanmax(np.abs(ref))), i)
    i = tuple(int(v) for v in np.unravel_index(np.argmax(diff), diff.shape))
    return LayerError(name, float(diff[i]), float(np.abs(ref).max()), i)


def compare_layers(ours: Mapping, ref: Mapping, names: Iterable[str] | None = None) -> list[LayerError]:
    """``layer_error`` for each name (default: every name of ``ref``, in its order)."""
    names = list(ref) if names is None else list(names)
    missing = [n for n in names if n not in ours]
    if missing:
        raise AssertionError(f"layers missing from ours: {missing[:5]}{'...' if len(missing) > 5 else ''}")
    return [layer_error(n, ours[n], ref[n]) for n in names]


def first_failure(errors: list[LayerError], tol: float) -> LayerError | None:
    """The first layer (in order) whose normalised error exceeds ``tol``."""
    return next((e for e in errors if not e.rel <= tol), None)


def assert_layers_close(ours: Mapping, ref: Mapping, dtype: str = "float32", names=None, tol: float | None = None):
    """Assert every layer is within ``TOLERANCE[dtype]``; the message names the first failing layer."""
    tol = TOLERANCE[dtype] if tol is None else tol
    errors = compare_layers(ours, ref, names)
    bad = first_failure(errors, tol)
    if bad is not None:
        worst = max(errors, key=lambda e: e.rel)
        raise AssertionError(f"first layer over tolerance {tol:g}: {bad}; worst: {worst}")
    return errors

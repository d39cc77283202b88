"""TFLite int8/uint8 MobileNetV2, bit for bit (``mnv2ref.load_tflite``); needs ``mnv2ref[tflite]``."""
from __future__ import annotations


def load_tflite(path, *, kernels: str = "reference"):
    """Read a ``.tflite`` MobileNetV2 and return a ``QuantizedModel`` (see ``mnv2ref.tflite.model``).

    kernels: ``"reference"`` (TFLite's BUILTIN_REF kernels, bit-exact; Numba), ``"numpy"`` (the same,
    NumPy only) or ``"xnnpack"`` (TFLite's default CPU path arithmetic).
    """
    from .model import QuantizedModel
    return QuantizedModel(path, kernels=kernels)


__all__ = ["load_tflite"]

"""mnv2ref: Keras's MobileNetV2, exact and framework-free (NumPy + Numba, weights read with h5py).

    import mnv2ref
    from mnv2ref import mobilenet_v2
    model = mnv2ref.MobileNetV2(weights="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5")
    x = mobilenet_v2.preprocess_input(mnv2ref.img_to_array(mnv2ref.load_img("cat.jpg", target_size=(224, 224)))[None])
    print(mobilenet_v2.decode_predictions(model.predict(x)))

TFLite int8/uint8 files, every tensor bit for bit with TFLite's reference kernels (extra ``[tflite]``):
``mnv2ref.load_tflite("model.tflite").trace(x)``.

Importing this package imports NumPy only; h5py, Pillow, the kernels and the flatbuffer schema load
on first use.
"""
from . import mobilenet_v2
from .image import img_to_array, load_img
from .imagenet import decode_predictions, preprocess_input
from .formats import load
from .model import MobileNetV2, Model


def load_tflite(path, *, kernels="reference"):
    """A TFLite int8/uint8 MobileNetV2 as a ``QuantizedModel`` (``mnv2ref.tflite``; extra ``mnv2ref[tflite]``)."""
    from .tflite import load_tflite as _load
    return _load(path, kernels=kernels)


__version__ = "0.1.0"
__all__ = ["MobileNetV2", "Model", "load", "load_tflite", "mobilenet_v2", "preprocess_input", "decode_predictions", "load_img",
           "img_to_array", "__version__"]

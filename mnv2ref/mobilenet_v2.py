"""Same module shape as ``keras.applications.mobilenet_v2``: the model, its preprocessing, its decoder."""
from .imagenet import decode_predictions, preprocess_input
from .model import MobileNetV2

__all__ = ["MobileNetV2", "preprocess_input", "decode_predictions"]

"""ImageNet helpers with Keras's behaviour: ``preprocess_input`` (mode "tf") and ``decode_predictions``;
and ``top_k``, the per-image records of ``mnv2ref predict`` and ``mnv2ref.distributed`` built on it.

The 1000-class index ships inside the package (``data/imagenet_class_index.json``,
Keras's format ``{"0": ["n01440764", "tench"], ...}``, built by
``scripts/build_class_index.py``), so decoding never touches the network.
Source of the behaviour: Keras ``keras/src/applications/imagenet_utils.py``,
measured in shared/reference/keras-facts.md section 4.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np


def preprocess_input(x, data_format=None):
    """Scale pixels from [0, 255] to [-1, 1]: ``x / 127.5 - 1`` (Keras mode "tf").

    Like Keras: a floating NumPy array is modified **in place** and returned
    (keeping its dtype: float64 stays float64); an integer or bool array is
    first converted to a new float32 array. Division then subtraction, in the
    array's dtype, so results are bit-identical to Keras. Any shape works.
    Unlike Keras (which fails with AttributeError), a list or scalar is
    converted to a new float32 array.
    """
    if data_format not in (None, "channels_first", "channels_last"):
        raise ValueError(f"The `data_format` argument must be one of 'channels_first', 'channels_last'. "
                         f"Received: data_format={data_format!r}")
    if not isinstance(x, np.ndarray):
        x = np.array(x, dtype=np.float32)
    elif not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
    x /= x.dtype.type(127.5)
    x -= x.dtype.type(1.0)
    return x


@lru_cache(maxsize=1)
def class_index() -> dict:
    """{"0": [wnid, label], ..., "999": [...]} from the bundled JSON."""
    with resources.files("mnv2ref").joinpath("data/imagenet_class_index.json").open("r", encoding="utf-8") as f:
        return json.load(f)


def decode_predictions(preds, top=5):
    """Top-``top`` (wnid, label, score) tuples per sample, highest score first (Keras's output format).

    ``preds`` must be (samples, 1000); ``top=0`` returns all 1000, as in Keras.
    """
    shape = getattr(preds, "shape", None)
    if shape is None:
        preds = np.asarray(preds)
        shape = preds.shape
    if len(shape) != 2 or shape[1] != 1000:
        raise ValueError("`decode_predictions` expects a batch of predictions (i.e. a 2D array of shape "
                         f"(samples, 1000)). Received array with shape: {tuple(shape)}")
    index = class_index()
    results = []
    for pred in np.asarray(preds):
        top_indices = pred.argsort()[-top:][::-1]
        result = [tuple(index[str(i)]) + (pred[i],) for i in top_indices]
        result.sort(key=lambda t: t[2], reverse=True)
        results.append(result)
    return results


def top_k(probs: np.ndarray, k: int, classes: int) -> list[list[dict]]:
    """Top-k per row as dicts; ImageNet labels through ``decode_predictions`` when there are 1000 classes.

    ``probs`` (N, classes) -> N lists of ``{"rank", "class_index", "wnid", "label", "score"}``, best first
    (``wnid`` "" and ``label`` ``class_<i>`` for other class counts).
    """
    if classes == 1000:
        index = {wnid: int(i) for i, (wnid, _) in class_index().items()}
        return [[{"rank": r + 1, "class_index": index[w], "wnid": w, "label": lab, "score": float(s)}
                 for r, (w, lab, s) in enumerate(row)] for row in decode_predictions(probs, top=k)]
    out = []
    for p in probs:
        idx = p.argsort()[-k:][::-1]
        out.append([{"rank": r + 1, "class_index": int(i), "wnid": "", "label": f"class_{int(i)}",
                     "score": float(p[i])} for r, i in enumerate(idx)])
    return out

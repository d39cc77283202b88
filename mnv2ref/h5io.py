"""Step 1 of loading: read a Keras HDF5 weights file into {Keras layer name: arrays}.

Nothing here knows MobileNetV2; it only reads what the file says, in the
file's order. Step 2 (``convert.py``) matches it against the architecture.

Legacy Keras HDF5 layout (tf_keras ``save_weights('w.h5')``, the official
ImageNet files; source: Keras ``legacy/saving/legacy_h5_format.py``, measured
in shared/reference/keras-facts.md section 2)::

    /                          attrs: layer_names = [all layer names, model order]
    /<layer>                   attrs: weight_names = ['<layer>/kernel:0', ...]
    /<layer>/<layer>/kernel:0  dataset (weight names contain a '/', so one group deeper)

Quirks handled (each has a test that imitates it):

* full-model files (``model.save('m.h5')``, how the official ``_no_top``
  files were written): the same layout under the group ``model_weights/``;
* attributes stored as fixed-length ``bytes`` instead of ``str``;
* list attributes too large for the 64 KB object header, split by Keras into
  ``layer_names0``, ``layer_names1``, ...;
* weight names without the ``:0`` suffix (Keras 3's legacy writer).

Arrays are read in ``weight_names`` order (batch-norm: gamma, beta,
moving_mean, moving_variance); h5py's own listing is alphabetical and wrong.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np


@dataclass
class H5Layer:
    """One layer of the file that has weights: its name, and (weight name, array) pairs in file order."""

    name: str
    weights: list = field(default_factory=list)  # [(weight_name, np.ndarray)]


def _decode(v) -> str:
    return v.decode("utf8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def read_list_attr(group, name: str) -> list[str] | None:
    """A list-of-strings attribute, whole or split into numbered chunks; None if absent."""
    if name in group.attrs:
        return [_decode(v) for v in np.atleast_1d(group.attrs[name])]
    if f"{name}0" in group.attrs:
        out, i = [], 0
        while f"{name}{i}" in group.attrs:
            out += [_decode(v) for v in np.atleast_1d(group.attrs[f"{name}{i}"])]
            i += 1
        return out
    return None


def _open(path):
    """Open ``path`` with h5py, turning every failure into an OSError that names the file."""
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"weights path is a directory, not a file: {path!r}")
    if os.path.getsize(path) == 0:
        raise OSError(f"weights file is empty (0 bytes): {path!r}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise OSError(f"cannot read {path!r} as HDF5 (truncated, or not an HDF5 file?): {e}") from None


def read_legacy_h5(path) -> list[H5Layer]:
    """Read a legacy Keras HDF5 weights file: the layers that have weights, in ``layer_names`` order.

    Raises OSError for a missing/unreadable/non-HDF5 file and ValueError for an
    HDF5 file that is not a Keras weights file or is missing data; every
    message names the file and, where it applies, the layer.
    """
    with _open(path) as f:
        try:
            return _read(f, os.fspath(path))
        except (KeyError, OSError, RuntimeError) as e:  # h5py errors on damaged internals
            raise OSError(f"{path!r}: damaged HDF5 file ({type(e).__name__}: {e})") from None


def _read(f, path: str) -> list[H5Layer]:
    root = f
    names = read_list_attr(root, "layer_names")
    if names is None and "model_weights" in f:  # a full-model file: descend like Keras does
        root = f["model_weights"]
        names = read_list_attr(root, "layer_names")
    if names is None:
        hint = ""
        if "layers" in f and "vars" in f:
            hint = " (it looks like a Keras 3 '.weights.h5' file, which this loader does not read yet)"
        raise ValueError(
            f"{path!r} is an HDF5 file but not a legacy Keras weights file: no 'layer_names' attribute "
            f"at its root or under 'model_weights/'{hint}"
        )
    out = []
    for name in names:
        if name not in root:
            raise ValueError(f"{path!r}: layer {name!r} is listed in 'layer_names' but has no group in the file")
        g = root[name]
        wnames = read_list_attr(g, "weight_names") or []
        if not wnames:
            continue
        layer = H5Layer(name)
        for wn in wnames:
            if wn not in g:
                raise ValueError(f"{path!r}: layer {name!r} lists weight {wn!r} but the dataset is missing")
            layer.weights.append((wn, np.asarray(g[wn][()])))
        out.append(layer)
    return out

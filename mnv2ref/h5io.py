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


def read_attr(obj, name: str):
    """``obj.attrs[name]``, refusing (OSError) an attribute whose stored type is not a string or a number.

    A flipped bit can turn a variable-length string into a variable-length sequence, which h5py
    then reads through a garbage heap pointer (a segmentation fault, measured): check first.
    """
    from h5py import h5t

    aid = obj.attrs.get_id(name)
    cls = aid.get_type().get_class()
    if cls not in (h5t.STRING, h5t.FLOAT, h5t.INTEGER):
        raise OSError(f"damaged attribute {name!r} of {obj.name!r}: stored with HDF5 type class {cls}, "
                      "expected strings")
    if np.prod(aid.shape or (), dtype=np.float64) > 1e6:  # Keras's lists hold hundreds of names
        raise OSError(f"damaged attribute {name!r} of {obj.name!r}: it declares shape {aid.shape}")
    return obj.attrs[name]


def read_list_attr(group, name: str) -> list[str] | None:
    """A list-of-strings attribute, whole or split into numbered chunks; None if absent."""
    if name in group.attrs:
        return [_decode(v) for v in np.atleast_1d(read_attr(group, name))]
    if f"{name}0" in group.attrs:
        out, i = [], 0
        while f"{name}{i}" in group.attrs:
            out += [_decode(v) for v in np.atleast_1d(read_attr(group, f"{name}{i}"))]
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
            return read_legacy(f, os.fspath(path), os.path.getsize(path))
        except (KeyError, OSError, RuntimeError) as e:  # h5py errors on damaged internals
            raise OSError(f"{path!r}: damaged HDF5 file ({type(e).__name__}: {e})") from None


def read_array(dset, path: str, where: str, file_size: int | None = None, spans: list | None = None) -> np.ndarray:
    """A dataset's values, refusing (OSError) what only a damaged file can hold.

    * a declared size that cannot be in the file (a corrupted shape field can declare terabytes;
      Keras writes every array uncompressed and contiguous, so it must fit);
    * a floating-point type that is not exactly IEEE 754 half/single/double;
    * no data stored at all, or data past the end of the file (HDF5 would silently return zeros).

    ``spans`` collects each array's byte range for ``check_spans``.
    """
    if not hasattr(dset, "shape") or not hasattr(dset, "dtype"):
        raise ValueError(f"{path!r}: {where!r} is a group, expected a dataset (an array)")
    nbytes = int(np.prod(dset.shape, dtype=np.float64) * dset.dtype.itemsize) if dset.shape is not None else 0
    limit = file_size if (file_size and dset.chunks is None and dset.compression is None) else 2**31
    if nbytes > max(limit, 1024):
        raise OSError(f"{path!r}: damaged file: dataset {where!r} declares shape {dset.shape} ({nbytes} bytes), "
                      f"more than the {limit} bytes of the file")
    if dset.dtype.kind not in "fiu":  # read nothing else: a damaged type can crash h5py's conversion
        raise ValueError(f"{path!r}: dataset {where!r} holds {dset.dtype} values, not numbers (a damaged file?)")
    if dset.dtype.kind == "f" and not _standard_float(dset):
        raise OSError(f"{path!r}: damaged file: dataset {where!r} has a non-standard floating-point type "
                      f"({dset.dtype}, not IEEE 754 binary16/32/64)")
    stored = dset.id.get_storage_size()
    if nbytes and not stored:
        raise OSError(f"{path!r}: damaged file: dataset {where!r} of shape {dset.shape} has no data stored")
    offset = dset.id.get_offset() if dset.chunks is None else None
    if offset is not None and file_size and offset + stored > file_size:  # HDF5 would read zeros past the end
        raise OSError(f"{path!r}: damaged file: dataset {where!r} lies at bytes {offset}..{offset + stored}, "
                      f"past the end of the file ({file_size} bytes)")
    if spans is not None and offset is not None:
        spans.append((offset, offset + stored, where))
    return np.asarray(dset[()])


def _standard_float(dset) -> bool:
    """The stored type is exactly IEEE 754 half/single/double (either byte order): a flipped bit in
    the datatype message (precision, offsets, exponent bias) would otherwise decode other numbers."""
    from h5py import h5t

    tid = dset.id.get_type()
    return any(tid.equal(t) for t in (h5t.IEEE_F32LE, h5t.IEEE_F32BE, h5t.IEEE_F64LE, h5t.IEEE_F64BE,
                                      h5t.IEEE_F16LE, h5t.IEEE_F16BE))


def check_spans(spans: list, path: str):
    """OSError if two arrays claim the same bytes of the file (a damaged data address)."""
    spans = sorted(spans)
    for (a0, a1, aw), (b0, b1, bw) in zip(spans, spans[1:]):
        if b0 < a1:
            raise OSError(f"{path!r}: damaged file: the arrays {aw!r} and {bw!r} claim the same bytes "
                          f"({a0}..{a1} and {b0}..{b1})")


def read_legacy(f, path: str, file_size: int | None = None) -> list[H5Layer]:
    """``read_legacy_h5`` on an already open ``h5py.File`` (or file-like object) ``f``."""
    root = f
    names = read_list_attr(root, "layer_names")
    if names is None and "model_weights" in f:  # a full-model file: descend like Keras does
        root = f["model_weights"]
        names = read_list_attr(root, "layer_names")
    if names is None:
        hint = ""
        if "layers" in f and "vars" in f:
            hint = " (it looks like a Keras 3 '.weights.h5' file: read it with mnv2ref.formats.read or mnv2ref.load)"
        raise ValueError(
            f"{path!r} is an HDF5 file but not a legacy Keras weights file: no 'layer_names' attribute "
            f"at its root or under 'model_weights/'{hint}"
        )
    out, spans = [], []
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
            layer.weights.append((wn, read_array(g[wn], path, f"{name}/{wn}", file_size, spans)))
        out.append(layer)
    check_spans(spans, path)
    return out

"""Write legacy Keras HDF5 weight files with h5py, with the quirks of older Keras versions.

Used by the loader tests to imitate files we cannot download (the official
2018 ImageNet files). ``read_file_layers`` reads every layer of a real
Keras-written file (weightless ones too), ``write_legacy`` writes them back
in the same layout, optionally with one of the quirks.
"""
import h5py
import numpy as np


def read_file_layers(path):
    """[(layer name, [(weight name, array)])] for every layer in ``layer_names`` order."""
    with h5py.File(path, "r") as f:
        root = f if "layer_names" in f.attrs else f["model_weights"]
        out = []
        for name in root.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else str(name)
            g = root[name]
            wn = [w.decode() if isinstance(w, bytes) else str(w) for w in g.attrs["weight_names"]]
            out.append((name, [(w, g[w][()]) for w in wn]))
        return out


def layers_from_raw(raw, arch_layers, input_name="input_1"):
    """Our raw {name: {var: array}} + arch layer list -> file layers in tf_keras's naming."""
    out = [(input_name, [])]
    for layer in arch_layers:
        if not layer.weights:
            out.append((layer.name, []))
            continue
        d = raw[layer.name]
        if layer.kind == "BatchNormalization":
            keys = ("gamma", "beta", "moving_mean", "moving_variance")
        elif layer.kind == "Dense":
            keys = ("kernel", "bias")
        elif layer.kind == "DepthwiseConv2D":
            keys = ("depthwise_kernel",)
        else:
            keys = ("kernel",)
        src = {"depthwise_kernel": "kernel"}
        out.append((layer.name, [(f"{layer.name}/{k}:0", np.asarray(d[src.get(k, k)], np.float32)) for k in keys]))
    return out


def _attr(values, as_bytes):
    if as_bytes:
        return np.array([v.encode() for v in values], dtype=f"S{max(1, max((len(v) for v in values), default=1))}")
    return np.array(values, dtype=h5py.string_dtype())


def write_legacy(path, layers, *, as_bytes=False, chunks=1, full_model=False, rename=None, strip_suffix=False):
    """Write ``layers`` ([(name, [(weight name, array)])]) in the legacy layout.

    as_bytes: store attributes as fixed-length bytes (older h5py/Keras);
    chunks: split ``layer_names`` into ``layer_names0..`` (Keras does this above 64 KB);
    full_model: put everything under ``model_weights/`` with a ``model_config`` root attribute;
    rename: {old layer name: new name} (e.g. predictions -> Logits);
    strip_suffix: Keras 3's legacy writer -- no ':0', depthwise weight called 'kernel'.
    """
    rename = rename or {}
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        if full_model:
            f.attrs["model_config"] = '{"class_name": "Functional", "config": {"name": "imitation"}}'
        names = [rename.get(n, n) for n, _ in layers]
        if chunks == 1:
            root.attrs["layer_names"] = _attr(names, as_bytes)
        else:
            for i, part in enumerate(np.array_split(np.array(names, dtype=object), chunks)):
                root.attrs[f"layer_names{i}"] = _attr(list(part), as_bytes)
        root.attrs["backend"] = "tensorflow"
        root.attrs["keras_version"] = "2.1.6"
        for (old, weights), name in zip(layers, names):
            g = root.create_group(name)
            wnames = []
            for wn, a in weights:
                wn = wn.replace(old + "/", name + "/", 1)
                if strip_suffix:
                    wn = wn.replace(":0", "").replace("depthwise_kernel", "kernel")
                g.create_dataset(wn, data=a)
                wnames.append(wn)
            g.attrs["weight_names"] = _attr(wnames, as_bytes) if wnames else np.zeros((0,), np.float64)

"""Step 1 for every Keras file: read any of Keras's four formats into ``h5io.H5Layer`` lists.

``read(path)`` returns a ``KerasFile``: the layers that have weights, in model order, with nested
models expanded in place, under their Keras layer names -- the same step-1 output as
``h5io.read_legacy_h5``, so ``convert.assign`` (step 2) works unchanged. ``split`` then finds the
MobileNetV2 backbone in it (and a classifier, or a user's own head), ``infer`` works out the
configuration, and ``load(path)`` returns a ready ``Model``.

The four formats (dispatched by content, not by file name; measured layouts in
shared/reference/keras-facts.md section 2; Keras source ``legacy/saving/legacy_h5_format.py`` and
``saving/saving_lib.py``):

=================  ==========================================  ==========================================
format             written by                                  weights are at
=================  ==========================================  ==========================================
legacy-weights     tf_keras ``save_weights('w.h5')``; the       ``/<layer>/<weight name>``, order from the
                   official ImageNet files                      ``layer_names`` / ``weight_names`` attrs
legacy-model       ``model.save('m.h5')`` (tf_keras, Keras 3)   the same under ``/model_weights``; the
                                                                architecture in the ``model_config`` attr
keras3-weights     Keras 3 ``save_weights('w.weights.h5')``     ``layers/<class_snake>[_N]/vars/0..k``
keras3-model       Keras 3 ``model.save('m.keras')``: a zip     ``model.weights.h5`` (keras3-weights
                   (or the same as a folder, ``zipped=False``)  layout) + ``config.json``
=================  ==========================================  ==========================================

Keras 3 keys layers by class and position, not by name: ``layers/conv2d_2`` is the third Conv2D
of its model. h5py lists ``conv2d_10`` before ``conv2d_2``, so entries are ordered by the numeric
suffix; with a config (``.keras``) the exact order comes from it (Keras's own naming rule), without
one the Conv2D / DepthwiseConv2D / BatchNormalization queues are merged in MobileNetV2's pattern.
Each ``vars`` group's ``name`` attribute (the real layer name) becomes the layer name, so
``convert.assign`` cross-checks it. ``.keras`` members are stored uncompressed; the weights member
is read into memory (its CRC checked) and opened by h5py from there: nothing is extracted to disk.

Nested models (``Model(inputs, head(base(inputs)))``, ``Sequential([base, ...])``): the legacy
writers put all of the sub-model's arrays in one group with weight names ``Conv1/kernel:0``, ...;
they are split back into layers by that prefix. Keras 3 nests ``layers/functional/layers/...``.

Errors: every failure is a ``ValueError`` (readable file, wrong content) or an ``OSError`` (missing,
empty, a directory, not HDF5/zip, truncated, damaged), and names the file; never a raw h5py trace.
"""
from __future__ import annotations

import io
import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field

import numpy as np

from . import arch, convert, h5io
from .h5io import H5Layer

FORMATS = {
    "legacy-weights": "legacy Keras HDF5 weights file (save_weights('w.h5'))",
    "legacy-model": "legacy Keras HDF5 model file (model.save('m.h5'))",
    "keras3-weights": "Keras 3 weights file (save_weights('w.weights.h5'))",
    "keras3-model": "Keras 3 model archive (model.save('m.keras'))",
}
#: Keras 3's names of the variables of the layer classes in MobileNetV2, in ``vars/0..k`` order.
VAR_NAMES = {"conv2d": ("kernel", "bias"), "depthwise_conv2d": ("kernel", "bias"), "dense": ("kernel", "bias"),
             "batch_normalization": convert.BN_ORDER}
SNAKE = {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d", "BatchNormalization": "batch_normalization",
         "Dense": "dense"}
MODEL_CLASSES = ("Functional", "Model", "Sequential")
OFFICIAL_NAME = re.compile(r"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_(\d+\.\d+)_(\d+)(_no_top)?\.h5$")


@dataclass
class ConfigLayer:
    """One layer of the file's model config, nested models flattened in place (the model entry first)."""

    name: str
    class_name: str
    config: dict
    model: str | None  # the (sub-)model it belongs to


@dataclass(eq=False)
class KerasFile:
    """What ``read`` found. ``os.fspath(kf)`` is the path, so ``MobileNetV2(weights=kf)`` works."""

    path: str
    format: str
    layers: list  # [H5Layer]: every layer with weights, model order, nested models expanded
    config: list | None = None  # [ConfigLayer] from model_config / config.json, or None
    strict: bool = True  # MobileNetV2(weights=...) is strict like Keras; mnv2ref.load relaxes it

    def __fspath__(self):
        return self.path


def _to_snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case`` (how Keras 3 names the groups of ``layers/``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# --- reading ---------------------------------------------------------------------------------------------------


def read(path) -> KerasFile:
    """Read any of the four formats (see the module docstring) -> ``KerasFile``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found: {path!r}")
    if os.path.isdir(path):
        if all(os.path.isfile(os.path.join(path, m)) for m in ("config.json", "model.weights.h5")):
            with open(os.path.join(path, "config.json"), "rb") as c, \
                    open(os.path.join(path, "model.weights.h5"), "rb") as w:
                return _guard(path, lambda: _from_keras_members(path, c.read(), w.read()))
        raise IsADirectoryError(f"weights path is a directory, not a file: {path!r}")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise OSError(f"weights file is empty (0 bytes): {path!r}")
    if head.startswith(b"PK"):
        return _guard(path, lambda: _read_zip(path))
    return _guard(path, lambda: _read_h5(path))


def _guard(path: str, fn):
    """Run ``fn``; our errors (which name the file) pass, anything else becomes an OSError naming it."""
    try:
        return fn()
    except (ValueError, OSError) as e:
        if repr(path) in str(e):
            raise
        raise OSError(f"{path!r}: damaged or unreadable file ({type(e).__name__}: {e})") from None
    except Exception as e:  # h5py/zipfile/json internals on corrupt input: KeyError, RuntimeError, ...
        raise OSError(f"{path!r}: damaged or unreadable file ({type(e).__name__}: {e})") from None


def _read_zip(path: str) -> KerasFile:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise OSError(f"{path!r} starts like a zip file (a '.keras' archive?) but cannot be read as one: {e}") from None
    with zf:
        names = zf.namelist()
        missing = [m for m in ("config.json", "model.weights.h5") if m not in names]
        if missing:
            raise ValueError(f"{path!r} is a zip file but not a Keras '.keras' archive: no {missing} among its "
                             f"members {names[:10]}")
        try:  # zf.read checks each member's CRC: a flipped byte is an error here, not a wrong weight
            return _from_keras_members(path, zf.read("config.json"), zf.read("model.weights.h5"))
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
            raise OSError(f"{path!r}: damaged '.keras' archive ({e})") from None


def _from_keras_members(path: str, config_bytes: bytes, weights_bytes: bytes) -> KerasFile:
    try:
        config = json.loads(config_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path!r}: config.json is not valid JSON ({e})") from None
    import h5py

    try:
        f = h5py.File(io.BytesIO(weights_bytes), "r")
    except OSError as e:
        raise OSError(f"{path!r}: the member model.weights.h5 is not a readable HDF5 file ({e})") from None
    with f:
        layers = _read_keras3(f, path, len(weights_bytes), config)
    return KerasFile(path, "keras3-model", layers, _flatten_config(config, path))


def _read_h5(path: str) -> KerasFile:
    with h5io._open(path) as f:
        size = os.path.getsize(path)
        if h5io.read_list_attr(f, "layer_names") is not None or "model_weights" in f:
            config = None
            if "model_config" in f.attrs:
                try:
                    config = json.loads(h5io._decode(h5io.read_attr(f, "model_config")))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path!r}: the 'model_config' attribute is not valid JSON ({e})") from None
            fmt = "legacy-model" if "model_weights" in f and "layer_names" not in f.attrs else "legacy-weights"
            layers = _expand_nested(h5io.read_legacy(f, path, size), path)
            return KerasFile(path, fmt, layers, _flatten_config(config, path) if config is not None else None)
        if "layers" in f:
            return KerasFile(path, "keras3-weights", _read_keras3(f, path, size, None))
        raise ValueError(
            f"{path!r} is an HDF5 file but not a legacy Keras weights file (no 'layer_names' attribute, no "
            f"'model_weights' group) nor a Keras 3 one (no 'layers' group); its top-level entries are "
            f"{sorted(f.keys())[:10]}")


def _expand_nested(layers: list, path: str) -> list:
    """Split a nested model's group (weight names 'Conv1/kernel:0', 'bn_Conv1/gamma:0', ...) into layers."""
    out = []
    for layer in layers:
        prefixes = [w.rsplit("/", 1)[0] if "/" in w else layer.name for w, _ in layer.weights]
        if len(set(prefixes)) <= 1:
            out.append(layer)
            continue
        groups: dict = {}
        for prefix, (w, a) in zip(prefixes, layer.weights):
            groups.setdefault(prefix.rsplit("/", 1)[-1], []).append((w, a))
        for name, weights in groups.items():
            by = {convert._var_name(w): (w, a) for w, a in weights}
            if len(by) == 4 and set(by) == set(convert.BN_ORDER):  # trainable / non-trainable may interleave
                weights = [by[k] for k in convert.BN_ORDER]
            out.append(H5Layer(name, weights))
    return out


def _vars(g, path: str, where: str, size: int, spans: list):
    """(name attribute or None, [arrays in vars/0..k order]) of a Keras 3 layer group."""
    v = g.get("vars")
    if v is None:
        return None, []
    keys = list(v.keys())
    if not all(k.isdigit() for k in keys) or sorted(map(int, keys)) != list(range(len(keys))):
        raise ValueError(f"{path!r}: {where}/vars holds {sorted(keys)}, expected datasets named 0..{len(keys) - 1}")
    name = h5io._decode(h5io.read_attr(v, "name")) if "name" in v.attrs else None
    return name, [h5io.read_array(v[str(i)], path, f"{where}/vars/{i}", size, spans) for i in range(len(keys))]


def _h5layer(name: str, snake: str, arrays: list) -> H5Layer:
    vn = VAR_NAMES.get(snake, ())
    return H5Layer(name, [(f"{name}/{vn[i] if i < len(vn) else i}", a) for i, a in enumerate(arrays)])


def _read_keras3(f, path: str, size: int, config) -> list:
    if "layers" not in f:
        raise ValueError(f"{path!r}: no 'layers' group, so not a Keras 3 weights file")
    spans: list = []
    if config is not None:
        out: list = []
        _by_config(f, "", config, path, size, out, spans)
    else:
        out = _by_pattern(f, path, size, spans)
    h5io.check_spans(spans, path)
    return out


def _by_config(group, where: str, model_cfg: dict, path: str, size: int, out: list, spans: list):
    """Walk ``layers/`` in the config's order, naming the groups with Keras's own rule (class + counter)."""
    inner = model_cfg.get("config")
    layer_cfgs = inner if isinstance(inner, list) else (inner or {}).get("layers") or []
    sequential = model_cfg.get("class_name") == "Sequential"
    used: dict = {}
    for lc in layer_cfgs:
        cls = lc.get("class_name", "")
        if sequential and cls == "InputLayer":  # Sequential.layers leaves out its input layer
            continue
        snake = _to_snake_case(cls)
        used[snake] = used.get(snake, -1) + 1
        key = snake if used[snake] == 0 else f"{snake}_{used[snake]}"
        cfg = lc.get("config") if isinstance(lc.get("config"), dict) else {}
        name = lc.get("name") or cfg.get("name") or key
        g = group["layers"].get(key) if "layers" in group else None
        here = f"{where}layers/{key}"
        if isinstance(cfg.get("layers"), list):  # a nested model
            if g is not None:
                _by_config(g, here + "/", lc, path, size, out, spans)
            continue
        if g is None:
            if cls in SNAKE:
                raise ValueError(f"{path!r}: layer {name!r} ({cls}) of config.json has no group {here!r} in "
                                 f"model.weights.h5")
            continue
        attr, arrays = _vars(g, path, here, size, spans)
        if attr is not None and attr != name:
            raise ValueError(f"{path!r}: {here} is named {attr!r} in the weights but config.json puts layer "
                             f"{name!r} there: the two members do not belong together")
        if arrays:
            out.append(_h5layer(name, snake, arrays))


def _entries(group, where: str, path: str, size: int, spans: list) -> list:
    """Every Keras 3 layer group with weights below ``group``: (container, snake, counter, name, arrays)."""
    out = []
    for key in group.get("layers", {}).keys() if "layers" in group else []:
        g = group["layers"][key]
        here = f"{where}layers/{key}"
        if "layers" in g:
            out += _entries(g, here + "/", path, size, spans)
        m = re.fullmatch(r"(.*?)(?:_(\d+))?", key)
        attr, arrays = _vars(g, path, here, size, spans)
        if arrays:
            out.append((where, m.group(1), int(m.group(2) or 0), attr, arrays))
    return out


def _by_pattern(f, path: str, size: int, spans: list) -> list:
    """No config: merge the per-class queues in MobileNetV2's layer pattern; other layers follow."""
    entries = _entries(f, "", path, size, spans)
    if not entries:
        raise ValueError(f"{path!r}: the Keras 3 weights file holds no layer with weights")
    home = next((e[0] for e in entries if e[3] == "Conv1"), None)
    if home is None:  # the container with the most Conv2D layers
        counts: dict = {}
        for e in entries:
            counts[e[0]] = counts.get(e[0], 0) + (e[1] == "conv2d")
        home = max(counts, key=counts.get)
    queues: dict = {}
    for e in sorted((e for e in entries if e[0] == home), key=lambda e: (e[1], e[2])):
        queues.setdefault(e[1], []).append(e)
    out, used = [], set()
    for want in arch.weighted_layers(1.0, include_top=False):
        q = queues.get(SNAKE[want.kind], [])
        if not q:
            n = sum(1 for l in arch.weighted_layers(1.0, False) if l.kind == want.kind)
            have = sum(1 for e in entries if e[0] == home and e[1] == SNAKE[want.kind])
            raise ValueError(f"{path!r}: {have} '{SNAKE[want.kind]}' layer groups under {home + 'layers/'!r}, "
                             f"MobileNetV2 has {n}: no layer for {want.name!r}")
        e = q.pop(0)
        used.add(id(e))
        out.append(_h5layer(e[3] or want.name, e[1], e[4]))
    rest = [e for e in entries if id(e) not in used]
    named = all(e[3] is not None for e in rest)
    for e in sorted(rest, key=lambda e: (e[0] != home, e[0], e[1] != "dense", e[1], e[2])):
        fallback = "predictions" if len(rest) == 1 and e[1] == "dense" and not named else f"{e[0]}{e[1]}_{e[2]}"
        out.append(_h5layer(e[3] or fallback, e[1], e[4]))
    return out


def _flatten_config(cfg, path: str, model: str | None = None) -> list:
    """The model config's layers in order, nested models expanded after their own entry."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{path!r}: the model config is not a JSON object")
    inner = cfg.get("config")
    layer_cfgs = inner if isinstance(inner, list) else (inner or {}).get("layers") or []
    model = model or ((inner or {}).get("name") if isinstance(inner, dict) else None)
    out = []
    for lc in layer_cfgs:
        if not isinstance(lc, dict):
            continue
        c = lc.get("config") if isinstance(lc.get("config"), dict) else {}
        name = lc.get("name") or c.get("name") or ""
        out.append(ConfigLayer(name, lc.get("class_name", ""), c, model))
        if isinstance(c.get("layers"), list):
            out += _flatten_config(lc, path, name)
    return out


# --- finding MobileNetV2 in the file ---------------------------------------------------------------------------


@dataclass
class Parts:
    """The file's layers with weights, cut into the user's layers before the backbone (``pre``), the
    104 backbone layers, and what follows (``rest``: MobileNetV2's classifier, or a user's head)."""

    pre: list
    backbone: list
    rest: list
    config: list | None = None
    head: list = field(default_factory=list)  # [ConfigLayer] after out_relu (config only)
    before: list = field(default_factory=list)  # [ConfigLayer] between the input and Conv1 (config only)

    @property
    def classifier(self):
        """The single Dense layer on Conv_1's channels after the backbone, if that is all there is."""
        if len(self.rest) != 1 or len(self.rest[0].weights) != 2 or self.rest[0].weights[0][1].ndim != 2:
            return None
        last = self.backbone[-2].weights[0][1].shape[-1] if len(self.backbone) >= 2 and self.backbone[-2].weights \
            else None  # Conv_1's kernel (1, 1, in, out)
        return self.rest[0] if last is None or self.rest[0].weights[0][1].shape[0] == last else None

    def top_fits(self) -> bool:
        """The head is MobileNetV2's top: GlobalAveragePooling2D then one Dense, softmax or linear."""
        if self.classifier is None:
            return False
        if self.config is None:
            return True
        head = [l for l in self.head if l.class_name not in ("Dropout", "InputLayer") and l.class_name not in
                MODEL_CLASSES]
        return (len(head) == 2 and head[0].class_name == "GlobalAveragePooling2D"
                and not head[0].config.get("keepdims", False) and head[1].class_name == "Dense"
                and head[1].config.get("activation", "linear") in ("softmax", "linear")
                and head[1].config.get("use_bias", True))


_BACKBONE = [l.name for l in arch.weighted_layers(1.0, include_top=False)]
_BACKBONE_SET = set(_BACKBONE)


def _describe(layers) -> str:
    return ", ".join(f"{l.name!r} {[tuple(a.shape) for _, a in l.weights]}" for l in layers)


def split(kf: KerasFile) -> Parts:
    """Locate the backbone: by the Keras layer names when the file has them, else by position."""
    layers, path = kf.layers, kf.path
    names = [l.name for l in layers]
    pos = [i for i, n in enumerate(names) if n in _BACKBONE_SET]
    if len(pos) >= 0.9 * len(_BACKBONE):
        first, last = pos[0], pos[-1]
        if last - first + 1 != len(_BACKBONE) or len(pos) != len(set(names[first:last + 1]) & _BACKBONE_SET):
            missing = [n for n in _BACKBONE if n not in names]
            unknown = [n for n in names if n not in _BACKBONE_SET and n not in ("predictions", "Logits")]
            dup = sorted({n for n in names if n in _BACKBONE_SET and names.count(n) > 1})
            if dup or not (missing and unknown and len(layers) in (104, 105)):  # else: renamed; Keras goes by position
                what = "; ".join(s for s in (
                    f"missing layer(s) {missing}" if missing else "",
                    f"unknown layer(s) {[n for n in names[first:last + 1] if n not in _BACKBONE_SET] or unknown}"
                    if unknown else "",
                    f"layer(s) {dup} appear more than once" if dup else "") if s)
                raise ValueError(f"{path!r}: the MobileNetV2 layers of the file do not line up ({what}); the file "
                                 f"has {len(layers)} layers with weights, MobileNetV2 has 104 (+1 classifier)")
            first, last = 0, len(_BACKBONE) - 1
        pre, backbone, rest = layers[:first], layers[first:last + 1], layers[last + 1:]
    else:
        if len(layers) < len(_BACKBONE):
            raise ValueError(f"{path!r}: the file has {len(layers)} layers with weights, MobileNetV2 has 104 "
                             f"(+1 with the classifier). The file: {convert.guess_config(layers)}.")
        pre, backbone, rest = [], layers[:len(_BACKBONE)], layers[len(_BACKBONE):]
    parts = Parts(pre, backbone, rest)
    leaf = [c for c in kf.config or () if c.class_name not in MODEL_CLASSES]
    cnames = [c.name for c in leaf]
    if "Conv1" in cnames and "out_relu" in cnames:  # else the config says nothing we can use
        parts.config = kf.config
        parts.before = [c for c in leaf[:cnames.index("Conv1")] if c.class_name != "InputLayer"]
        parts.head = leaf[cnames.index("out_relu") + 1:]
    return parts


def select(kf: KerasFile, include_top: bool, classes: int) -> list:
    """The file's layers for ``MobileNetV2(include_top, classes)``, warning about what is left out."""
    parts, path = split(kf), kf.path
    ignored = list(parts.pre)
    out = list(parts.backbone)
    official = parts.classifier is not None and parts.classifier.name in ("predictions", "Logits")
    if include_top:
        if parts.classifier is not None and parts.top_fits():
            out.append(parts.classifier)
        elif parts.rest:
            raise ValueError(
                f"{path!r}: the layers after the MobileNetV2 backbone ({_describe(parts.rest)}"
                + (f"; config: {[f'{c.name} ({c.class_name})' for c in parts.head]}" if parts.head else "")
                + ") are not MobileNetV2's classifier (GlobalAveragePooling2D + one Dense, softmax or linear); "
                  "use include_top=False to load the backbone only")
    elif official and kf.strict:
        out.append(parts.classifier)  # Keras refuses a with-top file for include_top=False: so does assign
    elif not official:
        ignored += parts.rest
    if ignored or parts.before:
        msg = f"{path!r}: loaded the MobileNetV2 backbone ('Conv1' .. 'Conv_1_bn'); ignored "
        bits = []
        if parts.before:
            bits.append(f"the layers before it {[f'{c.name} ({c.class_name})' for c in parts.before]} "
                        "(apply them to the input yourself)")
        if ignored:
            bits.append(f"the layers with weights {_describe(ignored)}")
        head = [f"{c.name} ({c.class_name})" for c in parts.head] if not include_top else []
        if head:
            bits.append(f"(the file's head after 'out_relu' is {head})")
        warnings.warn(msg + "; ".join(bits), UserWarning, stacklevel=4)
    return out


def load_raw(weights, alpha: float, include_top: bool, classes: int) -> dict:
    """File (path or ``KerasFile``) -> checked raw Keras arrays for ``Model`` (steps 1 + 2)."""
    kf = weights if isinstance(weights, KerasFile) else read(weights)
    raw = convert.assign(select(kf, include_top, classes), alpha, include_top, classes, kf.path)
    for name, arrays in raw.items():
        for var, a in arrays.items():
            if not np.isfinite(a).all():
                raise ValueError(f"{kf.path!r}: layer {name!r} array {var!r} {a.shape} holds "
                                 f"{int(np.size(a) - np.isfinite(a).sum())} NaN/inf values (a damaged file?)")
    return raw


# --- working out the configuration -----------------------------------------------------------------------------


def infer(kf: KerasFile) -> dict:
    """MobileNetV2 keyword arguments that reproduce the file: alpha (from the widths), include_top and
    classes (from the classifier), input_shape / pooling / classifier_activation / name (from the config,
    when the file has one; else the official file name's size, or Keras's defaults)."""
    parts = split(kf)
    config = parts.config or []
    cfg = {c.name: c for c in config}
    conv1 = cfg.get("Conv1")
    backbone_model = conv1.model if conv1 is not None else None
    hint_alpha = hint_rows = None
    m = OFFICIAL_NAME.search(os.path.basename(kf.path))
    if m:
        hint_alpha, hint_rows = float(m.group(1)), int(m.group(2))
    mm = re.fullmatch(r"mobilenetv2_(\d+\.\d+)_(\w+)", backbone_model or "")
    if mm:
        hint_alpha = float(mm.group(1))
    alpha, note = convert.infer_alpha(parts.backbone, hint_alpha, kf.path)
    if note:
        warnings.warn(f"{kf.path!r}: {note}", UserWarning, stacklevel=3)
    top = parts.top_fits()
    out = {"alpha": alpha, "include_top": top}
    if top:
        out["classes"] = int(parts.classifier.weights[0][1].shape[1])
        act = parts.head[-1].config.get("activation") if parts.head else None
        out["classifier_activation"] = "softmax" if act in (None, "softmax") else None
    elif parts.head and parts.head[0].class_name in ("GlobalAveragePooling2D", "GlobalMaxPooling2D") \
            and not parts.head[0].config.get("keepdims", False):
        out["pooling"] = "avg" if parts.head[0].class_name == "GlobalAveragePooling2D" else "max"
    shape = None
    if config:
        inputs = [c for c in config if c.class_name == "InputLayer" and c.model == backbone_model] or \
                 [c for c in config if c.class_name == "InputLayer"]
        if inputs:
            s = inputs[0].config.get("batch_shape") or inputs[0].config.get("batch_input_shape")
            if isinstance(s, list) and len(s) == 4:
                shape = tuple(s[1:])
        if backbone_model:
            out["name"] = backbone_model
    elif hint_rows and top:
        shape = (hint_rows, hint_rows, 3)
    if shape is not None and (shape[0] is None or shape[1] is None) and top:
        warnings.warn(f"{kf.path!r}: the model was built for any input size, but a model with its classifier "
                      "needs a fixed one: using input_shape=(224, 224, 3) (pass input_shape=... to choose)",
                      UserWarning, stacklevel=3)
        shape = (224, 224, 3)
    if shape is not None and shape != (None, None, 3):
        out["input_shape"] = shape
    return out


LOAD_OVERRIDES = ("input_shape", "alpha", "include_top", "pooling", "classes", "classifier_activation", "name",
                  "dtype", "backend")


def load(path, **overrides):
    """Open any Keras MobileNetV2 file (the four formats) and return a ready ``Model``, configured by itself.

    ``mnv2ref.load("m.keras")``; keyword arguments (``input_shape``, ``alpha``, ``include_top``,
    ``pooling``, ``classes``, ``classifier_activation``, ``name``; ``dtype``, ``backend``) override what is inferred
    (see ``infer``) and are checked against the file like ``MobileNetV2(weights=path, ...)``. A
    model that is MobileNetV2 plus the user's own head loads as the backbone (``include_top=False``,
    with the pooling found after ``out_relu``) and a warning listing what was ignored; a head that is
    exactly GlobalAveragePooling2D + one Dense loads as MobileNetV2's classifier.
    """
    bad = sorted(set(overrides) - set(LOAD_OVERRIDES))
    if bad:
        raise TypeError(f"mnv2ref.load() got unexpected keyword argument(s) {bad}; allowed: {list(LOAD_OVERRIDES)}")
    kf = read(path)
    kwargs = infer(kf)
    if overrides.get("include_top") is False:
        for k in ("classes", "classifier_activation"):
            kwargs.pop(k, None)
    if overrides.get("include_top") and not kwargs["include_top"]:
        kwargs.pop("pooling", None)
    kwargs.update(overrides)
    kf.strict = False
    from .model import MobileNetV2

    return MobileNetV2(weights=kf, **kwargs)

"""What several subcommands share: the weights / alpha / size options, building the model, reading inputs."""
from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np

from ..image import INTERPOLATIONS


class CLIError(Exception):
    """A user error: printed as ``mnv2ref <command>: message`` with exit status 2, no traceback."""


def add_weights_arg(p, default="imagenet", required=False):
    p.add_argument("--weights", default=None if required else default, required=required,
                   metavar="FILE|imagenet|random",
                   help="a Keras weights or model file; 'imagenet' = the official file, found as "
                        "MobileNetV2(weights='imagenet') finds it (Keras's cache ~/.keras/models first); "
                        "'random' = seeded random weights "
                        f"(default: {default if not required else 'required'})")
    p.add_argument("--seed", type=int, default=0, help="seed of --weights random (default 0)")


def add_alpha_arg(p, default_help="from the weights file (its name, or its shapes); 1.0 otherwise"):
    p.add_argument("--alpha", type=float, default=None, help=f"width multiplier (default: {default_help})")


def add_size_args(p, default_help="from the weights file name; 224 otherwise"):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--size", type=int, metavar="S", help=f"square input size S x S (default: {default_help})")
    g.add_argument("--input-shape", type=int, nargs=2, metavar=("H", "W"), help="input height and width")


def add_model_shape_args(p):
    """--dynamic and --pooling: how a no-top model is built (as in MobileNetV2(input_shape=..., pooling=...))."""
    p.add_argument("--dynamic", action="store_true",
                   help="no-top weights: build with input_shape=(None, None, 3) (Keras pads stride-2 layers "
                        "differently then)")
    p.add_argument("--pooling", choices=("avg", "max"), help="no-top weights: add global pooling")


def add_backend_arg(p, default: str | None = None, why: str = ""):
    """--backend, when the model has more than one (``model.BACKENDS``); None = the model's default."""
    from ..model import BACKENDS

    if default not in BACKENDS:
        default = None
    p.add_argument("--backend", choices=BACKENDS, default=default,
                   help=f"how the model runs: {' or '.join(BACKENDS)} (default: {default or BACKENDS[0]}{why}); "
                        "same results to rounding")


def add_image_args(p):
    p.add_argument("--interpolation", choices=INTERPOLATIONS, default="nearest",
                   help="resampling when resizing images (default: nearest, as keras.utils.load_img)")
    p.add_argument("--keep-aspect-ratio", action="store_true",
                   help="centre-crop to the target aspect ratio before resizing (load_img's keep_aspect_ratio)")


def requested_hw(args):
    if getattr(args, "input_shape", None):
        return tuple(args.input_shape)
    if getattr(args, "size", None):
        return (args.size, args.size)
    return None


def inspect_weights(path: str) -> dict:
    """What a Keras weights file says about itself: alpha, include_top, classes, and when it knows them the
    input shape and pooling, via ``formats.infer`` (every Keras format)."""
    from ..formats import infer, read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kf = read(path)
        cfg = infer(kf)
    shape = cfg.get("input_shape")
    return {"alpha": cfg["alpha"], "include_top": cfg["include_top"], "classes": cfg.get("classes"),
            "input_hw": tuple(shape[:2]) if shape and shape[0] is not None else None, "pooling": cfg.get("pooling"),
            "file": kf}


def model_config(args, *, top: bool | None = None, input_hw=None) -> dict:
    """Resolve --weights/--alpha/--size into MobileNetV2(...) keyword arguments.

    ``top``: True/False to require a model with/without the classifier, None to follow the file.
    ``input_hw``: the (H, W) of the input when known (arrays), used when no size is given.
    """
    from ..model import imagenet_rows, resolve_imagenet

    weights = args.weights
    hw = requested_hw(args)
    alpha = args.alpha
    kw = {}
    if weights in ("random", "none", "None"):
        include_top = True if top is None else top
        kw = dict(weights=None, seed=getattr(args, "seed", 0))
        alpha = 1.0 if alpha is None else alpha
    elif weights == "imagenet":
        include_top = True if top is None else top
        alpha = 1.0 if alpha is None else alpha
        hw = hw or input_hw or (224, 224)
        resolve_imagenet(alpha, imagenet_rows(*hw), include_top)  # the clear error when it is not in the cache
        kw = dict(weights="imagenet")
    else:
        if not os.path.exists(weights):
            raise CLIError(f"weights file not found: {weights!r} (give a Keras weights or model file, 'imagenet' "
                           "or 'random')")
        info = inspect_weights(weights)
        if top is not None and info["include_top"] != top:
            raise CLIError(f"{weights!r} has {'a' if info['include_top'] else 'no'} classifier; this command needs "
                           f"a model {'with' if top else 'without'} one")
        include_top = info["include_top"]
        if alpha is None:
            alpha = info["alpha"]
            if alpha is None:
                raise CLIError(f"cannot tell the width multiplier of {weights!r} from its name or shapes: pass --alpha")
        file_hw = info.get("input_hw")
        if hw is None:  # a model with its top keeps the file's size; without, the input's own size wins
            hw = file_hw if include_top else (input_hw or file_hw)
        kw = dict(weights=weights, _file=info.get("file"))  # _file: the file already read, not read again
        if info["classes"]:
            kw["classes"] = info["classes"]
        if info.get("pooling") and not include_top and getattr(args, "pooling", None) is None:
            args.pooling = info["pooling"]
    if hw is None:
        hw = input_hw or (224, 224)
    shape = (None, None, 3) if (getattr(args, "dynamic", False) and not include_top) else (hw[0], hw[1], 3)
    pooling = getattr(args, "pooling", None)
    if pooling and include_top:
        raise CLIError("--pooling applies to weights without the classifier (no-top) only")
    return dict(kw, alpha=alpha, include_top=include_top, input_shape=shape, pooling=pooling)


def build_model(args, *, top=None, input_hw=None, dtype="float32", activation="softmax", images=None):
    """``images``: the job's size when known; a small first job on a machine answers with NumPy while the
    kernels compile in the background (``cli/compile.py``)."""
    from ..model import MobileNetV2
    from .compile import ensure_compiled, first_run_backend

    cfg = model_config(args, top=top, input_hw=input_hw)
    kw = {k: v for k, v in cfg.items() if k != "_file"}
    if cfg.get("_file") is not None:
        kw["weights"] = cfg["_file"]
    if getattr(args, "backend", None):
        kw["backend"] = args.backend
    elif first_run_backend(cfg, dtype, images):
        kw["backend"] = "numpy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # position-matched layer names in user files are fine here
        model = MobileNetV2(dtype=dtype, classifier_activation=activation, **kw)
    if model.backend == "numba":
        ensure_compiled(dtype, cfg)  # under the compile lock; records "compiled for this machine"
    return model, cfg


def compile_kernels(dtype: str, notice_after: float = 1.0, stream=None) -> None:
    """Compile (or load from Numba's cache) the kernels for ``dtype`` before the first image, saying
    so on stderr when it takes long: the first run on a machine compiles for 15-20 s (16 functions per dtype)."""
    import threading

    from .. import kernels

    errors = []

    def run():
        try:
            kernels.warmup((dtype,))
        except BaseException as e:  # noqa: BLE001 -- re-raised in the calling thread
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(notice_after)
    if t.is_alive():
        print("mnv2ref: compiling the Numba kernels (first run on this machine only, 15-20 s; cached "
              "afterwards; --backend numpy needs none)...", file=stream or sys.stderr, flush=True)
        t.join()
    if errors:
        raise errors[0]


def read_input(path: str, hw=None, interpolation="nearest", keep_aspect_ratio=False) -> np.ndarray:
    """An image file (resized to ``hw`` like keras.utils.load_img), a .npy array or a .npz's 'input' ->
    float32 (N, H, W, 3) pixels in [0, 255] (not yet preprocessed)."""
    from ..image import img_to_array, load_img

    low = path.lower()
    if low.endswith((".npy", ".npz")):
        try:
            if low.endswith(".npz"):
                with np.load(path, allow_pickle=False) as z:
                    if "input" not in z.files:
                        raise CLIError(f"{path!r} has no 'input' array (it has {z.files[:6]}...)")
                    x = z["input"]
            else:
                x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CLIError(f"cannot read {path!r}: {e}") from None
        x = np.asarray(x, np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise CLIError(f"{path!r}: expected pixels of shape (H, W, 3) or (N, H, W, 3), got {x.shape}")
        return x
    try:
        img = load_img(path, target_size=hw, interpolation=interpolation, keep_aspect_ratio=keep_aspect_ratio)
    except OSError as e:
        raise CLIError(str(e)) from None
    return img_to_array(img)[None]


def input_hw_of(path: str):
    """(H, W) of a .npy/.npz input, None for images (they are resized to the model)."""
    if path.lower().endswith((".npy", ".npz")):
        return read_input(path).shape[1:3]
    return None


def dump_json(obj, stream=None):
    stream = stream or sys.stdout
    json.dump(obj, stream, indent=1)
    stream.write("\n")

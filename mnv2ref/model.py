"""``MobileNetV2(...)`` with Keras's signature and checks, and the model object it returns."""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict

import numpy as np

from . import arch, convert, forward, numpy_ops

BASE_WEIGHT_PATH = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
DTYPES = ("float32", "float64")
BACKENDS = ("numba", "numpy")


def weights_filename(alpha: float, rows: int, include_top: bool) -> str:
    """The official file name, exactly as Keras forms it (``float(alpha)``: 1 -> '1.0')."""
    top = "" if include_top else "_no_top"
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{top}.h5"


def keras_cache_dir() -> str:
    """Keras's cache for downloaded models: ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def imagenet_rows(rows, cols) -> int:
    """The input size of the official ImageNet file Keras loads for a rows x cols input: ``rows`` when
    the input is square and one of ``arch.IMAGENET_ROWS`` (96, 128, 160, 192, 224), else 224 (Keras's
    fallback, with its warning in ``MobileNetV2``). The one place this rule is written."""
    return rows if rows == cols and rows in arch.IMAGENET_ROWS else 224


def resolve_imagenet(alpha: float, rows: int, include_top: bool, *, base_url: str | None = None,
                     progress: bool | None = None) -> str:
    """The official ImageNet weights file: Keras's cache, then mnv2ref's cache, else downloaded.

    See ``download.py`` (search order, ``MNV2REF_WEIGHTS_URL`` / ``base_url``, ``MNV2REF_HOME``,
    ``MNV2REF_OFFLINE``, the atomic and validated download). FileNotFoundError naming the file,
    the folders and the URL if it cannot be had.
    """
    from . import download

    return download.imagenet_weights(alpha, rows, include_top, base_url_override=base_url, progress=progress)


def _check_input_shape(input_shape, include_top, weights, default_size):
    """Keras's ``obtain_input_shape`` for channels_last -> (H, W, 3), H/W possibly None."""
    if input_tensor_like(input_shape):
        raise ValueError(f"`input_shape` must be a tuple of three integers. Received: input_shape={input_shape!r}")
    default_shape = (default_size, default_size, 3)
    if weights == "imagenet" and include_top:
        if input_shape is not None and tuple(input_shape) != default_shape:
            raise ValueError("When setting `include_top=True` and loading `imagenet` weights, `input_shape` should "
                             f"be {default_shape}.  Received: input_shape={input_shape}")
        return default_shape
    if input_shape:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"`input_shape` must be a tuple of three integers. Received: input_shape={input_shape}")
        if input_shape[-1] != 3:
            raise ValueError(f"The input must have 3 channels; Received `input_shape={input_shape}`")
        if any(d is not None and d < 32 for d in input_shape[:2]):
            raise ValueError(f"Input size must be at least 32x32; Received: input_shape={input_shape}")
    else:
        input_shape = default_shape if include_top else (None, None, 3)
    if include_top and None in input_shape:
        raise ValueError("If `include_top` is True, you should specify a static `input_shape`. "
                         f"Received: input_shape={input_shape}")
    return input_shape


def input_tensor_like(v) -> bool:
    return v is not None and not isinstance(v, (tuple, list))


def MobileNetV2(input_shape=None, alpha=1.0, include_top=True, weights="imagenet", input_tensor=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None, *, dtype="float32",
                backend="numba", banded=None, seed=0):
    """Build MobileNetV2 like ``keras.applications.MobileNetV2`` and load its weights.

    Args (Keras's, same order and defaults):
        input_shape: (H, W, 3); H, W >= 32. None gives (224, 224, 3) with the top and
            (None, None, 3) -- any size at call time -- without it. A model built with
            a fixed size pads its stride-2 layers like Keras does for that size; one
            built with (None, None, 3) pads like Keras's dynamic model (see README).
        alpha: width multiplier; 0.35, 0.5, 0.75, 1.0, 1.3, 1.4 have ImageNet weights.
        include_top: keep global average pooling + the Dense classifier.
        weights: None (random, seeded He-normal), "imagenet" (the official file: Keras's cache,
            mnv2ref's cache, else downloaded), or the path of any Keras file of MobileNetV2:
            legacy ``.h5`` (weights or full model), Keras 3 ``.weights.h5`` or ``.keras``.
        input_tensor: not supported: there is no graph to attach to; must be None.
        pooling: None, "avg" or "max" (only without the top).
        classes: classifier width (1000 with ImageNet weights).
        classifier_activation: "softmax", None/"linear" (logits), or a callable on logits.
        name: model name; default ``mobilenetv2_{alpha:0.2f}_{rows}``.
        dtype (mnv2ref): "float32", or "float64" for the exact reference pass.
        backend (mnv2ref): "numba" (the fast kernels in ``mnv2ref.kernels``) or "numpy"
            (the readable pass in ``numpy_ops``, the kernels' oracle). Same results to rounding.
        banded (mnv2ref): compute each inverted residual block a band of rows at a time
            (MobileNetV2 paper, section 5.1), so its 6x-wide tensors never exist in full.
            Default: on for "numba" (faster and smaller), off for "numpy" (whole tensors
            read best). Results are the same (bit-identical on "numba").
        seed (mnv2ref): seed of the random weights when ``weights=None``.
    """
    if input_tensor is not None:
        raise ValueError("`input_tensor` is not supported by mnv2ref: there is no graph to connect it to. Build "
                         "the model with `input_shape=` and call it on arrays instead.")
    if not (weights in {"imagenet", None} or os.path.exists(os.fspath(weights))):
        raise ValueError("The `weights` argument should be either `None` (random initialization), `imagenet` "
                         "(pre-training on ImageNet), or the path to the weights file to be loaded.  "
                         f"Received `weights={weights}`")
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError('If using `weights="imagenet"` with `include_top` as true, `classes` should be 1000. '
                         f"Received `classes={classes}`")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; Received backend={backend!r}")
    if str(np.dtype(dtype)) not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64'; Received dtype={dtype!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'; Received pooling={pooling!r}")
    if not (classifier_activation in (None, "softmax", "linear") or callable(classifier_activation)):
        raise ValueError("classifier_activation must be 'softmax', None, 'linear' or a callable; "
                         f"Received classifier_activation={classifier_activation!r}")
    if weights is not None and include_top and classifier_activation not in (None, "softmax", "linear"):
        raise ValueError("Only `None` and `softmax` activations are allowed for the `classifier_activation` "
                         "argument when using pretrained weights, with `include_top=True`; Received: "
                         f"classifier_activation={classifier_activation}")

    rows = cols = None
    if input_shape is not None and not input_tensor_like(input_shape) and len(input_shape) == 3:
        rows, cols = input_shape[0], input_shape[1]
    default_size = imagenet_rows(rows, cols)
    input_shape = _check_input_shape(input_shape, include_top, weights, default_size)
    rows, cols = input_shape[0], input_shape[1]
    if weights == "imagenet":
        if alpha not in arch.IMAGENET_ALPHAS:
            raise ValueError("If imagenet weights are being loaded, alpha must be one of `0.35`, `0.50`, `0.75`, "
                             f"`1.0`, `1.3` or `1.4` only; Received `alpha={alpha}`")
        if (rows, cols) != (imagenet_rows(rows, cols),) * 2:
            rows = 224
            warnings.warn("`input_shape` is undefined or non-square, or `rows` is not in [96, 128, 160, 192, 224]. "
                          "Weights for input shape (224, 224) will be loaded as the default.", stacklevel=2)
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha must be a positive number; Received alpha={alpha!r}")
    name = name if name is not None else f"mobilenetv2_{alpha:0.2f}_{rows}"

    if weights is None:
        raw = convert.random_raw(alpha, include_top, classes, seed)
        source = f"random (seed={seed})"
    else:
        from . import formats  # every Keras format; a KerasFile from mnv2ref.load() is used as it is

        path = resolve_imagenet(alpha, rows, include_top) if weights == "imagenet" else weights
        raw = formats.load_raw(path, alpha, include_top, classes)
        source = os.fspath(path)
    return Model(raw, alpha=alpha, input_shape=input_shape, include_top=include_top, pooling=pooling,
                 classes=classes, classifier_activation=classifier_activation, name=name, dtype=dtype,
                 backend=backend, banded=banded, weights_source=source)


class Model:
    """A built MobileNetV2: folded parameters plus what is needed to run and explain them.

    Call it (``model(x)``) or ``predict(x)`` on preprocessed (N, H, W, 3) arrays;
    ``trace(x)`` returns every Keras layer's output by name. Inputs containing NaN or inf
    are refused (ValueError), integer images are converted with a warning if they look like
    un-preprocessed 0..255 pixels; see ``_check`` for the whole input policy.
    """

    def __init__(self, raw, *, alpha, input_shape, include_top, pooling, classes, classifier_activation, name,
                 dtype, backend="numba", banded=None, weights_source=""):
        self.alpha, self.include_top, self.classes, self.name = alpha, include_top, classes, name
        self.pooling = "avg" if include_top else pooling
        self.classifier_activation = classifier_activation
        self.dtype = np.dtype(dtype)
        self.input_shape = (None,) + tuple(input_shape)
        self.static = input_shape[0] is not None
        self.weights_source = weights_source
        # Raw Keras arrays (model dtype) are kept for ``trace``: Keras's conv layers output the
        # convolution before batch-norm, which the folded parameters no longer compute.
        self._raw = {k: {n: np.asarray(a, self.dtype) for n, a in v.items()} for k, v in raw.items()}
        self.params = convert.fold(raw, alpha, include_top, self.dtype)
        self.backend = backend
        self.banded = True if banded is None and backend == "numba" else bool(banded)
        if backend == "numba":
            from . import numba_ops  # imports Numba: only when a numba model is built

            self._ops, self._params = numba_ops, numba_ops.pack(self.params)
            self._plans = {}  # compiled forward passes by (input shape, threads): see compile()
        elif backend == "numpy":
            self._ops, self._params = numpy_ops, self.params
        else:
            raise ValueError(f"backend must be one of {BACKENDS}; Received backend={backend!r}")

    # -- shapes and counts ------------------------------------------------------------
    @property
    def output_shape(self):
        if self.include_top:
            return (None, self.classes)
        c = arch.last_channels(self.alpha)
        if self.pooling:
            return (None, c)
        h, w = self.input_shape[1:3]
        return (None, None if h is None else -(-h // 32), None if w is None else -(-w // 32), c) if not self.static \
            else (None,) + arch.layers(self.alpha, (h, w), False)[-1].shape

    def layers(self, input_hw=None):
        """``arch.Layer`` list (Keras names, output shapes, weights, MACs, padding) at ``input_hw``."""
        hw = input_hw or self.input_shape[1:3]
        if hw[0] is None:
            raise ValueError(f"model {self.name!r} has no fixed input size; pass input_hw=(H, W)")
        return arch.layers(self.alpha, tuple(hw), self.include_top, self.pooling, self.classes,
                           static_hw=self.input_shape[1:3])

    def count_params(self) -> int:
        """All weights including batch-norm's four arrays, as Keras's ``count_params()``."""
        return arch.count_params(self.alpha, self.include_top, self.classes)

    def count_macs(self, input_hw=None) -> int:
        """Multiply-adds per image (convs + depthwise + classifier; the seed table's convention)."""
        return sum(l.macs for l in self.layers(input_hw))

    # -- running ----------------------------------------------------------------------
    def _check(self, x):
        """A valid batch -> a C-contiguous array of the model's dtype; ValueError naming the problem.

        Input policy (mnv2ref's decisions, tested in tests/test_bad_input.py):

        * shape (N, H, W, 3), H and W >= 32, equal to ``input_shape`` if the model was built with
          one; a channels-first batch (N, 3, H, W) is refused with the transpose to apply, a
          single image (H, W, 3) with ``x[None]``;
        * NaN or inf values are **refused** (ValueError with their count): TensorFlow propagates
          them, but what a NaN turns into through ReLU6 differs between TF, NumPy and the compiled
          kernels (``max(NaN, 0)`` is NaN or 0), so there is no exact answer to reproduce;
        * integer inputs (uint8 images straight from PIL) are accepted and converted, like Keras;
          any input whose values are all >= 0 with some > 1.5 gets a warning: it looks like
          0..255 pixels and ``preprocess_input`` (which maps them to [-1, 1]) was probably forgotten;
        * bool, complex, object and string arrays are refused; lists are converted; non-contiguous
          arrays (slices, transposed views) are copied, the result is the same.
        """
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{self.name}: the input cannot be made into an array ({e})") from None
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) \
                or x.dtype == np.bool_:
            raise ValueError(f"{self.name}: expected a numeric (float or integer) array, got dtype {x.dtype}")
        if x.ndim != 4:
            hint = " (a single image? add the batch axis: x[None])" if x.ndim == 3 and x.shape[-1] == 3 else ""
            raise ValueError(f"{self.name}: expected a batch of images (N, H, W, 3), got an array of shape "
                             f"{x.shape}{hint}")
        if x.shape[-1] != 3:
            hint = (" -- this looks channels-first (N, 3, H, W); mnv2ref, like Keras's MobileNetV2, is "
                    "channels-last: pass x.transpose(0, 2, 3, 1)") if x.shape[1] == 3 else ""
            raise ValueError(f"{self.name}: expected 3 channels last (N, H, W, 3), got shape {x.shape}{hint}")
        h, w = x.shape[1:3]
        if h < 32 or w < 32:
            raise ValueError(f"{self.name}: input size must be at least 32x32, got {h}x{w} (shape {x.shape})")
        if self.static and (h, w) != tuple(self.input_shape[1:3]):
            raise ValueError(f"{self.name}: model was built for input_shape {self.input_shape[1:]}, got {x.shape}")
        y = np.ascontiguousarray(x, dtype=self.dtype)
        if y.size:
            lo, hi = y.min(), y.max()  # NaN propagates through both, inf shows in one
            if not (np.isfinite(lo) and np.isfinite(hi)):
                bad = np.argwhere(~np.isfinite(y))
                raise ValueError(f"{self.name}: the input holds {len(bad)} NaN/inf value(s) (first at index "
                                 f"{tuple(int(i) for i in bad[0])}); mnv2ref refuses non-finite inputs")
            if lo >= 0 and hi > 1.5:
                warnings.warn(f"{self.name}: input values range from {lo:g} to {hi:g}: this looks like 0..255 "
                              "pixels. MobileNetV2 expects [-1, 1]: apply mnv2ref.preprocess_input first.",
                              UserWarning, stacklevel=3)
        return y

    def _forward_kwargs(self):
        act = self.classifier_activation
        return dict(params=self._params, alpha=self.alpha, include_top=self.include_top, pooling=self.pooling,
                    activation="softmax" if act == "softmax" else None, static=self.static, banded=self.banded)

    def compile(self, batch_size: int = 1, input_hw=None):
        """Numba backend: build the plan of the forward pass for ``batch_size`` images now and
        compile (or load from Numba's cache) the engine it runs on; returns the plan.

        Calling the model does this on first use of each batch shape anyway (the plan takes
        milliseconds; compiling the engine seconds, once per machine). ``input_hw`` is needed
        for a model built without a fixed input size.
        """
        if self.backend != "numba":
            raise ValueError(f"compile(): only the numba backend is compiled, this model uses {self.backend!r}")
        hw = tuple(input_hw) if input_hw is not None else tuple(self.input_shape[1:3])
        if None in hw:
            raise ValueError(f"model {self.name!r} has no fixed input size; pass input_hw=(H, W)")
        return self._compiled((int(batch_size),) + hw + (3,))

    def _compiled(self, shape):
        """The compiled forward pass for input ``shape`` (kept for the last two shapes used)."""
        from .kernels import get_num_threads

        key = (shape, get_num_threads())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._ops.compile_forward(forward.forward, shape, self.dtype, **self._forward_kwargs())
            while len(self._plans) >= 2:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        return plan

    def _run(self, x, tap=None):
        act = self.classifier_activation
        if self.backend == "numba" and tap is None and x.shape[0] > 0:
            y = self._compiled(x.shape)(x)
        else:
            y = forward.forward(x, ops=self._ops, tap=tap, **self._forward_kwargs())
        if self.include_top and callable(act):
            y = np.asarray(act(y), self.dtype)
            if tap is not None:
                tap("predictions", y)
        return y

    def __call__(self, x):
        """Run the whole batch at once: (N, H, W, 3) -> output (see ``output_shape``)."""
        return self._run(self._check(x))

    def predict(self, x, batch_size=32, verbose=0):
        """Keras-style ``predict``: run in batches of ``batch_size`` and concatenate."""
        x = self._check(x)
        if batch_size is None or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        return np.concatenate([self._run(x[i:i + batch_size]) for i in range(0, max(len(x), 1), batch_size)])

    def trace(self, x) -> "OrderedDict[str, np.ndarray]":
        """Every Keras layer's output for ``x``, by Keras layer name, in model order.

        BN, ReLU, padding, add, pooling and ``predictions`` tensors are the ones the
        forward pass computes (batch-norm folded into the convolution before it).
        Conv layers (``Conv1``, ``*_expand``, ``*_depthwise``, ``*_project``, ``Conv_1``)
        hold what Keras's conv layer outputs: the convolution *before* batch-norm,
        computed here from the unfolded kernel and the previous layer's output.
        """
        x = self._check(x)
        rec = {}

        def tap(name, value):
            rec[name] = value
            return value

        self._run(x, tap)
        out, prev = OrderedDict(), x
        for layer in self.layers(x.shape[1:3]):
            if layer.kind in ("Conv2D", "DepthwiseConv2D"):
                out[layer.name] = self._raw_conv(layer, prev)
            else:
                out[layer.name] = rec[layer.name]
            prev = out[layer.name]
        return out

    def _raw_conv(self, layer, x):
        k = self._raw[layer.name]["kernel"]
        zero = np.zeros(k.shape[-1] if layer.kind == "Conv2D" else k.shape[2], self.dtype)
        if layer.kind == "DepthwiseConv2D":
            return numpy_ops.depthwise3x3(x, k[:, :, :, 0], zero, layer.stride, layer.pad)
        if k.shape[0] == 3:
            return numpy_ops.conv3x3(x, k, zero, layer.stride, layer.pad)
        return numpy_ops.pointwise(x, k[0, 0], zero)

    def __repr__(self):
        return (f"<mnv2ref Model {self.name!r}: alpha={self.alpha}, input_shape={self.input_shape}, "
                f"output_shape={self.output_shape}, dtype={self.dtype}, backend={self.backend!r}, weights={self.weights_source!r}>")

"""The Keras-compatible surface: MobileNetV2's checks and attributes, preprocess_input, decode_predictions, load_img."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import mnv2ref
from mnv2ref import mobilenet_v2


# --- MobileNetV2(...) ----------------------------------------------------------------------------------------


def test_defaults_and_attributes():
    m = mnv2ref.MobileNetV2(weights=None)
    assert m.name == "mobilenetv2_1.00_224"
    assert m.input_shape == (None, 224, 224, 3) and m.output_shape == (None, 1000)
    assert m.alpha == 1.0 and m.count_params() == 3_538_984 and m.count_macs() == 300_774_272


@pytest.mark.parametrize("kwargs,out,name", [
    (dict(include_top=False), (None, None, None, 1280), "mobilenetv2_1.00_None"),
    (dict(include_top=False, pooling="max", alpha=1.4), (None, 1792), "mobilenetv2_1.40_None"),
    (dict(include_top=False, input_shape=(97, 131, 3), alpha=0.5), (None, 4, 5, 1280), "mobilenetv2_0.50_97"),
    (dict(input_shape=(128, 128, 3), classes=10, alpha=0.75), (None, 10), "mobilenetv2_0.75_128"),
    (dict(name="mine"), (None, 1000), "mine"),
])
def test_shapes_and_names(kwargs, out, name):
    m = mnv2ref.MobileNetV2(weights=None, **kwargs)
    assert m.output_shape == out and m.name == name


@pytest.mark.parametrize("kwargs,match", [
    (dict(weights="nope.h5"), "The `weights` argument should be either"),
    (dict(weights="imagenet", classes=10), "`classes` should be 1000"),
    (dict(weights="imagenet", alpha=0.6), "alpha must be one of `0.35`"),
    (dict(weights=None, input_shape=(31, 64, 3), include_top=False), "at least 32x32"),
    (dict(weights=None, input_shape=(64, 64, 1), include_top=False), "3 channels"),
    (dict(weights=None, input_shape=(64, 64), include_top=False), "tuple of three integers"),
    (dict(weights=None, input_shape=(None, None, 3)), "static `input_shape`"),
    (dict(weights="imagenet", input_shape=(96, 96, 3), alpha=1.0, include_top=True), None),  # cache lookup, below
    (dict(weights=None, pooling="mean", include_top=False), "pooling must be"),
    (dict(weights=None, dtype="float16"), "dtype must be"),
    (dict(weights=None, backend="cuda"), "backend must be one of"),
    (dict(weights=None, input_tensor=object()), "`input_tensor` is not supported"),
])
def test_keras_validation_errors(kwargs, match, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("MNV2REF_HOME", str(tmp_path / "mnv2ref"))
    monkeypatch.setenv("MNV2REF_OFFLINE", "1")  # never download from a test
    if match is None:  # a valid imagenet request: fails only because the file is not in the (empty) cache
        with pytest.raises(FileNotFoundError) as e:
            mnv2ref.MobileNetV2(**kwargs)
        msg = str(e.value)
        assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96.h5" in msg and str(tmp_path) in msg
        assert "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" in msg
        return
    with pytest.raises(ValueError, match=match):
        mnv2ref.MobileNetV2(**kwargs)


def test_pretrained_weights_allow_only_softmax_or_none(tmp_path):
    path = tmp_path / "w.h5"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="Only `None` and `softmax`"):
        mnv2ref.MobileNetV2(weights=str(path), classifier_activation=np.tanh)


def test_imagenet_non_standard_size_warns_and_uses_224_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("MNV2REF_HOME", str(tmp_path / "mnv2ref"))
    monkeypatch.setenv("MNV2REF_OFFLINE", "1")
    with pytest.warns(UserWarning, match=r"Weights for input shape \(224, 224\)"):
        with pytest.raises(FileNotFoundError, match=r"kernels_0.5_224_no_top\.h5"):
            mnv2ref.MobileNetV2(weights="imagenet", alpha=0.5, include_top=False, input_shape=(200, 300, 3))


def test_imagenet_resolves_from_keras_cache(tmp_path, monkeypatch):
    """weights='imagenet' takes the official file name from $KERAS_HOME/models (here a random-weights file)."""
    monkeypatch.setenv("MNV2REF_OFFLINE", "1")
    from h5tools import layers_from_raw, write_legacy
    from mnv2ref import arch, convert

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    raw = convert.random_raw(1.0, include_top=False, seed=5)
    write_legacy(tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5",
                 layers_from_raw(raw, arch.layers(1.0, (96, 96), include_top=False)))
    m = mnv2ref.MobileNetV2(weights="imagenet", alpha=1, include_top=False, input_shape=(96, 96, 3))  # alpha=1 -> '1.0'
    ref = mnv2ref.MobileNetV2(weights=None, seed=5, include_top=False, input_shape=(96, 96, 3))
    x = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3))
    np.testing.assert_array_equal(m(x), ref(x))


# --- running ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return mnv2ref.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), seed=3)


def test_predict_batches_equal_call(small):
    x = np.random.default_rng(0).uniform(-1, 1, (5, 96, 96, 3)).astype(np.float32)
    a, b = small.predict(x, batch_size=2), small(x)
    assert a.shape == (5, 1000) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # BLAS may block a batch differently
    np.testing.assert_allclose(a.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("shape,match", [
    ((96, 96, 3), "expected a batch"), ((1, 96, 96, 4), "3 channels"), ((1, 3, 96, 96), "3 channels"),
    ((1, 64, 64, 3), "built for input_shape"),
])
def test_bad_inputs(small, shape, match):
    with pytest.raises(ValueError, match=match):
        small.predict(np.zeros(shape, np.float32))


def test_too_small_for_dynamic_model():
    m = mnv2ref.MobileNetV2(weights=None, alpha=0.35, include_top=False)
    with pytest.raises(ValueError, match="at least 32x32"):
        m(np.zeros((1, 31, 40, 3)))


def test_float64_mode_runs_in_float64():
    m = mnv2ref.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), dtype="float64", seed=3)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3))
    tr = m.trace(x)
    assert all(v.dtype == np.float64 for v in tr.values())


def test_trace_names_shapes_and_consistency(small):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    tr = small.trace(x)
    layers = small.layers()
    assert list(tr) == [l.name for l in layers]
    for l in layers:
        assert tr[l.name].shape == (2,) + l.shape, l.name
    np.testing.assert_allclose(tr["predictions"], small(x), atol=1e-7)
    assert tr["Conv1_relu"].max() <= 6 and tr["Conv1_relu"].min() >= 0
    np.testing.assert_array_equal(tr["block_2_add"], tr["block_1_project_BN"] + tr["block_2_project_BN"])
    # The conv layer holds the convolution before batch-norm; BN(conv) reproduces the BN layer.
    raw = small._raw
    bn = raw["bn_Conv1"]
    scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + 1e-3)
    np.testing.assert_allclose((tr["Conv1"] - bn["moving_mean"]) * scale + bn["beta"], tr["bn_Conv1"],
                               atol=1e-5 * np.abs(tr["bn_Conv1"]).max())


def test_backends_agree_and_import_lazily():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 80, 3))
    a = mnv2ref.MobileNetV2(weights=None, alpha=0.5, include_top=False, backend="numba", seed=4)
    b = mnv2ref.MobileNetV2(weights=None, alpha=0.5, include_top=False, backend="numpy", seed=4)
    assert a.backend == "numba" and "backend='numba'" in repr(a)
    ya, yb = a(x), b(x)
    assert ya.shape == yb.shape == (2, 2, 2, 1280)  # dynamic model: (0, 1) padding, 5 -> 2 at block_13
    assert np.abs(ya - yb).max() <= 1e-5 * np.abs(yb).max()


def test_random_weights_are_seeded():
    x = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3))
    a = mnv2ref.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), seed=1)(x)
    b = mnv2ref.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), seed=1)(x)
    c = mnv2ref.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), seed=2)(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --- preprocess_input ------------------------------------------------------------------------------------------


def test_preprocess_is_bit_exact_division_then_subtraction():
    x = np.arange(256, dtype=np.float32)
    expected = x / np.float32(127.5) - np.float32(1)
    y = mobilenet_v2.preprocess_input(x.copy())
    np.testing.assert_array_equal(y, expected)
    assert y[0] == -1 and y[255] == 1


def test_preprocess_in_place_for_floats_copy_for_ints():
    x = np.full((1, 2, 2, 3), 255.0, np.float64)
    y = mobilenet_v2.preprocess_input(x)
    assert y is x and y.dtype == np.float64 and np.all(x == 1)
    u = np.full((1, 2, 2, 3), 255, np.uint8)
    v = mobilenet_v2.preprocess_input(u)
    assert v is not u and v.dtype == np.float32 and np.all(v == 1) and np.all(u == 255)
    assert mobilenet_v2.preprocess_input([0, 255]).tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="data_format"):
        mobilenet_v2.preprocess_input(x, data_format="nchw")


# --- decode_predictions ----------------------------------------------------------------------------------------


def test_decode_predictions_format_and_order():
    p = np.zeros((2, 1000), np.float32)
    p[0, [281, 285, 999]] = [0.6, 0.3, 0.1]
    p[1, 0] = 1.0
    out = mobilenet_v2.decode_predictions(p, top=3)
    assert [t[:2] for t in out[0]] == [("n02123045", "tabby"), ("n02124075", "Egyptian_cat"),
                                       ("n15075141", "toilet_tissue")]
    assert out[0][0][2] == np.float32(0.6) and isinstance(out[0][0][2], np.float32)
    assert out[1][0][:2] == ("n01440764", "tench")
    assert len(mobilenet_v2.decode_predictions(p, top=0)[0]) == 1000  # Keras: [-0:] is everything


@pytest.mark.parametrize("shape", [(1, 1001), (1000,), (2, 1, 1000), (1, 10)])
def test_decode_predictions_shape_error(shape):
    with pytest.raises(ValueError, match=r"expects a batch of predictions.*Received array with shape"):
        mobilenet_v2.decode_predictions(np.zeros(shape))


# --- load_img --------------------------------------------------------------------------------------------------


def test_load_img_nearest_resize_and_rgb(tmp_path):
    from PIL import Image

    a = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    Image.fromarray(a, "L").save(tmp_path / "g.png")
    img = mnv2ref.load_img(tmp_path / "g.png", target_size=(20, 30))
    x = mnv2ref.img_to_array(img)
    assert img.mode == "RGB" and x.shape == (20, 30, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], np.asarray(Image.fromarray(a).resize((30, 20), Image.NEAREST)))


def test_load_img_errors(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(OSError, match="x.jpg"):
        mnv2ref.load_img(tmp_path / "x.jpg")


# --- import hygiene ----------------------------------------------------------------------------------------------


def test_import_does_not_import_tensorflow_or_heavy_modules():
    code = ("import sys, mnv2ref; from mnv2ref import mobilenet_v2; "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras', 'h5py', 'PIL', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

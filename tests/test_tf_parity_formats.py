"""``mnv2ref.load`` on files Keras writes at test time: all 22 published configurations x the four formats.

Needs tensorflow, tf_keras (Keras 2) and keras (Keras 3): skipped without them, **failed** instead
when ``MNV2REF_REQUIRE_TF=1`` (so CI with TensorFlow cannot skip silently).

Per configuration (alpha, rows), one tf_keras and one Keras 3 model are built (the cost: ~1.5 s
each) with the seeded realistic weights of ``fixtures/generate_formats.py``, and each writes the two
files it writes in real life:

* tf_keras ``save_weights`` -> legacy weights-only ``.h5`` under the official file name;
* tf_keras ``model.save`` -> legacy full-model ``.h5``;
* Keras 3 ``save_weights`` -> ``.weights.h5``;
* Keras 3 ``model.save`` -> ``.keras``.

``formats.infer`` must find alpha, include_top, classes=1000 and the activation in all four, and
the input size where the file holds it (config, or the official file name); ``mnv2ref.load`` must
build the model, and for a few configurations its outputs must equal Keras's. Then a few extra
shapes: without the top, a user's head on a nested or flattened backbone in both Kerases.
"""
from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import warnings

import numpy as np
import pytest

import mnv2ref
from mnv2ref import arch, compare, formats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = list(arch.PUBLISHED)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras 3's np.array(copy=...) notice
COMPARE_OUTPUTS = {(0.35, 96), (1.0, 224), (0.75, 160), (1.4, 224)}
TOL = compare.TOLERANCE["float32"]


@pytest.fixture(scope="module")
def tfm():
    """(tensorflow, tf_keras, keras, the fixture generator module): skip, or fail under MNV2REF_REQUIRE_TF=1."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        tf = importlib.import_module("tensorflow")
        tfk = importlib.import_module("tf_keras")
        k3 = importlib.import_module("keras")
    except ImportError as e:
        if os.environ.get("MNV2REF_REQUIRE_TF") == "1":
            pytest.fail(f"MNV2REF_REQUIRE_TF=1 but TensorFlow/tf_keras/keras cannot be imported: {e}")
        pytest.skip(f"needs tensorflow, tf_keras and keras (pip install -e .[tf]): {e}")
    try:  # only possible before TF's runtime starts (another TF test module may have started it)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    spec = importlib.util.spec_from_file_location("generate_formats", os.path.join(ROOT, "fixtures",
                                                                                   "generate_formats.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return tf, tfk, k3, gen


@pytest.fixture(autouse=True)
def _fresh_sessions(request):
    yield
    if "tfm" in request.fixturenames:
        _, tfk, k3, _ = request.getfixturevalue("tfm")
        tfk.backend.clear_session()
        k3.backend.clear_session()
        gc.collect()


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


def close(ours, ref):
    assert ours.shape == ref.shape
    err = np.abs(ours.astype(np.float64) - ref).max() / np.abs(ref).max()
    assert err <= TOL, f"max|mnv2ref - keras| / max|keras| = {err:.2e}"


def write_four(tfm, tmp_path, alpha, rows, seed, **kw):
    """Build with both Kerases, write the four formats; -> ({format: path}, {format: keras model})."""
    _, tfk, k3, gen = tfm
    shape = (rows, rows, 3) if rows else (None, None, 3)
    paths, models = {}, {}
    m = tfk.applications.MobileNetV2(input_shape=shape, alpha=alpha, weights=None, **kw)
    m.set_weights(gen.realistic(m.weights, seed))
    name = mnv2ref.model.weights_filename(alpha, rows or 224, kw.get("include_top", True))
    paths["legacy-weights"] = str(tmp_path / name)
    m.save_weights(paths["legacy-weights"])
    paths["legacy-model"] = str(tmp_path / "model.h5")
    quiet(m.save, paths["legacy-model"])
    models["legacy-weights"] = models["legacy-model"] = m
    m = k3.applications.MobileNetV2(input_shape=shape, alpha=alpha, weights=None, **kw)
    m.set_weights(gen.realistic(m.weights, seed))
    paths["keras3-weights"] = str(tmp_path / "w.weights.h5")
    m.save_weights(paths["keras3-weights"])
    paths["keras3-model"] = str(tmp_path / "m.keras")
    m.save(paths["keras3-model"])
    models["keras3-weights"] = models["keras3-model"] = m
    return paths, models


@pytest.mark.parametrize("alpha,rows", PUBLISHED, ids=[f"{a}_{r}" for a, r in PUBLISHED])
def test_infer_all_published_configurations_in_all_formats(tfm, tmp_path, alpha, rows):
    paths, models = write_four(tfm, tmp_path, alpha, rows, seed=int(alpha * 100) * 1000 + rows)
    x = np.random.default_rng(rows).uniform(-1, 1, (1, rows, rows, 3)).astype(np.float32)
    for fmt, path in paths.items():
        kf = formats.read(path)
        assert kf.format == fmt
        got = formats.infer(kf)
        assert (got["alpha"], got["include_top"], got["classes"], got["classifier_activation"]) == \
            (alpha, True, 1000, "softmax"), (fmt, got)
        if fmt != "keras3-weights":  # config, or the official file name; a Keras 3 weights file has neither
            assert got["input_shape"] == (rows, rows, 3), (fmt, got)
        m = mnv2ref.load(path, **({"input_shape": (rows, rows, 3)} if fmt == "keras3-weights" else {}))
        assert (m.alpha, m.include_top, m.classes) == (alpha, True, 1000)
        if (alpha, rows) in COMPARE_OUTPUTS:
            close(m.predict(x), models[fmt].predict(x, verbose=0))


@pytest.mark.parametrize("alpha,rows,pooling", [(0.5, 160, "avg"), (1.3, None, "max"), (0.75, 128, None)])
def test_no_top(tfm, tmp_path, alpha, rows, pooling):
    paths, models = write_four(tfm, tmp_path, alpha, rows, seed=7, include_top=False, pooling=pooling)
    x = np.random.default_rng(1).uniform(-1, 1, (1, rows or 97, rows or 65, 3)).astype(np.float32)
    for fmt, path in paths.items():
        got = formats.infer(formats.read(path))
        assert (got["alpha"], got["include_top"]) == (alpha, False), (fmt, got)
        if fmt in ("legacy-model", "keras3-model"):  # the config has the pooling and the size
            assert got.get("pooling") == pooling and got.get("input_shape") == \
                ((rows, rows, 3) if rows else None), (fmt, got)
        m = mnv2ref.load(path, pooling=pooling)
        close(m.predict(x), models[fmt].predict(x, verbose=0))


def user_model(mod, shape: str, frozen: bool, seed: int, gen):
    """MobileNetV2(0.35, no top) + GAP + Dense(16, relu) + Dense(4), the backbone "nested", "flat" or in a
    "sequential"; -> (the model, its feature model = backbone + GAP)."""
    base = mod.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
    base.trainable = not frozen
    gap, d16, d4 = (mod.layers.GlobalAveragePooling2D(), mod.layers.Dense(16, activation="relu"),
                    mod.layers.Dense(4, activation="softmax"))
    if shape == "sequential":
        m = mod.Sequential([mod.Input((96, 96, 3)), base, gap, d16, d4])
        feats = mod.Sequential([mod.Input((96, 96, 3)), base, gap])
    else:
        if shape == "flat":
            inp, f = base.input, gap(base.output)
        else:
            inp = mod.Input((96, 96, 3))
            f = gap(base(inp, training=False))
        m, feats = mod.Model(inp, d4(d16(f))), mod.Model(inp, f)
    m.set_weights(gen.realistic(m.weights, seed))
    return m, feats


@pytest.mark.parametrize("keras_name,shape,frozen,how", [
    ("tf_keras", "nested", False, "save_weights"), ("tf_keras", "nested", True, "save"),
    ("tf_keras", "flat", False, "save"), ("tf_keras", "flat", True, "save_weights"),
    ("tf_keras", "sequential", True, "save"), ("keras", "nested", True, "keras"),
    ("keras", "flat", False, "weights.h5"), ("keras", "nested", False, "legacy h5"),
    ("keras", "sequential", False, "keras"), ("keras", "sequential", True, "weights.h5"),
])
def test_user_head_loads_as_backbone(tfm, tmp_path, keras_name, shape, frozen, how):
    _, tfk, k3, gen = tfm
    mod = tfk if keras_name == "tf_keras" else k3
    m, feats = user_model(mod, shape, frozen, 11, gen)
    path = str(tmp_path / {"save_weights": "w.h5", "save": "m.h5", "keras": "m.keras", "weights.h5": "w.weights.h5",
                           "legacy h5": "m.h5"}[how])
    (m.save_weights if how in ("save_weights", "weights.h5") else lambda p: quiet(m.save, p))(path)
    with pytest.warns(UserWarning, match=r"ignored.*\(1280, 16\).*\(16, 4\)"):
        ours = mnv2ref.load(path, pooling="avg")
    assert (ours.alpha, ours.include_top) == (0.35, False)
    if how in ("save", "keras", "legacy h5"):  # files with a config: the pooling after out_relu is found
        assert formats.infer(formats.read(path)).get("pooling") == "avg"
    x = np.random.default_rng(2).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    close(ours.predict(x), feats.predict(x, verbose=0))

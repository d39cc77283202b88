"""mnv2ref against TensorFlow (tf_keras), built at test time with random weights.

Skipped when tensorflow / tf_keras are not installed (``pip install -e .[tf]``).

Every case: tf_keras builds the model (``weights=None``), gets random
realistic weights from the recipe in ``fixtures/generate.py`` (seeded), writes
them with tf_keras ``save_weights`` to a legacy ``.h5`` in ``tmp_path``;
mnv2ref loads that file; both run the same structured, preprocessed images
and are compared layer by layer with ``mnv2ref.compare.assert_layers_close``.

Coverage:

* all 22 published configurations (include_top, 1000 classes): softmax
  output, logits, global pooling and ``out_relu``; argmax / top-5 order;
  ``count_params``;
* full per-layer traces (every named Keras layer) for include_top with
  softmax / 10 classes / ``classifier_activation=None`` and include_top=False
  with pooling None / "avg" / "max";
* inputs 32x32, 33x65 and 225x225, each with a fixed ``input_shape`` and with
  ``(None, None, 3)`` (Keras pads stride-2 layers differently; the shapes
  must differ exactly where Keras's do);
* float64: mnv2ref float64 against TF float64 (same weights) to ~float64
  rounding, and against TF float32 within ``TOLERANCE['float64']``;
* a stress recipe with larger activations, where the float32 tolerance is
  TF's own float32 error times a margin;
* the committed fixtures are what TF computes from the committed weight
  files, and the weight files hold exactly the recipe's weights.
"""
from __future__ import annotations

import gc
import importlib.util
import os
import zlib

import numpy as np
import pytest

if os.environ.get("MNV2REF_REQUIRE_TF") == "1":  # CI (.ci/run): a missing TensorFlow is a failure, not a skip
    import tensorflow as tf
    import tf_keras
else:
    tf = pytest.importorskip("tensorflow", reason="TF parity tests need tensorflow (pip install -e .[tf])")
    tf_keras = pytest.importorskip("tf_keras", reason="TF parity tests need tf_keras (pip install -e .[tf])")

import mnv2ref  # noqa: E402
from mnv2ref.compare import TOLERANCE, assert_layers_close, compare_layers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")


def _load_generator():
    spec = importlib.util.spec_from_file_location("mnv2ref_fixture_generator",
                                                  os.path.join(FIXTURES, "generate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


G = _load_generator()

ALPHAS_ROWS = [(a, r) for a in (0.35, 0.5, 0.75, 1.0) for r in (96, 128, 160, 192, 224)] + [(1.3, 224), (1.4, 224)]
BATCH = 2
# Tolerance on our float64 pass vs TF's float64 pass: both are exact up to
# float64 rounding (different summation orders), ~1e-13 measured; float32
# rounding would be ~1e-7.
F64_VS_TF64 = 1e-10


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_keras_session():
    tf_keras.backend.clear_session()
    tf_keras.backend.set_floatx("float32")
    yield
    tf_keras.backend.set_floatx("float32")
    tf_keras.backend.clear_session()
    gc.collect()


def _seed(*parts) -> int:
    """A stable seed from the case parameters (no Python hash randomisation)."""
    return zlib.crc32(repr(parts).encode())


def _images(n, h, w, seed):
    return G.preprocess(G.make_images(n, h, w, seed))


def _tf_model(path, *, input_shape, alpha, include_top=True, pooling=None, classes=1000,
              classifier_activation="softmax", seed=0, recipe=G.DEFAULT_RECIPE):
    """tf_keras model with the recipe's weights, saved with ``save_weights`` to ``path``."""
    model = G.build(input_shape, alpha, include_top=include_top, pooling=pooling, classes=classes,
                    classifier_activation=classifier_activation)
    G.randomize(model, seed, recipe)
    model.save_weights(str(path))  # legacy weights-only HDF5
    return model


def _tf_outputs(model, x, names=None) -> dict:
    """{normalised layer name: output} for ``names`` (default all but the input), eager call."""
    layers = [l for l in G.named_layers(model) if names is None or G.normalise_name(l.name) in names]
    feat = tf_keras.Model(model.inputs, [l.output for l in layers])
    outs = feat(tf.constant(x), training=False)
    if not isinstance(outs, (list, tuple)):
        outs = [outs]
    return {G.normalise_name(l.name): np.asarray(o) for l, o in zip(layers, outs)}


def _tf_logits(model, pooled):
    """Logits computed by TF from the Dense layer's own variables."""
    dense = model.get_layer("predictions")
    return np.asarray(tf.nn.bias_add(tf.matmul(tf.constant(pooled), dense.kernel), dense.bias))


def _pool_name(d):
    return next(k for k in d if k in ("global_average_pooling2d", "global_max_pooling2d"))


def _ours(path, **kw):
    return mnv2ref.MobileNetV2(weights=str(path), **kw)


def assert_topk_same(ours, ref, k=5, rel_tie=1e-5):
    """Same argmax and top-k order, except swaps between entries tied within ``rel_tie*max|ref|``."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    tie = rel_tie * np.abs(ref).max()
    for i in range(len(ref)):
        r = np.argsort(-ref[i], kind="stable")[:k]
        o = np.argsort(-ours[i], kind="stable")[:k]
        for j in range(k):
            if o[j] != r[j]:
                assert abs(ref[i, o[j]] - ref[i, r[j]]) <= tie, (
                    f"image {i}: top-{k} differs at rank {j}: ours {o.tolist()} vs TF {r.tolist()} "
                    f"(TF logits {ref[i, r].tolist()})")


def _sensitivity(a):
    """std(img0 - img1) / std: how much two images still differ at this layer."""
    a = np.asarray(a, np.float64)
    return float((a[0] - a[1]).std() / a.std())


# ----------------------------------------------------------------------------
# the 22 published configurations: final outputs
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("alpha,rows", ALPHAS_ROWS, ids=[f"{a}_{r}" for a, r in ALPHAS_ROWS])
def test_published_config_outputs(tmp_path, alpha, rows):
    seed = _seed("published", alpha, rows)
    path = tmp_path / G.WEIGHTS_A.replace("0.35_96", f"{alpha}_{rows}")
    model = _tf_model(path, input_shape=(rows, rows, 3), alpha=alpha, seed=seed)
    x = _images(BATCH, rows, rows, seed)

    ref = _tf_outputs(model, x, names={"out_relu", "global_average_pooling2d", "predictions"})
    ref["logits"] = _tf_logits(model, ref["global_average_pooling2d"])
    # The TF model itself, not only the multi-output view, gives these probabilities.
    np.testing.assert_allclose(np.asarray(model(tf.constant(x), training=False)), ref["predictions"],
                               rtol=0, atol=1e-6)

    ours = _ours(path, input_shape=(rows, rows, 3), alpha=alpha)
    trace = ours.trace(x)
    probs = ours.predict(x)
    logits = _ours(path, input_shape=(rows, rows, 3), alpha=alpha, classifier_activation=None).predict(x)
    got = {"out_relu": trace["out_relu"], "global_average_pooling2d": trace["global_average_pooling2d"],
           "predictions": probs, "logits": logits}
    assert_layers_close(got, ref, "float32")
    np.testing.assert_array_equal(trace["predictions"], probs)  # trace and predict are one pass
    np.testing.assert_allclose(ours(x), probs, rtol=0, atol=1e-7)
    assert probs.shape == (BATCH, 1000) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert_topk_same(logits, ref["logits"])
    assert_topk_same(probs, ref["predictions"], rel_tie=1e-4)
    assert ours.count_params() == model.count_params()
    assert list(trace) == [G.normalise_name(l.name) for l in G.named_layers(model)]


# ----------------------------------------------------------------------------
# full per-layer traces
# ----------------------------------------------------------------------------
TRACE_CASES = {
    # id: (alpha, input_shape, kwargs)
    "0.35_96_top": (0.35, (96, 96, 3), {}),
    "1.0_224_top": (1.0, (224, 224, 3), {}),
    "1.4_128_top": (1.4, (128, 128, 3), {}),
    "0.5_96_classes10": (0.5, (96, 96, 3), {"classes": 10}),
    "0.75_96_logits": (0.75, (96, 96, 3), {"classifier_activation": None}),
    "0.5_128_notop_none": (0.5, (128, 128, 3), {"include_top": False, "pooling": None}),
    "1.0_96_notop_avg": (1.0, (96, 96, 3), {"include_top": False, "pooling": "avg"}),
    "1.3_97x131_notop_max": (1.3, (97, 131, 3), {"include_top": False, "pooling": "max"}),
}


@pytest.mark.parametrize("case", list(TRACE_CASES))
def test_full_trace(tmp_path, case):
    alpha, shape, kw = TRACE_CASES[case]
    seed = _seed("trace", case)
    path = tmp_path / "w.h5"
    model = _tf_model(path, input_shape=shape, alpha=alpha, seed=seed, **kw)
    x = _images(BATCH, shape[0], shape[1], seed)
    ref = _tf_outputs(model, x)
    ours = _ours(path, input_shape=shape, alpha=alpha, **kw)
    got = ours.trace(x)

    assert list(got) == list(ref), "layer names / order differ from Keras"
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in ref.items()}
    assert all(v.dtype == np.float32 for v in got.values())
    assert_layers_close(got, ref, "float32")

    out = ours.predict(x)
    tf_out = np.asarray(model(tf.constant(x), training=False))
    assert out.shape == tf_out.shape == (BATCH,) + tuple(model.output_shape[1:])
    assert_layers_close({"output": out}, {"output": tf_out}, "float32")
    last = list(ref)[-1]
    np.testing.assert_array_equal(out, got[last])

    include_top = kw.get("include_top", True)
    if include_top:
        pool = _pool_name(ref)
        assert pool == "global_average_pooling2d"
        logits = _tf_logits(model, ref[pool])
        ours_logits = _ours(path, input_shape=shape, alpha=alpha,
                            **{**kw, "classifier_activation": None}).predict(x)
        assert_layers_close({"logits": ours_logits}, {"logits": logits}, "float32")
        assert_topk_same(ours_logits, logits)
        classes = kw.get("classes", 1000)
        assert out.shape == (BATCH, classes)
        if kw.get("classifier_activation", "softmax") is None:
            np.testing.assert_allclose(out, logits, rtol=0, atol=1e-5 * np.abs(logits).max())
    else:
        pooling = kw.get("pooling")
        names = list(ref)
        if pooling is None:
            assert names[-1] == "out_relu" and not any(n.startswith("global_") for n in names)
        else:
            assert names[-1] == {"avg": "global_average_pooling2d", "max": "global_max_pooling2d"}[pooling]
    assert ours.count_params() == model.count_params()


# ----------------------------------------------------------------------------
# fixed input_shape vs (None, None, 3)
# ----------------------------------------------------------------------------
STATIC_DYNAMIC = {
    # id: (alpha, (H, W), how the dynamic model is asked for, out_relu static, out_relu dynamic)
    "32x32": (1.0, (32, 32), (None, None, 3), (1, 1), (1, 1)),
    "33x65": (0.75, (33, 65), (None, None, 3), (2, 3), (1, 2)),
    "225x225": (0.35, (225, 225), None, (8, 8), (7, 7)),  # input_shape=None -> (None, None, 3) w/o top
}


@pytest.mark.parametrize("case", list(STATIC_DYNAMIC))
def test_static_vs_dynamic_input_shape(tmp_path, case):
    alpha, (h, w), dyn_shape, exp_static, exp_dynamic = STATIC_DYNAMIC[case]
    seed = _seed("static-dynamic", case)
    path = tmp_path / "w.h5"
    static = _tf_model(path, input_shape=(h, w, 3), alpha=alpha, include_top=False, seed=seed)
    dynamic = G.build(dyn_shape, alpha, include_top=False)
    dynamic.load_weights(str(path))
    assert dynamic.input_shape == (None, None, None, 3)
    x = _images(BATCH, h, w, seed)

    ref_s, ref_d = _tf_outputs(static, x), _tf_outputs(dynamic, x)
    ours_s = _ours(path, input_shape=(h, w, 3), alpha=alpha, include_top=False)
    ours_d = _ours(path, input_shape=dyn_shape, alpha=alpha, include_top=False)
    got_s, got_d = ours_s.trace(x), ours_d.trace(x)

    # Keras's geometry, as documented in fixtures/generate.py expected_geometry().
    assert ref_s["out_relu"].shape[1:3] == exp_static
    assert ref_d["out_relu"].shape[1:3] == exp_dynamic
    for kind, ref, static_flag in (("static", ref_s, True), ("dynamic", ref_d, False)):
        for name, hw in G.expected_geometry(h, w, static_flag).items():
            assert ref[name].shape[1:3] == hw, (kind, name)

    for kind, got, ref in (("static", got_s, ref_s), ("dynamic", got_d, ref_d)):
        assert list(got) == list(ref), kind
        shapes_got = {k: v.shape for k, v in got.items()}
        shapes_ref = {k: v.shape for k, v in ref.items()}
        assert shapes_got == shapes_ref, (kind, [k for k in shapes_ref if shapes_got.get(k) != shapes_ref[k]][:3])
        assert_layers_close(got, ref, "float32")

    # Shapes differ between the two builds exactly where Keras's do.
    differ_ref = [k for k in ref_s if ref_s[k].shape != ref_d[k].shape]
    differ_got = [k for k in got_s if got_s[k].shape != got_d[k].shape]
    assert differ_got == differ_ref
    if exp_static == exp_dynamic:
        assert differ_ref == []
        # same padding everywhere -> same values too
        assert_layers_close(got_d, got_s, "float32")
    else:
        assert "block_1_pad" in differ_ref or "block_3_pad" in differ_ref
    assert ours_d.predict(x).shape == dynamic.predict(x, verbose=0).shape


def test_dynamic_model_runs_any_size(tmp_path):
    """One (None, None, 3) model, several input sizes, against TF's dynamic model."""
    path = tmp_path / "w.h5"
    dynamic = _tf_model(path, input_shape=(None, None, 3), alpha=0.5, include_top=False, pooling="avg", seed=7)
    ours = _ours(path, input_shape=(None, None, 3), alpha=0.5, include_top=False, pooling="avg")
    for h, w in ((32, 47), (64, 64), (97, 131)):
        x = _images(1, h, w, h * 1000 + w)
        ref = _tf_outputs(dynamic, x, names={"block_1_pad", "block_13_pad", "out_relu", "global_average_pooling2d"})
        got = ours.trace(x)
        assert_layers_close(got, ref, "float32")


# ----------------------------------------------------------------------------
# float64
# ----------------------------------------------------------------------------
F64_CASES = {
    "0.35_96_top": (0.35, (96, 96, 3), {}),
    "1.0_33x65_dynamic_avg": (1.0, (None, None, 3), {"include_top": False, "pooling": "avg"}),
}


@pytest.mark.parametrize("case", list(F64_CASES))
def test_float64_matches_tf_float64(tmp_path, case):
    alpha, shape, kw = F64_CASES[case]
    seed = _seed("f64", case)
    path = tmp_path / "w.h5"
    m32 = _tf_model(path, input_shape=shape, alpha=alpha, seed=seed, **kw)
    h, w = (shape[0], shape[1]) if shape[0] else (33, 65)
    x = _images(BATCH, h, w, seed)
    ref32 = _tf_outputs(m32, x)

    tf_keras.backend.set_floatx("float64")
    m64 = G.build(shape, alpha, **kw)
    m64.set_weights([a.astype(np.float64) for a in m32.get_weights()])
    ref64 = _tf_outputs(m64, x.astype(np.float64))
    tf_keras.backend.set_floatx("float32")
    assert all(v.dtype == np.float64 for v in ref64.values())

    ours64 = _ours(path, input_shape=shape, alpha=alpha, dtype="float64", **kw).trace(x)
    assert all(v.dtype == np.float64 for v in ours64.values())
    # Exact up to float64 rounding ...
    assert_layers_close(ours64, ref64, tol=F64_VS_TF64)
    # ... hence within TF's own float32 error of TF float32.
    assert_layers_close(ours64, ref32, "float64")
    # and our float32 pass within its tolerance of our float64 pass
    ours32 = _ours(path, input_shape=shape, alpha=alpha, **kw).trace(x)
    assert_layers_close(ours32, ours64, "float32")  # at most what we allow against TF float32


# ----------------------------------------------------------------------------
# stress: larger activations (He-uniform kernels); tolerance from TF's own error
# ----------------------------------------------------------------------------
def _he_weights(model, seed):
    """He-uniform kernels on the true fan-in (depthwise fan-in 9), recipe BN / Dense bias.

    Activations reach ~40 and ~5% of ``out_relu`` is clipped at 6: TF's own
    float32 error grows to ~4e-5 of max|ref| (vs ~1e-6 with the default recipe).
    """
    ws = G.random_weights(model, seed, "lecun")
    # lecun -> He: scale every conv / depthwise kernel by sqrt(2) (same draws).
    out, i = [], 0
    for layer in model.layers:
        for w in layer.get_weights():
            a = ws[i]
            if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D") and a.ndim == 4:
                a = (a * np.float32(np.sqrt(2.0))).astype(np.float32)
            out.append(a)
            i += 1
    return out


def test_stress_large_activations(tmp_path):
    alpha, shape = 1.0, (96, 96, 3)
    path = tmp_path / "w.h5"
    m32 = G.build(shape, alpha, classifier_activation=None)
    ws = _he_weights(m32, 2024)
    m32.set_weights(ws)
    m32.save_weights(str(path))
    x = _images(BATCH, 96, 96, 2024)
    ref32 = _tf_outputs(m32, x)
    tf_keras.backend.set_floatx("float64")
    m64 = G.build(shape, alpha, classifier_activation=None)
    m64.set_weights([a.astype(np.float64) for a in ws])
    ref64 = _tf_outputs(m64, x.astype(np.float64))
    tf_keras.backend.set_floatx("float32")

    ours64 = _ours(path, input_shape=shape, alpha=alpha, classifier_activation=None, dtype="float64").trace(x)
    ours32 = _ours(path, input_shape=shape, alpha=alpha, classifier_activation=None).trace(x)
    assert_layers_close(ours64, ref64, tol=F64_VS_TF64)
    # float32: per layer, no worse than 3x TF's own float32 error (floor: TOLERANCE['float32']).
    tf_err = {e.name: e.rel for e in compare_layers(ref32, ref64)}
    for e in compare_layers(ours32, ref64):
        bound = max(TOLERANCE["float32"], 3 * tf_err[e.name])
        assert e.rel <= bound, f"{e} (TF float32's own error {tf_err[e.name]:.3g})"
    assert (ref64["out_relu"] >= 6).mean() > 0.01  # really exercises the ReLU6 cap
    assert_topk_same(ours32["predictions"], ref64["predictions"])


# ----------------------------------------------------------------------------
# Keras's literal default initialisers, and input sensitivity of the recipes
# ----------------------------------------------------------------------------
def test_keras_default_recipe_and_sensitivity(tmp_path):
    """Parity also holds with Keras's own default (glorot) kernels.

    Documents why the tests use the lecun recipe: with Keras's default
    initialisers a (3, 3, C, 1) depthwise kernel gets fan_in = 9C, which
    shrinks the signal at every depthwise conv; the output no longer depends
    on the input (two different images give the same logits to ~1e-7), so
    end-to-end comparisons would not see most bugs upstream.
    """
    shape, alpha = (96, 96, 3), 0.35
    x = _images(BATCH, 96, 96, 5)
    sens = {}
    for recipe in ("keras-default", "lecun"):
        path = tmp_path / f"{recipe}.h5"
        model = _tf_model(path, input_shape=shape, alpha=alpha, seed=11, recipe=recipe,
                          classifier_activation=None)
        ref = _tf_outputs(model, x, names={"block_1_project_BN", "out_relu", "predictions"})
        got = _ours(path, input_shape=shape, alpha=alpha, classifier_activation=None).trace(x)
        assert_layers_close(got, ref, "float32")
        sens[recipe] = {k: _sensitivity(v) for k, v in ref.items()}
    assert sens["keras-default"]["out_relu"] < 1e-5
    assert sens["lecun"]["out_relu"] > 3e-4 and sens["lecun"]["predictions"] > 1e-4


# ----------------------------------------------------------------------------
# preprocessing
# ----------------------------------------------------------------------------
def test_preprocess_input_bit_exact():
    from tf_keras.applications import mobilenet_v2 as tf_mv2

    raw = np.concatenate([np.arange(256, dtype=np.float32).reshape(1, 16, 16, 1).repeat(3, -1),
                          G.make_images(1, 16, 16, 3)])
    ref = tf_mv2.preprocess_input(raw.copy())
    ours = mnv2ref.preprocess_input(raw.copy())
    assert ours.dtype == ref.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)


# ----------------------------------------------------------------------------
# committed fixtures
# ----------------------------------------------------------------------------
def _golden(name):
    path = os.path.join(FIXTURES, name)
    if not os.path.exists(path):
        pytest.skip(f"{name} not generated (python fixtures/generate.py)")
    return np.load(path)


def test_committed_fixture_a_is_tf_output():
    import json

    g = _golden(G.GOLDEN_A)
    wpath = os.path.join(FIXTURES, G.WEIGHTS_A)
    with open(os.path.join(FIXTURES, "manifest.json")) as f:
        manifest = json.load(f)
    cfg = manifest["fixtures"]["0.35_96"]
    model = G.build((96, 96, 3), 0.35)
    model.load_weights(wpath)
    # the file holds exactly the recipe's weights
    expected = G.random_weights(model, cfg["seeds"]["weights"], manifest["weight_recipe"]["name"])
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), expected))
    np.testing.assert_array_equal(g["input"], G.make_images(cfg["n_images"], 96, 96, cfg["seeds"]["images"]))
    np.testing.assert_array_equal(g["preprocessed"], G.preprocess(g["input"]))

    order = [str(n) for n in g["layer_order"]]
    ref = _tf_outputs(model, g["preprocessed"])
    assert order == list(ref)
    assert_layers_close({k: g["layer/" + k] for k in order}, ref, "float32")
    assert_layers_close({"probs": g["probs"], "logits": g["logits"]},
                        {"probs": ref["predictions"], "logits": _tf_logits(model, ref["global_average_pooling2d"])},
                        "float32")


def test_committed_fixture_b_is_tf_output():
    import json

    g = _golden(G.GOLDEN_B)
    wpath = os.path.join(FIXTURES, G.WEIGHTS_B)
    with open(os.path.join(FIXTURES, "manifest.json")) as f:
        manifest = json.load(f)
    cfg = manifest["fixtures"]["0.5_97x131_avg"]
    full = tf_keras.models.load_model(wpath, compile=False)  # legacy full-model HDF5
    assert full.input_shape == (None, 97, 131, 3)
    expected = G.random_weights(full, cfg["seeds"]["weights"], manifest["weight_recipe"]["name"])
    assert all(np.array_equal(a, b) for a, b in zip(full.get_weights(), expected))
    np.testing.assert_array_equal(g["input"], G.make_images(cfg["n_images"], 97, 131, cfg["seeds"]["images"]))
    dynamic = G.build((None, None, 3), 0.5, include_top=False, pooling="avg")
    dynamic.load_weights(wpath)
    x = g["preprocessed"]
    for kind, model in (("static", full), ("dynamic", dynamic)):
        order = [str(n) for n in g[f"{kind}/layer_order"]]
        ref = _tf_outputs(model, x, names=set(order))
        assert list(ref) == order
        assert_layers_close({k: g[f"{kind}/layer/{k}"] for k in order}, ref, "float32")
    assert g["static/layer/out_relu"].shape[1:3] == (4, 5)
    assert g["dynamic/layer/out_relu"].shape[1:3] == (3, 4)

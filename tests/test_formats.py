"""Every Keras file format, read without TensorFlow: fixtures written by the real Keras (fixtures/formats/,
``fixtures/generate_formats.py``), configuration inferred by ``mnv2ref.load``, outputs equal to Keras's."""
import json
import os
import re
import shutil
import warnings
import zipfile

import h5py
import numpy as np
import pytest

import mnv2ref
from mnv2ref import arch, compare, convert, formats
from mnv2ref.fileio import sha256_file

from h5tools import layers_from_raw, write_legacy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")
FMT = os.path.join(FIX, "formats")
MANIFEST = json.load(open(os.path.join(FIX, "formats_manifest.json")))
FILES = {k: v for k, v in MANIFEST["files"].items() if "infer" in v}
LEGACY_WEIGHTS = os.path.join(FIX, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5")
LEGACY_FULL = os.path.join(FIX, "mobilenet_v2_0.5_no_top_fullmodel.h5")
TOL = compare.TOLERANCE["float32"]


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(os.path.join(FMT, "golden_formats.npz")))


def close(ours, ref, tol=TOL):
    assert ours.shape == ref.shape
    err = np.abs(ours.astype(np.float64) - ref).max() / np.abs(ref).max()
    assert err <= tol, f"max|ours - keras| / max|keras| = {err:.2e} > {tol:.0e}"


def quiet_load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mnv2ref.load(path, **kw)


# --- the committed fixtures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_fixture_integrity(name):
    info = MANIFEST["files"][name]
    assert sha256_file(os.path.join(FMT, name)) == info["sha256"]


def test_fixture_set_is_small():
    assert MANIFEST["total_bytes"] < 6.5e6


@pytest.mark.parametrize("name", sorted(FILES))
def test_format_detected(name):
    assert formats.read(os.path.join(FMT, name)).format == FILES[name]["format"]


@pytest.mark.parametrize("name", sorted(FILES))
def test_load_infers_the_configuration(name):
    kf = formats.read(os.path.join(FMT, name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = formats.infer(kf)
    want = dict(FILES[name]["infer"])
    if "input_shape" in want:
        want["input_shape"] = tuple(want["input_shape"])
    assert {k: got.get(k) for k in want} == want
    assert "input_shape" in got or "input_shape" not in want


@pytest.mark.parametrize("name", sorted(FILES))
def test_load_matches_keras(name, golden):
    info = FILES[name]
    m = quiet_load(os.path.join(FMT, name))
    ref = golden[f"{name}/output"] if info["infer"]["include_top"] or f"{name}/features" not in golden \
        else golden[f"{name}/features"]
    close(m.predict(golden[info["input"]]), ref)


@pytest.mark.parametrize("name", sorted(FILES))
def test_mobilenetv2_accepts_every_format_and_checks_it(name, golden):
    info = FILES[name]["infer"]
    kw = {k: info[k] for k in ("alpha", "include_top", "classes", "pooling") if k in info}
    if "input_shape" in info:
        kw["input_shape"] = tuple(info["input_shape"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = mnv2ref.MobileNetV2(weights=os.path.join(FMT, name), **kw)
        ref = quiet_load(os.path.join(FMT, name))
    x = golden[FILES[name]["input"]]
    np.testing.assert_array_equal(m.predict(x), ref.predict(x))
    with pytest.raises(ValueError, match=r"Conv1.*\(3, 3, 3, 8\).*\(3, 3, 3, (16|24|32)\)|Conv1.*\(3, 3, 3, 16\).*"
                                         r"\(3, 3, 3, 24\)"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mnv2ref.MobileNetV2(weights=os.path.join(FMT, name), **{**kw, "alpha": 0.75})


def test_legacy_weights_only_official_fixture():
    """Format 1 (the other fixture set's file, official name): alpha and size from the shapes and the file name."""
    if not os.path.exists(LEGACY_WEIGHTS):
        pytest.skip("legacy fixture not generated yet (fixtures/generate.py)")
    g = np.load(os.path.join(FIX, "golden_0.35_96.npz"))
    kf = formats.read(LEGACY_WEIGHTS)
    assert kf.format == "legacy-weights"
    assert formats.infer(kf) == {"alpha": 0.35, "include_top": True, "classes": 1000,
                                 "classifier_activation": "softmax", "input_shape": (96, 96, 3)}
    m = mnv2ref.load(LEGACY_WEIGHTS)
    close(m.predict(g["preprocessed"]), g["probs"])


def test_legacy_full_model_fixture_with_odd_static_size():
    if not os.path.exists(LEGACY_FULL):
        pytest.skip("legacy fixture not generated yet (fixtures/generate.py)")
    got = formats.infer(formats.read(LEGACY_FULL))
    assert (got["alpha"], got["include_top"], got["pooling"], got["input_shape"]) == (0.5, False, "avg", (97, 131, 3))


# --- Keras 3 details -------------------------------------------------------------------------------------------

W3 = os.path.join(FMT, "keras3_0.15_96_notop.weights.h5")


def test_keras3_groups_are_ordered_by_numeric_suffix_not_listing_order():
    with h5py.File(W3) as f:
        listed = [k for k in f["layers"] if k.startswith("conv2d")]
    assert listed[:3] == ["conv2d", "conv2d_1", "conv2d_10"]  # what h5py gives
    names = [l.name for l in formats.read(W3).layers]
    assert names == [l.name for l in arch.weighted_layers(0.15, include_top=False)]


def test_keras3_without_name_attributes_loads_the_same(tmp_path, golden):
    path = tmp_path / "w.weights.h5"
    shutil.copy(W3, path)
    with h5py.File(path, "a") as f:
        for g in f["layers"].values():
            if "vars" in g:
                g["vars"].attrs.pop("name", None)
    x = golden["x96"]
    np.testing.assert_array_equal(quiet_load(path).predict(x), quiet_load(W3).predict(x))


def test_keras3_name_attribute_is_a_cross_check(tmp_path):
    path = tmp_path / "w.weights.h5"
    shutil.copy(W3, path)
    with h5py.File(path, "a") as f:  # block_1_expand is conv2d_2, block_1_project conv2d_3: swap their names
        a, b = f["layers/conv2d_2/vars"], f["layers/conv2d_3/vars"]
        a.attrs["name"], b.attrs["name"] = "block_1_project", "block_1_expand"
    with pytest.raises(ValueError, match="'block_1_project' is where 'block_1_expand' should be"):
        quiet_load(path)


def test_keras_archive_is_read_without_extracting(monkeypatch, golden):
    def refuse(*a, **k):
        raise AssertionError("extracted to disk")

    monkeypatch.setattr(zipfile.ZipFile, "extract", refuse)
    monkeypatch.setattr(zipfile.ZipFile, "extractall", refuse)
    name = "keras3_0.1_dynamic_max.keras"
    with zipfile.ZipFile(os.path.join(FMT, name)) as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    close(quiet_load(os.path.join(FMT, name)).predict(golden["x65x67"]), golden[f"{name}/output"])


def test_unzipped_keras_folder(tmp_path, golden):
    name = "keras3_0.1_dynamic_max.keras"
    with zipfile.ZipFile(os.path.join(FMT, name)) as z:
        z.extractall(tmp_path / "model")
    close(quiet_load(tmp_path / "model").predict(golden["x65x67"]), golden[f"{name}/output"])


def test_keras_archive_with_mismatched_members(tmp_path):
    """config.json of one model with model.weights.h5 of another: the name attributes disagree."""
    a, b = (zipfile.ZipFile(os.path.join(FMT, n)) for n in ("user_flat_0.1.keras", "keras3_0.1_dynamic_max.keras"))
    with a, b, zipfile.ZipFile(tmp_path / "mixed.keras", "w") as out:
        out.writestr("config.json", a.read("config.json"))
        out.writestr("model.weights.h5", b.read("model.weights.h5"))
    with pytest.raises(ValueError, match="mixed.keras.*do not belong together|mixed.keras.*has no group"):
        mnv2ref.load(tmp_path / "mixed.keras")


# --- a user's model: MobileNetV2 + their own head --------------------------------------------------------------


def test_nested_backbone_with_a_head_loads_as_backbone_with_warning(golden):
    path = os.path.join(FMT, "user_nested_0.1.h5")
    with pytest.warns(UserWarning, match=r"ignored.*'dense' \[\(1280, 8\), \(8,\)\], 'dense_1' \[\(8, 3\)"):
        m = mnv2ref.load(path)
    assert (m.include_top, m.pooling, m.output_shape) == (False, "avg", (None, 1280))
    close(m.predict(golden["x96"]), golden["user_nested_0.1.h5/features"])
    with pytest.raises(ValueError, match="user_nested_0.1.h5.*'dense'.*not MobileNetV2's classifier.*include_top"):
        mnv2ref.MobileNetV2(weights=path, alpha=0.1, input_shape=(96, 96, 3), classes=3)


def test_flattened_backbone_with_mobilenet_shaped_head(golden):
    path = os.path.join(FMT, "user_flat_0.1.keras")
    m = quiet_load(path)
    assert (m.include_top, m.classes, m.name) == (True, 5, "my_flat_classifier")
    close(m.predict(golden["x96"]), golden["user_flat_0.1.keras/output"])
    with pytest.warns(UserWarning, match=r"ignored the layers with weights 'my_dense' \[\(1280, 5\), \(5,\)\]"):
        b = mnv2ref.MobileNetV2(weights=path, alpha=0.1, include_top=False, input_shape=(96, 96, 3), pooling="avg")
    close(b.predict(golden["x96"]), golden["user_flat_0.1.keras/features"])


def test_layers_before_the_backbone_are_named_in_the_warning(tmp_path):
    """A user model that rescales its input (weightless layers before Conv1) loads, saying what it skipped."""
    cfg = json.loads(zipfile.ZipFile(os.path.join(FMT, "user_flat_0.1.keras")).read("config.json"))
    layers = cfg["config"]["layers"]
    layers.insert(1, {"class_name": "Rescaling", "name": "rescaling", "config": {"name": "rescaling"}})
    with zipfile.ZipFile(os.path.join(FMT, "user_flat_0.1.keras")) as z, \
            zipfile.ZipFile(tmp_path / "r.keras", "w") as out:
        out.writestr("config.json", json.dumps(cfg))
        out.writestr("model.weights.h5", z.read("model.weights.h5"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mnv2ref.load(tmp_path / "r.keras")
    assert any(re.search(r"rescaling \(Rescaling\).*apply them to the input yourself", str(w.message))
               for w in caught), [str(w.message) for w in caught]


# --- load() overrides and alpha inference ---------------------------------------------------------------------


def test_load_overrides():
    path = os.path.join(FMT, "legacy_model_0.35_96_top10.h5")
    m = mnv2ref.load(path, include_top=False, pooling="max")
    assert (m.include_top, m.pooling, m.output_shape) == (False, "max", (None, 1280))
    m = mnv2ref.load(path, dtype="float64", name="x")
    assert (m.dtype, m.name) == (np.float64, "x")
    with pytest.raises(ValueError, match=r"legacy_model_0.35_96_top10.h5.*Conv1.*\(3, 3, 3, 16\).*\(3, 3, 3, 32\)"):
        mnv2ref.load(path, alpha=1.0)
    with pytest.raises(ValueError, match=r"predictions.*\(1280, 10\).*\(1280, 1000\)"):
        mnv2ref.load(path, classes=1000)
    with pytest.raises(TypeError, match="weights"):
        mnv2ref.load(path, weights="imagenet")


@pytest.mark.parametrize("alpha", arch.IMAGENET_ALPHAS)
def test_infer_alpha_official(alpha):
    layers = layers_of(convert.random_raw(alpha, include_top=False), alpha)
    assert convert.infer_alpha(layers) == (alpha, None)


def layers_of(raw, alpha, include_top=False):
    from mnv2ref.h5io import H5Layer

    return [H5Layer(n, [(f"{n}/{k}", a) for k, a in raw[n].items()])
            for n in (l.name for l in arch.weighted_layers(alpha, include_top))]


@pytest.mark.parametrize("alpha,expected", [(0.6, 0.6), (0.123, 0.12), (2.0, 2.0), (0.45, 0.45)])
def test_infer_alpha_unofficial_reports_the_ambiguity(alpha, expected):
    layers = layers_of(convert.random_raw(alpha, include_top=False), alpha)
    got, note = convert.infer_alpha(layers)
    assert got == expected and "fit no official alpha" in note
    assert convert.width_signature(got) == convert.width_signature(alpha)
    assert convert.infer_alpha(layers, hint=alpha) == (alpha, None)  # e.g. from the config's model name


def test_infer_alpha_no_fit_names_the_layer():
    layers = layers_of(convert.random_raw(1.0, include_top=False), 1.0)
    k = layers[-2].weights[0][1]  # Conv_1 (1, 1, 320, 1280) -> 1000 output channels
    layers[-2].weights[0] = (layers[-2].weights[0][0], k[..., :1000])
    with pytest.raises(ValueError, match=r"nearest official alpha 1.0 differs at layer 'Conv_1': 1000 output "
                                         r"channels in the file, 1280"):
        convert.infer_alpha(layers)


def test_load_weights_only_unofficial_alpha_warns(tmp_path):
    write_legacy(tmp_path / "w.h5", layers_from_raw(convert.random_raw(0.6, False), arch.layers(0.6, (96, 96), False)))
    with pytest.warns(UserWarning, match="using alpha=0.6"):
        m = mnv2ref.load(tmp_path / "w.h5")
    assert (m.alpha, m.include_top, m.input_shape) == (0.6, False, (None, None, None, 3))


def test_official_name_gives_the_size(tmp_path):
    raw = convert.random_raw(0.5, True)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_128.h5"
    write_legacy(tmp_path / name, layers_from_raw(raw, arch.layers(0.5, (128, 128), True)))
    m = mnv2ref.load(tmp_path / name)
    assert (m.alpha, m.input_shape, m.classes) == (0.5, (None, 128, 128, 3), 1000)


def test_weights_only_dense_on_other_features_is_not_taken_as_classifier(tmp_path):
    """A Dense on flattened features (not Conv_1's 1280 channels) cannot be MobileNetV2's top: backbone + warning."""
    layers = layers_from_raw(convert.random_raw(0.35, False), arch.layers(0.35, (96, 96), False))
    layers.append(("dense", [("dense/kernel:0", np.ones((3 * 3 * 1280, 4), np.float32)),
                             ("dense/bias:0", np.zeros(4, np.float32))]))
    write_legacy(tmp_path / "w.h5", layers)
    with pytest.warns(UserWarning, match=r"ignored the layers with weights 'dense' \[\(11520, 4\), \(4,\)\]"):
        m = mnv2ref.load(tmp_path / "w.h5")
    assert not m.include_top


def test_error_hint_uses_the_same_alpha_inference():
    """guess_config (error messages) and infer_alpha work out alpha with one function, fitting_alphas."""
    layers = layers_of(convert.random_raw(0.6, include_top=False), 0.6)
    alpha, note = convert.infer_alpha(layers)
    official, (lo, hi) = convert.fitting_alphas(convert.file_signature(layers))
    assert official == [] and lo <= alpha <= hi and f"about {lo:.4g} to {hi:.4g}" in note
    assert f"fit no official alpha, any alpha from about {lo:.4g} to {hi:.4g}" in convert.guess_config(layers)
    assert "its 19 layer widths fit alpha=0.5," in convert.guess_config(
        layers_of(convert.random_raw(0.5, include_top=False), 0.5))
    assert convert.fitting_alphas((16,) + (None,) * 18)[0] == [0.35, 0.5]  # Conv1's width alone

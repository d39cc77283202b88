"""Bad input: every case is a clear ValueError/OSError naming what is wrong, and nothing is silently wrong.

Weight files (wrong model, missing/extra layers, not HDF5, truncated, empty, a folder, no file), model
inputs (rank, channels, size, NaN/inf, integer pixels, views, channels-first), the ImageNet helpers,
and a property test that corrupts Keras-written fixtures at random.
"""
import json
import os
import shutil
import warnings

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mnv2ref
from mnv2ref import arch, convert, mobilenet_v2

from h5tools import layers_from_raw, write_legacy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMT = os.path.join(ROOT, "fixtures", "formats")
TOP10 = os.path.join(FMT, "legacy_model_0.35_96_top10.h5")  # alpha 0.35, 96x96, 10 classes, full model
W3 = os.path.join(FMT, "keras3_0.15_96_notop.weights.h5")
K3 = os.path.join(FMT, "keras3_0.1_dynamic_max.keras")
ALPHA, HW = 0.35, (96, 96)


def build(path, **kw):
    kw = {"alpha": ALPHA, "input_shape": HW + (3,), "classes": 10, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mnv2ref.MobileNetV2(weights=str(path), **kw)


def legacy_layers(include_top=True, classes=10):
    return layers_from_raw(convert.random_raw(ALPHA, include_top, classes, seed=3),
                           arch.layers(ALPHA, HW, include_top, classes=classes))


# --- weights for another model -----------------------------------------------------------------------------------


def test_another_alpha_names_the_layer_and_both_shapes():
    with pytest.raises(ValueError) as e:
        build(TOP10, alpha=0.5)
    msg = str(e.value)
    assert "legacy_model_0.35_96_top10.h5" in msg and "'block_1_project'" in msg
    assert "(1, 1, 48, 8) in the file" in msg and "(1, 1, 48, 16) expected" in msg


def test_another_class_count_names_the_layer_and_both_shapes():
    with pytest.raises(ValueError, match=r"top10.h5.*'predictions'.*\(1280, 10\) in the file, \(1280, 1000\)"):
        build(TOP10, classes=1000)


def test_another_size_is_not_an_error():
    """Weights do not depend on the input size (Keras loads them at any size too): a 96 file builds a 128 model."""
    m = build(TOP10, input_shape=(128, 128, 3))
    assert m.input_shape == (None, 128, 128, 3)


def test_top_and_no_top_mismatch():
    with pytest.raises(ValueError, match="105 layers with weights.*104"):
        build(TOP10, include_top=False)
    with pytest.raises(ValueError, match="104 layers with weights.*105"):
        build(W3, alpha=0.15)


def test_missing_layer_is_named(tmp_path):
    layers = [(n, w) for n, w in legacy_layers() if n != "block_3_project"]
    write_legacy(tmp_path / "w.h5", layers)
    with pytest.raises(ValueError, match=r"w.h5.*missing layer\(s\) \['block_3_project'\]"):
        build(tmp_path / "w.h5")
    with pytest.raises(ValueError, match=r"missing layer\(s\) \['block_3_project'\]"):
        mnv2ref.load(tmp_path / "w.h5")


def test_missing_layer_keras3_is_named(tmp_path):
    path = tmp_path / "w.weights.h5"
    shutil.copy(W3, path)
    with h5py.File(path, "a") as f:
        del f["layers/conv2d_34"]  # Conv_1
    with pytest.raises(ValueError, match=r"w.weights.h5.*34 'conv2d' layer groups.*35: no layer for 'Conv_1'"):
        mnv2ref.load(path)


def test_extra_unknown_layer_inside_the_backbone_is_named(tmp_path):
    layers = legacy_layers()
    i = [n for n, _ in layers].index("block_5_add")
    layers.insert(i + 1, ("my_layer", [("my_layer/kernel:0", np.ones((1, 1, 32, 32), np.float32))]))
    write_legacy(tmp_path / "w.h5", layers)
    with pytest.raises(ValueError, match=r"w.h5.*unknown layer\(s\) \['my_layer'\]"):
        build(tmp_path / "w.h5")


def test_extra_unknown_layer_after_the_classifier(tmp_path):
    layers = legacy_layers() + [("my_layer", [("my_layer/kernel:0", np.ones((10, 2), np.float32)),
                                              ("my_layer/bias:0", np.ones(2, np.float32))])]
    write_legacy(tmp_path / "w.h5", layers)
    with pytest.raises(ValueError, match=r"w.h5.*'predictions'.*'my_layer' \[\(10, 2\), \(2,\)\].*not MobileNetV2's"):
        build(tmp_path / "w.h5")
    with pytest.warns(UserWarning, match=r"ignored the layers with weights 'predictions'.*'my_layer'"):
        m = mnv2ref.load(tmp_path / "w.h5")  # the backbone is still usable
    assert not m.include_top


def test_nan_in_the_weights_is_refused(tmp_path):
    layers = legacy_layers()
    name, ws = next((n, w) for n, w in layers if n == "block_2_depthwise_BN")
    ws[3][1][5] = np.nan
    write_legacy(tmp_path / "w.h5", layers)
    with pytest.raises(ValueError, match="w.h5.*'block_2_depthwise_BN' array 'moving_variance'.*1 NaN/inf"):
        build(tmp_path / "w.h5")


# --- files that are not Keras files at all -----------------------------------------------------------------------


@pytest.mark.parametrize("content,match", [
    (b"", r"empty \(0 bytes\): '.*bad\.h5'"),
    (b"\x00\x01 definitely not HDF5 " * 50, r"cannot read '.*bad\.h5' as HDF5"),
    (b"PK\x03\x04 a broken zip" * 10, r"bad\.h5' starts like a zip file"),
])
def test_not_a_weights_file(tmp_path, content, match):
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    for call in (lambda: mnv2ref.load(path), lambda: build(path)):
        with pytest.raises(OSError, match=match):
            call()


def test_hdf5_that_is_not_keras(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"other.h5.*not a legacy Keras weights file.*\['data'\]"):
        mnv2ref.load(tmp_path / "other.h5")


def test_zip_that_is_not_a_keras_archive(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=r"m.keras.*not a Keras '.keras' archive.*config.json"):
        mnv2ref.load(tmp_path / "m.keras")


@pytest.mark.parametrize("src", [TOP10, W3, K3])
def test_truncated(tmp_path, src):
    data = open(src, "rb").read()
    path = tmp_path / ("t" + os.path.basename(src))
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(OSError, match=path.name):
        mnv2ref.load(path)


def test_directory_and_missing_path(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        mnv2ref.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        mnv2ref.load(tmp_path / "nope.h5")
    with pytest.raises(ValueError, match="nope.h5"):  # Keras's own check in MobileNetV2(weights=...)
        mnv2ref.MobileNetV2(weights=str(tmp_path / "nope.h5"))


def test_broken_model_config(tmp_path):
    path = tmp_path / "m.h5"
    shutil.copy(TOP10, path)
    with h5py.File(path, "a") as f:
        f.attrs["model_config"] = '{"class_name": "Functional", "config": {'
    with pytest.raises(ValueError, match="m.h5.*'model_config' attribute is not valid JSON"):
        mnv2ref.load(path)


# --- model inputs ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return mnv2ref.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), seed=3)


@pytest.fixture(scope="module")
def dynamic():
    return mnv2ref.MobileNetV2(weights=None, alpha=0.35, include_top=False, pooling="avg", seed=3)


@pytest.mark.parametrize("shape,match", [
    ((96, 96, 3), r"expected a batch.*\(96, 96, 3\).*x\[None\]"),
    ((1, 1, 96, 96, 3), r"expected a batch.*\(1, 1, 96, 96, 3\)"),
    ((96, 96), r"expected a batch"),
    ((1, 96, 96, 4), r"3 channels last.*\(1, 96, 96, 4\)"),
    ((1, 96, 96, 1), r"3 channels last.*\(1, 96, 96, 1\)"),
    ((2, 3, 96, 96), r"\(2, 3, 96, 96\).*channels-first.*x.transpose\(0, 2, 3, 1\)"),
    ((1, 64, 64, 3), r"built for input_shape \(96, 96, 3\).*\(1, 64, 64, 3\)"),
])
def test_wrong_shapes(small, shape, match):
    with pytest.raises(ValueError, match=match):
        small.predict(np.zeros(shape, np.float32))


@pytest.mark.parametrize("hw", [(31, 64), (64, 16), (8, 8)])
def test_too_small(dynamic, hw):
    with pytest.raises(ValueError, match=rf"at least 32x32, got {hw[0]}x{hw[1]}"):
        dynamic(np.zeros((1,) + hw + (3,), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused(small, bad):
    x = np.zeros((2, 96, 96, 3), np.float32)
    x[1, 5, 6, 2] = bad
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\) \(first at index \(1, 5, 6, 2\)\)"):
        small.predict(x)


def test_uint8_pixels_are_accepted_with_a_warning(small):
    img = np.random.default_rng(0).integers(0, 256, (1, 96, 96, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="looks like 0..255 pixels.*preprocess_input"):
        a = small.predict(img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # preprocessed input: no warning
        c = small.predict(mobilenet_v2.preprocess_input(img))
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(a, small.predict(img.astype(np.float32)))
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.float16, np.float64])
def test_other_numeric_dtypes_are_converted(small, dtype):
    x = np.random.default_rng(1).integers(-1, 2, (1, 96, 96, 3)).astype(dtype)
    np.testing.assert_array_equal(small.predict(x), small.predict(x.astype(np.float32)))


@pytest.mark.parametrize("x", [np.zeros((1, 96, 96, 3), bool), np.zeros((1, 96, 96, 3), complex),
                               np.full((1, 96, 96, 3), "a")])
def test_non_numeric_arrays_are_refused(small, x):
    with pytest.raises(ValueError, match=f"numeric.*{x.dtype}"):
        small.predict(x)


def test_non_contiguous_and_list_inputs_give_the_same_result(small):
    rng = np.random.default_rng(2)
    base = rng.uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    ref = small.predict(base)
    strided = np.zeros((4, 96, 96, 3), np.float32)
    strided[::2] = base
    assert not strided[::2].flags.c_contiguous
    np.testing.assert_array_equal(small.predict(strided[::2]), ref)
    nchw = np.ascontiguousarray(base.transpose(0, 3, 1, 2))
    view = nchw.transpose(0, 2, 3, 1)  # an NHWC view of NCHW memory: fine, it is copied
    np.testing.assert_array_equal(small.predict(view), ref)
    np.testing.assert_array_equal(small.predict(base[:1].tolist()), small.predict(base[:1]))


# --- the ImageNet helpers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1001), (1000,), (2, 1, 1000), (1, 10), (0,)])
def test_decode_predictions_wrong_shape(shape):
    with pytest.raises(ValueError, match=rf"\(samples, 1000\).*Received array with shape: \({shape[0]},"):
        mobilenet_v2.decode_predictions(np.zeros(shape, np.float32))


def test_decode_predictions_list_input():
    p = [[0.0] * 1000]
    p[0][3] = 1.0
    assert mobilenet_v2.decode_predictions(p, top=1)[0][0][:2] == ("n01491361", "tiger_shark")
    with pytest.raises(ValueError, match="Received array with shape"):
        mobilenet_v2.decode_predictions([[0.1, 0.9]])


def test_preprocess_input_lists_and_integers():
    got = mobilenet_v2.preprocess_input([[0, 255], [127.5, 51]])  # Keras: AttributeError; mnv2ref: float32 array
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([[0, 255], [127.5, 51]], np.float32) / np.float32(127.5) - 1)
    u = np.array([0, 128, 255], np.uint8)
    v = mobilenet_v2.preprocess_input(u)
    assert v.dtype == np.float32 and u.tolist() == [0, 128, 255]  # integers: a new array, input untouched
    np.testing.assert_array_equal(v, np.array([0, 128, 255], np.float32) / np.float32(127.5) - 1)
    i = np.array([[0, 255]], np.int64)
    assert mobilenet_v2.preprocess_input(i).dtype == np.float32


# --- property: corrupted files load correctly or fail cleanly ---------------------------------------------------

SOURCES = {"legacy-model": TOP10, "keras3-weights": W3, "keras3-model": K3}


def dataset_map(path):
    """{(layer, var index): dataset path} of a Keras-written fixture, read independently of mnv2ref."""
    out = {}
    with h5py.File(path) as f:
        if "model_weights" in f:
            root = f["model_weights"]
            for name in root.attrs["layer_names"]:
                wn = list(root[name].attrs["weight_names"])
                out.update({(str(name), i): f"model_weights/{name}/{w}" for i, w in enumerate(wn)})
        else:
            for key, g in f["layers"].items():
                if "vars" in g and len(g["vars"]):
                    out.update({(g["vars"].attrs["name"], i): f"layers/{key}/vars/{i}" for i in range(len(g["vars"]))})
    return out


MAPS = {k: dataset_map(v) for k, v in SOURCES.items() if k != "keras3-model"}
ORIGINAL = {}


def original(kind):
    """The uncorrupted fixture's raw arrays, {Keras layer name: {var: array}}."""
    if kind not in ORIGINAL:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ORIGINAL[kind] = mnv2ref.load(SOURCES[kind])._raw
    return ORIGINAL[kind]


corruptions = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 0.999)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 0.9999), st.integers(1, 255)), min_size=1, max_size=6)),
    st.tuples(st.just("drop"), st.floats(0, 0.9999)),
    st.tuples(st.just("reshape"), st.floats(0, 0.9999), st.sampled_from(["grow", "shrink", "extra axis"])),
    st.tuples(st.just("attr"), st.floats(0, 0.9999), st.sampled_from(["delete", "garble"])),
)


def corrupt(kind, op, path):
    src = SOURCES[kind]
    if op[0] in ("truncate", "flip") or kind == "keras3-model":
        data = bytearray(open(src, "rb").read())
        if op[0] == "truncate":
            data = data[: int(op[1] * len(data))]
        elif op[0] == "flip":
            for where, xor in op[1]:
                data[int(where * len(data))] ^= xor
        else:  # structural edits on the zip itself are flips too
            data[int(op[1] * len(data))] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    shutil.copy(src, path)
    targets = sorted(MAPS[kind].values())
    with h5py.File(path, "a") as f:
        if op[0] in ("drop", "reshape"):
            target = targets[int(op[1] * len(targets))]
            a = f[target][()]
            del f[target]
            if op[0] == "reshape":
                shape = {"grow": a.shape[:-1] + (a.shape[-1] + 1,), "shrink": a.shape[:-1] + (max(a.shape[-1] - 1, 0),),
                         "extra axis": (1,) + a.shape}[op[2]]
                f[target] = np.resize(a, shape)
        else:
            owners = []
            f.visititems(lambda n, o: owners.extend((n, k) for k in o.attrs))
            owners += [("/", k) for k in f.attrs]
            owner, key = sorted(owners)[int(op[1] * len(owners))]
            if op[2] == "delete":
                del f[owner].attrs[key]
            else:
                f[owner].attrs[key] = "garbage \x01"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(SOURCES)), op=corruptions)
def test_corrupted_files_load_correctly_or_fail_cleanly(tmp_path, kind, op):
    """Outcomes allowed: ValueError/OSError, or a load holding exactly the arrays that are in the file.

    HDF5 keeps no checksum of array data, so a flipped bit inside a weight is a different (valid)
    file: there the loaded arrays must equal what h5py reads at those places. Everything else --
    structure, attributes, shapes, a zip member's bytes (CRC-checked) -- must be an error or no change.
    """
    path = tmp_path / f"c_{os.path.basename(SOURCES[kind])}"
    corrupt(kind, op, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = mnv2ref.load(path)._raw
    except (ValueError, OSError) as e:
        assert path.name in str(e), f"error does not name the file: {e}"
        return
    structural = op[0] in ("drop", "reshape", "truncate") and (kind != "keras3-model" or op[0] == "truncate")
    assert not structural, f"{op} loaded without an error"  # (on the zip, drop/reshape are byte flips)
    want = original(kind)
    # A damaged model_config can change what is inferred (e.g. no classifier: loaded without it, with a
    # warning), never which array goes where.
    assert set(got) <= set(want) and set(want) - set(got) <= {"predictions"}, sorted(set(want) ^ set(got))
    if kind == "keras3-model" or op[0] == "attr":  # zip members are CRC-checked; attributes hold no numbers
        for name in got:
            for var in want[name]:
                np.testing.assert_array_equal(got[name][var], want[name][var], err_msg=f"{name}/{var}")
    else:  # byte flips: exactly what h5py reads at the documented places of the corrupted file
        with h5py.File(path) as f:
            for name, arrays in got.items():
                for i, (var, a) in enumerate(arrays.items()):
                    np.testing.assert_array_equal(a, np.asarray(f[MAPS[kind][(name, i)]][()], a.dtype),
                                                  err_msg=f"{name}/{var}")
    for name, arrays in got.items():
        assert all(np.isfinite(a).all() for a in arrays.values()), name

"""Reading legacy Keras HDF5 files: the official layout, the 2018 quirks, and clear errors."""
import os

import h5py
import numpy as np
import pytest

import mnv2ref
from mnv2ref import arch, convert, h5io, testing

from h5tools import layers_from_raw, read_file_layers, write_legacy

ALPHA, HW = 0.35, (96, 96)


@pytest.fixture(scope="module")
def raw():
    """The shared recipe's weights (non-trivial batch norm, so swapped BN arrays change the output)."""
    return testing.realistic_raw(ALPHA, seed=1)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 1, (2,) + HW + (3,)).astype(np.float32)


@pytest.fixture(scope="module")
def expected(raw, x):
    m = mnv2ref.Model(raw, alpha=ALPHA, input_shape=HW + (3,), include_top=True, pooling=None, classes=1000,
                      classifier_activation=None, name="ref", dtype="float32", backend="numpy")
    return m.predict(x)


def file_layers(raw, include_top=True):
    return layers_from_raw(raw, arch.layers(ALPHA, HW, include_top))


QUIRKS = {
    "official layout": {},
    "bytes attributes": {"as_bytes": True},
    "chunked layer_names": {"chunks": 3},
    "full-model file (model_weights/)": {"full_model": True},
    "classifier named Logits": {"rename": {"predictions": "Logits"}},
    "Keras 3 legacy names (no :0, depthwise 'kernel')": {"strip_suffix": True},
    "all at once": {"as_bytes": True, "chunks": 2, "full_model": True, "rename": {"predictions": "Logits"}},
}


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_quirks_load_identically(quirk, raw, x, expected, tmp_path):
    path = tmp_path / "w.h5"
    write_legacy(path, file_layers(raw), **QUIRKS[quirk])
    m = mnv2ref.MobileNetV2(backend="numpy", input_shape=HW + (3,), alpha=ALPHA, weights=str(path), classifier_activation=None)
    np.testing.assert_array_equal(m.predict(x), expected)


def test_extra_weightless_conv1_pad_layer(raw, x, expected, tmp_path):
    """Older Keras had a weightless Conv1_pad layer; positional loading skips weightless layers."""
    layers = file_layers(raw)
    layers.insert(1, ("Conv1_pad", []))
    write_legacy(tmp_path / "w.h5", layers)
    m = mnv2ref.MobileNetV2(backend="numpy", input_shape=HW + (3,), alpha=ALPHA, weights=str(tmp_path / "w.h5"),
                            classifier_activation=None)
    np.testing.assert_array_equal(m.predict(x), expected)


def test_writer_imitates_keras_layout():
    """Our imitation has the same layer names, weight names and dataset paths as the Keras-written fixture."""
    real = os.path.join(os.path.dirname(__file__), "..", "fixtures",
                        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5")
    got = read_file_layers(real)
    ours = file_layers(convert.random_raw(ALPHA))
    assert [n for n, _ in got][1:] == [n for n, _ in ours][1:]  # the input layer's name varies by session
    assert [[w for w, _ in ws] for _, ws in got] == [[w for w, _ in ws] for _, ws in ours]
    assert [[a.shape for _, a in ws] for _, ws in got] == [[a.shape for _, a in ws] for _, ws in ours]


def test_weights_read_in_weight_names_order_not_listing_order(raw, tmp_path):
    write_legacy(tmp_path / "w.h5", file_layers(raw))
    layers = h5io.read_legacy_h5(tmp_path / "w.h5")
    bn = layers[1]
    assert bn.name == "bn_Conv1"
    assert [w.split("/")[-1] for w, _ in bn.weights] == ["gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"]
    np.testing.assert_array_equal(bn.weights[0][1], raw["bn_Conv1"]["gamma"])


# --- errors ------------------------------------------------------------------------------------------------


def test_wrong_alpha_names_layer_and_both_shapes(raw, tmp_path):
    write_legacy(tmp_path / "w.h5", file_layers(raw))
    with pytest.raises(ValueError) as e:
        mnv2ref.MobileNetV2(backend="numpy", input_shape=HW + (3,), alpha=1.0, weights=str(tmp_path / "w.h5"))
    msg = str(e.value)
    assert "w.h5" in msg and "Conv1" in msg and "(3, 3, 3, 16)" in msg and "(3, 3, 3, 32)" in msg
    assert "alpha in [0.35, 0.5]" in msg


def test_wrong_classes_and_top(raw, tmp_path):
    write_legacy(tmp_path / "w.h5", file_layers(raw))
    with pytest.raises(ValueError, match=r"predictions.*\(1280, 1000\) in the file, \(1280, 10\) expected"):
        mnv2ref.MobileNetV2(backend="numpy", input_shape=HW + (3,), alpha=ALPHA, weights=str(tmp_path / "w.h5"), classes=10)
    with pytest.raises(ValueError, match="105 layers with weights.*104"):
        mnv2ref.MobileNetV2(backend="numpy", alpha=ALPHA, include_top=False, weights=str(tmp_path / "w.h5"))


def test_swapped_batchnorm_arrays_are_refused(raw, tmp_path):
    layers = file_layers(raw)
    name, ws = layers[2]  # bn_Conv1
    layers[2] = (name, [ws[1], ws[0], ws[2], ws[3]])
    write_legacy(tmp_path / "w.h5", layers)
    with pytest.raises(ValueError, match="bn_Conv1.*order"):
        mnv2ref.MobileNetV2(backend="numpy", input_shape=HW + (3,), alpha=ALPHA, weights=str(tmp_path / "w.h5"))


def test_misaligned_layer_is_refused(raw, tmp_path):
    layers = file_layers(raw)
    swap = {"Conv1": "Conv_1", "Conv_1": "Conv1"}  # two MobileNetV2 names exchanged
    layers = [(swap.get(n, n), w) for n, w in layers]
    write_legacy(tmp_path / "w.h5", layers)
    with pytest.raises(ValueError, match="'Conv_1' is where 'Conv1' should be"):
        mnv2ref.MobileNetV2(backend="numpy", input_shape=HW + (3,), alpha=ALPHA, weights=str(tmp_path / "w.h5"))


def test_unknown_layer_name_warns_but_loads(raw, tmp_path, x, expected):
    write_legacy(tmp_path / "w.h5", file_layers(raw), rename={"Conv_1": "my_conv"})
    with pytest.warns(UserWarning, match="'my_conv' loaded as 'Conv_1'"):
        m = mnv2ref.MobileNetV2(backend="numpy", input_shape=HW + (3,), alpha=ALPHA, weights=str(tmp_path / "w.h5"),
                                classifier_activation=None)
    np.testing.assert_array_equal(m.predict(x), expected)


def test_missing_dataset(raw, tmp_path):
    path = tmp_path / "w.h5"
    write_legacy(path, file_layers(raw))
    with h5py.File(path, "a") as f:
        del f["block_3_project/block_3_project/kernel:0"]
    with pytest.raises(ValueError, match="block_3_project.*missing"):
        mnv2ref.MobileNetV2(backend="numpy", input_shape=HW + (3,), alpha=ALPHA, weights=str(path))


def test_not_a_keras_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match="other.h5.*not a legacy Keras weights file"):
        mnv2ref.MobileNetV2(backend="numpy", alpha=ALPHA, weights=str(path))


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all" * 10])
def test_empty_or_foreign_file(tmp_path, content):
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    with pytest.raises(OSError, match="bad.h5"):
        mnv2ref.MobileNetV2(backend="numpy", alpha=ALPHA, weights=str(path))


def test_truncated_file(raw, tmp_path):
    path = tmp_path / "w.h5"
    write_legacy(path, file_layers(raw))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="w.h5"):
        mnv2ref.MobileNetV2(backend="numpy", input_shape=HW + (3,), alpha=ALPHA, weights=str(path))


def test_directory_and_missing_path(tmp_path):
    with pytest.raises(OSError, match="directory"):
        h5io.read_legacy_h5(tmp_path)
    with pytest.raises(ValueError, match="nope.h5"):  # Keras's check: not None/imagenet/existing file
        mnv2ref.MobileNetV2(backend="numpy", weights=str(tmp_path / "nope.h5"))

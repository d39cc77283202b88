"""mnv2ref vs the committed TensorFlow golden fixtures, layer by layer, float32 and float64.

The mutation tests show the fixtures would catch the classic porting bugs:
each one breaks a single rule and the comparison must fail.
"""
import json
from pathlib import Path

import numpy as np
import pytest

import mnv2ref
from mnv2ref import arch, numpy_ops
from mnv2ref.compare import (ACCURACY_FACTOR, ACCURACY_FLOOR, TOLERANCE, assert_layers_close, compare_layers,
                             first_failure)
from mnv2ref.fileio import sha256_file
from mnv2ref.verify import build, check_fixture, stage_of

FIX = Path(__file__).resolve().parent.parent / "fixtures"
MANIFEST = json.loads((FIX / "manifest.json").read_text())
FIXTURES = MANIFEST["fixtures"]


def load(name):
    with np.load(FIX / FIXTURES[name]["golden_file"]) as z:
        return {k: z[k] for k in z.files}


def golden_layers(npz, prefix=""):
    order = [str(n) for n in npz[prefix + "layer_order"]]
    return {n: npz[f"{prefix}layer/{n}"] for n in order}


def test_manifest_hashes_match_files():
    for name, info in MANIFEST["files"].items():
        assert (FIX / name).stat().st_size == info["size"], name
        assert sha256_file(FIX / name) == info["sha256"], name


def test_fixtures_stay_small():
    # The two weight files alone are 10.5 MB (the 0.35 top is a 1280x1000 Dense); goldens are kept to ~7 MB.
    assert sum(info["size"] for info in MANIFEST["files"].values()) < 18.5e6


def test_preprocessing_is_bit_exact_with_tensorflow():
    for name in FIXTURES:
        npz = load(name)
        np.testing.assert_array_equal(mnv2ref.preprocess_input(npz["input"].copy()), npz["preprocessed"])


BACKENDS = ["numba", "numpy"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_every_layer_and_logits(dtype, backend):
    cfg, npz = FIXTURES["0.35_96"], load("0.35_96")
    m = build(cfg, FIX, True, dtype, backend=backend)
    assert m.name == cfg.get("model_name", m.name)
    tf = golden_layers(npz)
    assert list(m.trace(npz["preprocessed"])) == list(tf)
    assert_layers_close(m.trace(npz["preprocessed"]), tf, dtype)
    logits = build(cfg, FIX, True, dtype, activation=None, backend=backend).predict(npz["preprocessed"])
    assert_layers_close({"logits": logits}, {"logits": npz["logits"]}, dtype)
    assert_layers_close({"probs": m.predict(npz["preprocessed"])}, {"probs": npz["probs"]}, dtype)
    assert [list(np.argsort(-p)[:5]) for p in logits] == [list(np.argsort(-p)[:5]) for p in npz["logits"]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["static", "dynamic"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_b_odd_non_square_no_top_both_padding_modes(variant, dtype, backend):
    cfg, npz = FIXTURES["0.5_97x131_avg"], load("0.5_97x131_avg")
    m = build(cfg, FIX, variant == "static", dtype, backend=backend)
    tf = golden_layers(npz, variant + "/")
    tr = m.trace(npz["preprocessed"])
    assert_layers_close(tr, tf, dtype)
    assert m.predict(npz["preprocessed"]).shape == (len(npz["input"]), 1280)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", ["static", "dynamic"])
def test_banded_blocks_match_whole_tensors_and_tensorflow(variant, dtype, monkeypatch):
    """Paper 5.1 schedule (``banded``): Numba gives the very same bits as whole tensors; the
    NumPy version agrees to rounding; both match TensorFlow's features."""
    from mnv2ref import numba_ops

    monkeypatch.setattr(numba_ops, "_MIN_BANDED_BYTES", 0)  # band every block, even the small ones
    monkeypatch.setattr(numba_ops, "_MIN_BANDED_ROWS", 0)
    cfg, npz = FIXTURES["0.5_97x131_avg"], load("0.5_97x131_avg")
    shape = tuple(cfg["input_shape"]) if variant == "static" else (None, None, 3)
    x = npz["preprocessed"]
    out = {}
    for backend in BACKENDS:
        for banded in (False, True):
            m = mnv2ref.MobileNetV2(shape, alpha=cfg["alpha"], include_top=False, pooling=cfg["pooling"],
                                    weights=str(FIX / cfg["weights_file"]), dtype=dtype, backend=backend,
                                    banded=banded)
            assert m.banded is banded
            out[backend, banded] = m.predict(x)
    np.testing.assert_array_equal(out["numba", True], out["numba", False])
    last = golden_layers(npz, variant + "/")["global_average_pooling2d"]
    for key, y in out.items():
        assert_layers_close({"global_average_pooling2d": y}, {"global_average_pooling2d": last}, dtype)


def test_banded_default_is_per_backend():
    cfg = FIXTURES["0.35_96"]
    assert build(cfg, FIX, True, "float32", backend="numba").banded is True
    assert build(cfg, FIX, True, "float32", backend="numpy").banded is False


def test_static_and_dynamic_really_differ():
    npz = load("0.5_97x131_avg")
    s, d = golden_layers(npz, "static/"), golden_layers(npz, "dynamic/")
    assert s["out_relu"].shape[1:3] == (4, 5) and d["out_relu"].shape[1:3] == (3, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_our_float32_is_as_accurate_as_tensorflow(backend):
    """Against our float64 pass, our float32 error stays within 3x TensorFlow's own float32 error (or 1e-6)."""
    for name, cfg in FIXTURES.items():
        for r in check_fixture(name, cfg, FIX, backend):
            assert not r.failures, r.failures
            ours = max(l[4] for l in r.layers)
            theirs = max(l[3] for l in r.layers)
            assert ours <= max(ACCURACY_FACTOR * theirs, ACCURACY_FLOOR), (r.label, ours, theirs)


def test_stage_names():
    assert [stage_of(n) for n in ("bn_Conv1", "expanded_conv_project", "block_13_pad", "out_relu", "predictions")] \
        == ["stem", "block_0", "block_13", "head", "top"]


# --- mutations: each classic bug must make the fixture comparison fail ---------------------------------------


def worst_error_a():
    cfg, npz = FIXTURES["0.35_96"], load("0.35_96")
    m = build(cfg, FIX, True, "float64", backend="numpy")  # the mutations patch the NumPy pass
    try:
        errs = compare_layers(m.trace(npz["preprocessed"]), golden_layers(npz))
    except AssertionError as e:  # a missing layer or a shape mismatch is a failure too
        return str(e)
    return first_failure(errs, TOLERANCE["float64"])


def worst_error_b_static():
    cfg, npz = FIXTURES["0.5_97x131_avg"], load("0.5_97x131_avg")
    m = build(cfg, FIX, True, "float64", backend="numpy")
    try:
        errs = compare_layers(m.trace(npz["preprocessed"]), golden_layers(npz, "static/"))
    except AssertionError as e:  # a shape mismatch is a failure too
        return str(e)
    return first_failure(errs, TOLERANCE["float64"])


def test_unmutated_passes():
    assert worst_error_a() is None and worst_error_b_static() is None


def test_mutation_symmetric_padding_is_caught(monkeypatch):
    monkeypatch.setattr(arch, "correct_pad", lambda h, w, k=3: ((1, 1), (1, 1)))
    assert worst_error_a() is not None


def test_mutation_dynamic_padding_rule_on_static_model_is_caught(monkeypatch):
    monkeypatch.setattr(arch, "correct_pad", lambda h, w, k=3: ((0, 1), (0, 1)))
    assert worst_error_b_static() is not None


def test_mutation_symmetric_same_padding_on_conv1_is_caught(monkeypatch):
    monkeypatch.setattr(arch, "same_pad", lambda n, s, k=3: (1, 1) if s == 2 else (1, 1))
    assert worst_error_a() is not None


def test_mutation_pytorch_epsilon_is_caught(monkeypatch):
    monkeypatch.setattr(arch, "BN_EPSILON", 1e-5)
    bad = worst_error_a()
    assert bad is not None and bad.name == "bn_Conv1"


def test_mutation_missing_relu6_cap_is_caught(monkeypatch):
    monkeypatch.setattr(numpy_ops, "relu6", lambda x: np.maximum(x, 0))
    bad = worst_error_a()
    assert bad is not None and bad.name.endswith("relu")


def test_mutation_residual_in_wrong_block_is_caught(monkeypatch):
    real = arch.Block.residual
    monkeypatch.setattr(arch.Block, "residual", property(lambda b: real.fget(b) if b.index != 2 else False))
    bad = worst_error_a()
    assert bad is not None and "block_2_add" in str(bad)  # the layer is missing from ours


def test_mutation_swapped_batchnorm_arrays_are_caught(monkeypatch):
    from mnv2ref import convert

    real = convert.fold

    def swapped(raw, *a, **k):
        raw = dict(raw)
        bn = dict(raw["block_4_expand_BN"])
        bn["gamma"], bn["beta"] = bn["beta"], bn["gamma"]
        raw["block_4_expand_BN"] = bn
        return real(raw, *a, **k)

    monkeypatch.setattr(convert, "fold", swapped)
    bad = worst_error_a()
    assert bad is not None and bad.name == "block_4_expand_BN"

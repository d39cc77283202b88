"""mnv2ref.load_tflite against stored goldens of TFLite's reference kernels (BUILTIN_REF).

The published Coral uint8 file (fixtures/coral/, goldens by fixtures/coral/generate_coral.py):
every tensor of the trace has the sha256 TFLite's reference kernels gave, on the photo, zeros,
all-255 and noise. The converter-made int8 files (fixtures/int8/, by fixtures/generate_int8.py):
every tensor equal to the stored arrays. Live comparisons: tests/test_tflite_parity.py.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

pytest.importorskip("tflite", reason="the optional extra mnv2ref[tflite] (tflite, flatbuffers) is not installed")

import mnv2ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CORAL = os.path.join(HERE, "..", "fixtures", "coral")
CORAL_MODEL = os.path.join(CORAL, "mobilenet_v2_1.0_224_inat_bird_quant.tflite")


def _sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def coral():
    return mnv2ref.load_tflite(CORAL_MODEL)


@pytest.fixture(scope="module")
def coral_golden():
    with open(os.path.join(CORAL, "golden_coral.json")) as f:
        meta = json.load(f)
    return meta, np.load(os.path.join(CORAL, "golden_coral.npz"))


@pytest.mark.parametrize("name", ["bird", "zeros", "all255", "noise"])
def test_coral_every_tensor_equals_builtin_ref(coral, coral_golden, name):
    meta, arrays = coral_golden
    want = meta["tensors_sha256"][name]
    trace = coral.trace(arrays[f"input/{name}"])
    computed = {coral.ops[i].outputs[0] for i in range(len(coral.ops))} | {coral.inputs[0].name}
    assert set(trace) == computed and computed <= set(want)
    diff = [t for t in trace if _sha(trace[t]) != want[t]]
    assert not diff, f"{len(diff)} tensors differ from TFLite BUILTIN_REF; first: {diff[0]!r}"
    np.testing.assert_array_equal(trace[coral.outputs[0].name], arrays[f"ref/{name}"])


def test_coral_photo_classifies_as_chickadee(coral, coral_golden):
    _, arrays = coral_golden
    y = coral.predict(arrays["input/bird"])
    labels = open(os.path.join(CORAL, "inat_bird_labels.txt")).read().splitlines()
    assert y.dtype == np.uint8 and y.shape == (1, 965)
    assert "Poecile atricapillus" in labels[int(y[0].argmax())] and int(y.max()) == 190


def test_coral_batch_equals_one_by_one(coral, coral_golden):
    _, arrays = coral_golden
    x = np.concatenate([arrays[f"input/{n}"] for n in ("bird", "noise")])
    y = coral.predict(x)
    for i, n in enumerate(("bird", "noise")):
        np.testing.assert_array_equal(y[i:i + 1], arrays[f"ref/{n}"])


@pytest.mark.parametrize("name", ["bird", "zeros", "all255", "noise"])
def test_coral_xnnpack_mode_equals_default_resolver(coral_golden, name):
    """kernels="xnnpack" reproduces TFLite's default path (OpResolverType.AUTO) on the Coral file."""
    _, arrays = coral_golden
    m = mnv2ref.load_tflite(CORAL_MODEL, kernels="xnnpack")
    np.testing.assert_array_equal(m.predict(arrays[f"input/{name}"]), arrays[f"auto/{name}"])


def test_coral_reference_and_default_paths_differ(coral_golden):
    """The two TFLite paths are not bit-identical (why kernels= exists): on the photo they differ."""
    _, arrays = coral_golden
    assert not np.array_equal(arrays["ref/bird"], arrays["auto/bird"])

"""mnv2ref.load_tflite against stored goldens of TFLite (ai-edge-litert 2.3.0).

The goldens are fixtures/int8/golden_*.npz (fixtures/generate_int8.py): the converter-made int8,
uint8 and float-I/O files and the published Coral uint8 file (fixtures/coral/), each on an image,
zeros, the dtype's min/max and noise. Every tensor the graph computes equals BUILTIN_REF's (full
arrays where stored, sha256 otherwise), and kernels="xnnpack" gives the default resolver's (AUTO)
output. Live comparisons, every tensor of both paths: tests/test_tflite_parity.py.
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


def _sha(a):  # the goldens' per-tensor hash: sha256 of the C-order bytes
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def coral():
    return mnv2ref.load_tflite(CORAL_MODEL)


@pytest.fixture(scope="module")
def coral_golden():
    return np.load(os.path.join(HERE, "..", "fixtures", "int8", "golden_coral_" +
                                os.path.basename(CORAL_MODEL).replace(".tflite", ".npz")))


def test_coral_photo_classifies_as_chickadee(coral, coral_golden):
    y = coral.predict(coral_golden["input/image"])
    labels = open(os.path.join(CORAL, "inat_bird_labels.txt")).read().splitlines()
    assert y.dtype == np.uint8 and y.shape == (1, 965)
    assert "Poecile atricapillus" in labels[int(y[0].argmax())] and int(y.max()) == 190


def test_coral_batch_equals_one_by_one(coral, coral_golden):
    """A batch of N runs like N single images (the file says batch 1)."""
    out = int(coral.outputs[0].index)
    cases = ("image", "noise", "max")
    y = coral.predict(np.concatenate([coral_golden[f"input/{c}"] for c in cases]))
    for i, c in enumerate(cases):
        np.testing.assert_array_equal(y[i:i + 1], coral_golden[f"ref/{c}/{out}"])


def test_coral_reference_and_default_paths_differ(coral, coral_golden):
    """TFLite's two paths are not bit-identical on this file (why ``kernels=`` exists)."""
    out = int(coral.outputs[0].index)
    assert not np.array_equal(coral_golden[f"ref/image/{out}"], coral_golden[f"auto/image/{out}"])


def test_numpy_kernels_equal_numba_kernels_on_coral(coral, coral_golden):
    """The readable NumPy oracle (kernels="numpy") and the Numba path agree on every tensor."""
    x = coral_golden["input/noise"]
    a, b = coral.trace(x), mnv2ref.load_tflite(CORAL_MODEL, kernels="numpy").trace(x)
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---- converter-made int8 files (fixtures/int8/, fixtures/generate_int8.py) and its Coral golden ----

INT8 = os.path.join(HERE, "..", "fixtures", "int8")
FIXTURES = os.path.join(HERE, "..", "fixtures")
MANIFEST = json.load(open(os.path.join(INT8, "manifest.json"))) if os.path.exists(os.path.join(INT8, "manifest.json")) else {"models": {}}
MODELS = sorted(MANIFEST["models"])


def _model_path(name):
    p = os.path.join(INT8, name)
    return p if os.path.exists(p) else os.path.join(FIXTURES, name)


@pytest.fixture(scope="module")
def int8_models():
    cache = {}

    def get(name, kernels="reference"):
        if (name, kernels) not in cache:
            cache[name, kernels] = mnv2ref.load_tflite(_model_path(name), kernels=kernels)
        return cache[name, kernels]
    return get


@pytest.mark.parametrize("name", MODELS)
def test_int8_fixture_every_tensor_equals_builtin_ref(int8_models, name):
    """Every case of the golden: full tensors where stored, the sha256 of every tensor otherwise."""
    z = np.load(os.path.join(INT8, MANIFEST["models"][name]["golden"]))
    m = int8_models(name)
    order = [int(i) for i in z["order"]]
    names = {int(i): str(n) for i, n in zip(z["index"], z["name"])}
    assert [names[i] for i in order] == list(m.trace(z[f"input/{z['cases'][0]}"]).keys())
    full = {str(c) for c in z["full_cases"]}
    for case in (str(c) for c in z["cases"]):
        trace = m.trace(z[f"input/{case}"])
        got = [_sha(trace[names[i]]) for i in order]
        bad = [names[i] for i, a, b in zip(order, got, z[f"sha256/{case}"]) if a != str(b)]
        assert not bad, f"{name} {case}: {len(bad)} tensors differ from BUILTIN_REF, first {bad[0]!r}"
        if case in full:
            for i in order:
                np.testing.assert_array_equal(trace[names[i]], z[f"ref/{case}/{i}"], err_msg=f"{name} {case} {names[i]}")


@pytest.mark.parametrize("name", MODELS)
def test_int8_fixture_xnnpack_mode_equals_default_resolver(int8_models, name):
    z = np.load(os.path.join(INT8, MANIFEST["models"][name]["golden"]))
    m = int8_models(name, "xnnpack")
    out = int(m.outputs[0].index)
    for case in (str(c) for c in z["cases"]):
        np.testing.assert_array_equal(m.predict(z[f"input/{case}"]), z[f"auto/{case}/{out}"], err_msg=f"{name} {case}")


def test_readme_int8_example_prints_what_the_readme_shows(capsys, monkeypatch):
    """The README's int8 example runs (from the repository root) and prints the output shown under it."""
    import re
    readme = open(os.path.join(HERE, "..", "README.md")).read()
    section = readme[readme.index("## int8: TFLite's quantized MobileNetV2, bit for bit"):]
    code, shown = re.findall(r"```python\n(.*?)```\n\n```\n(.*?)```", section, re.S)[0]
    monkeypatch.chdir(os.path.join(HERE, ".."))
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == shown

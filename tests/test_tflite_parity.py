"""mnv2ref.load_tflite live against the installed ai-edge-litert: every tensor, both TFLite paths.

* ``kernels="reference"`` (and ``"numpy"`` on one file) against ``OpResolverType.BUILTIN_REF`` with
  ``experimental_preserve_all_tensors``: every tensor the graph computes, exactly.
* ``kernels="xnnpack"`` against the default resolver (``AUTO``, XNNPACK applied): every tensor, read
  from a copy of the file whose computed tensors are all graph outputs (``litert_tools.expose_all``;
  inside an XNNPACK partition intermediates are not written back), and the plain file's output.

Files: fixtures/int8/*.tflite (converter-made: int8, uint8 and float I/O, 0.35_96 and 0.5_97x131)
and the published Coral uint8 file; and, built here when TensorFlow is installed, a file in the older
layout (a PAD op, per-tensor int8 weights, int8 AVERAGE_POOL_2D, a 1x1 CONV_2D classifier + RESHAPE;
``litert_tools.make_legacy_layout``; ``MNV2REF_REQUIRE_TF=1`` makes a missing TensorFlow a failure). Inputs: fresh seeds of uniform noise over the dtype's range,
zeros, the dtype's min and max, a batch of 2. Skipped (with the reason) when ai-edge-litert is not
installed; ``MNV2REF_REQUIRE_LITERT=1`` (.ci/run) makes that a failure.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest

pytest.importorskip("tflite", reason="the optional extra mnv2ref[tflite] (tflite, flatbuffers) is not installed")
if os.environ.get("MNV2REF_REQUIRE_LITERT") == "1":  # CI: a missing runtime is a failure, not a skip
    import ai_edge_litert.interpreter  # noqa: F401
else:
    pytest.importorskip("ai_edge_litert.interpreter",
                        reason="live TFLite parity needs ai-edge-litert (pip install -e .[tf])")

import litert_tools  # noqa: E402

import mnv2ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = sorted(glob.glob(os.path.join(HERE, "..", "fixtures", "int8", "*.tflite"))) + \
    [os.path.join(HERE, "..", "fixtures", "coral", "mobilenet_v2_1.0_224_inat_bird_quant.tflite")]
IDS = [os.path.basename(f) for f in FILES]


def _inputs(model, seed: int) -> dict:
    t = model.inputs[0]
    shape = (1,) + t.shape[1:]
    rng = np.random.default_rng(1000 + seed)
    if t.dtype == np.float32:
        return {"noise": rng.uniform(-1.5, 1.5, shape).astype(np.float32), "zeros": np.zeros(shape, np.float32),
                "min": np.full(shape, -1.0, np.float32), "max": np.full(shape, 1.0, np.float32)}
    info = np.iinfo(t.dtype)
    return {"noise": rng.integers(info.min, int(info.max) + 1, shape).astype(t.dtype),
            "zeros": np.zeros(shape, t.dtype), "min": np.full(shape, info.min, t.dtype),
            "max": np.full(shape, info.max, t.dtype)}


def _assert_trace_equal(trace, want, what):
    missing = [k for k in trace if k not in want]
    assert not missing, f"{what}: tensors TFLite did not report: {missing[:3]}"
    bad = [(k, int(np.sum(trace[k] != want[k]))) for k in trace
           if trace[k].shape != want[k].shape or not np.array_equal(trace[k], want[k])]
    assert not bad, f"{what}: {len(bad)} tensors differ; first {bad[0][0]!r} ({bad[0][1]} elements)"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_reference_every_tensor_equals_builtin_ref(path):
    m = mnv2ref.load_tflite(path)
    for seed in (0, 1):
        for case, x in _inputs(m, seed).items():
            if seed and case != "noise":
                continue
            _assert_trace_equal(m.trace(x), litert_tools.run(path, x, "ref"), f"{IDS[FILES.index(path)]} {case}")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_xnnpack_every_tensor_equals_default_resolver(path):
    m = mnv2ref.load_tflite(path, kernels="xnnpack")
    exposed = litert_tools.expose_all(path)
    out = m.outputs[0].name
    for case, x in _inputs(m, 0).items():
        trace = m.trace(x)
        auto = litert_tools.run(exposed, x, "auto")
        auto[m.inputs[0].name] = x
        _assert_trace_equal(trace, auto, f"{os.path.basename(path)} {case} (AUTO, all tensors exposed)")
        np.testing.assert_array_equal(trace[out], litert_tools.run(path, x, "auto")[out])


@pytest.mark.parametrize("path", FILES[:1] + FILES[-1:], ids=IDS[:1] + IDS[-1:])
def test_batch_of_two_equals_tflite_resized(path):
    """A batch the file does not declare (TFLite's resize_tensor_input) gives TFLite's tensors."""
    m = mnv2ref.load_tflite(path)
    x = np.concatenate([v for k, v in _inputs(m, 2).items() if k in ("noise", "max")])
    _assert_trace_equal(m.trace(x), litert_tools.run(path, x, "ref"), "batch 2")


def test_numpy_kernels_equal_builtin_ref():
    path = FILES[0]
    m = mnv2ref.load_tflite(path, kernels="numpy")
    x = _inputs(m, 3)["noise"]
    _assert_trace_equal(m.trace(x), litert_tools.run(path, x, "ref"), "kernels='numpy'")


@pytest.fixture(scope="module")
def legacy_layout(tmp_path_factory):
    if os.environ.get("MNV2REF_REQUIRE_TF") != "1":
        pytest.importorskip("tensorflow", reason="building the PAD/RESHAPE-layout file needs tensorflow (.[tf])")
        pytest.importorskip("tf_keras", reason="building the PAD/RESHAPE-layout file needs tf_keras (.[tf])")
    path = str(tmp_path_factory.mktemp("legacy") / "mnv2_0.35_96_pad_pertensor_uint8.tflite")
    litert_tools.make_legacy_layout(path)
    return path


def test_legacy_layout_pad_reshape_per_tensor_both_paths(legacy_layout):
    m = mnv2ref.load_tflite(legacy_layout)
    names = [op.name for op in m.ops]
    assert {"PAD", "RESHAPE", "AVERAGE_POOL_2D"} <= set(names) and names.count("CONV_2D") == 36
    assert all(m._fm.tensors[op.input_indices[1]].scale.size == 1 for op in m.ops if op.name == "CONV_2D")
    xnn = mnv2ref.load_tflite(legacy_layout, kernels="xnnpack")
    exposed = litert_tools.expose_all(legacy_layout)
    for case, x in _inputs(m, 4).items():
        _assert_trace_equal(m.trace(x), litert_tools.run(legacy_layout, x, "ref"), f"legacy layout {case}")
        auto = litert_tools.run(exposed, x, "auto")
        auto[m.inputs[0].name] = x
        _assert_trace_equal(xnn.trace(x), auto, f"legacy layout {case} (AUTO)")

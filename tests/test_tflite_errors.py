"""mnv2ref.load_tflite's errors: a ValueError (or OSError) naming the file and the tensor or op."""
from __future__ import annotations

import os

import numpy as np
import pytest

tflite = pytest.importorskip("tflite", reason="the optional extra mnv2ref[tflite] (tflite, flatbuffers) is not installed")

import mnv2ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
INT8 = os.path.join(HERE, "..", "fixtures", "int8", "mnv2_0.35_96_int8.tflite")
CORAL = os.path.join(HERE, "..", "fixtures", "coral", "mobilenet_v2_1.0_224_inat_bird_quant.tflite")


def _patched(tmp_path, edit) -> str:
    """A copy of the int8 fixture with bytes changed in place by ``edit(bytearray, model)``."""
    buf = bytearray(open(INT8, "rb").read())
    edit(buf, tflite.Model.GetRootAsModel(bytes(buf), 0))
    p = tmp_path / "patched.tflite"
    p.write_bytes(bytes(buf))
    return str(p)


def _set_opcode(buf, model, old: int, new: int):
    """Rewrite the operator code ``old`` as ``new`` (both its deprecated int8 and int32 fields)."""
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        if max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) == old:
            tab = oc._tab
            buf[tab.Pos + tab.Offset(4)] = new                                   # deprecated_builtin_code
            buf[tab.Pos + tab.Offset(10): tab.Pos + tab.Offset(10) + 4] = new.to_bytes(4, "little")
            return
    raise AssertionError(old)


def _model():
    return mnv2ref.load_tflite(INT8)


def test_not_a_flatbuffer(tmp_path):
    p = tmp_path / "x.tflite"
    p.write_bytes(b"this is not a model at all")
    with pytest.raises(ValueError, match=r"x\.tflite.*not a TFLite flatbuffer"):
        mnv2ref.load_tflite(p)
    p.write_bytes(b"")
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        mnv2ref.load_tflite(p)


def test_h5_file_is_not_a_tflite():
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        mnv2ref.load_tflite(os.path.join(HERE, "..", "fixtures", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5"))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        mnv2ref.load_tflite(tmp_path / "absent.tflite")
    with pytest.raises(OSError, match="directory"):
        mnv2ref.load_tflite(tmp_path)


def test_truncated_file(tmp_path):
    b = open(INT8, "rb").read()
    p = tmp_path / "cut.tflite"
    p.write_bytes(b[: len(b) // 3])
    with pytest.raises(ValueError, match=r"cut\.tflite"):
        mnv2ref.load_tflite(p)


def test_unsupported_op_named_with_index(tmp_path):
    p = _patched(tmp_path, lambda buf, m: _set_opcode(buf, m, 4, 18))      # DEPTHWISE_CONV_2D -> MUL
    with pytest.raises(ValueError, match=r"patched\.tflite: op 1 \(MUL\): not supported"):
        mnv2ref.load_tflite(p)


def test_not_mobilenet_v2(tmp_path):
    p = _patched(tmp_path, lambda buf, m: _set_opcode(buf, m, 4, 3))       # no depthwise convolutions left
    with pytest.raises(ValueError, match=r"patched\.tflite: not a MobileNetV2 graph: 0 DEPTHWISE_CONV_2D"):
        mnv2ref.load_tflite(p)


def test_unsupported_quantization_names_op_and_tensor(tmp_path):
    def int16_activation(buf, m):       # the first op's output tensor int8 -> int16 (16x8 quantization)
        g = m.Subgraphs(0)
        t = g.Tensors(int(g.Operators(0).OutputsAsNumpy()[0]))
        buf[t._tab.Pos + t._tab.Offset(6)] = 7
    p = _patched(tmp_path, int16_activation)
    with pytest.raises(ValueError, match=r"patched\.tflite: op 0 \(CONV_2D\): output tensor '.*' is int16"):
        mnv2ref.load_tflite(p)


def test_bad_kernels_argument():
    with pytest.raises(ValueError, match="kernels must be one of"):
        mnv2ref.load_tflite(INT8, kernels="fast")


@pytest.mark.parametrize("x, what", [
    (np.zeros((1, 96, 96, 3), np.uint8), "uint8"),
    (np.zeros((1, 96, 96, 3), np.float32), "float32"),
    (np.zeros((96, 96, 3), np.int8), r"\(96, 96, 3\)"),
    (np.zeros((1, 97, 96, 3), np.int8), r"\(1, 97, 96, 3\)"),
    (np.zeros((0, 96, 96, 3), np.int8), r"\(0, 96, 96, 3\)"),
])
def test_wrong_input_names_file_tensor_and_shapes(x, what):
    m = _model()
    with pytest.raises(ValueError, match=rf"mnv2_0\.35_96_int8\.tflite: input tensor 'serving_default_input_1:0' "
                                         rf"takes int8 of shape \(N, 96, 96, 3\).*{what}"):
        m.predict(x)


def test_model_metadata():
    m = mnv2ref.load_tflite(CORAL)
    assert m.inputs[0].dtype == np.uint8 and m.inputs[0].shape == (1, 224, 224, 3)
    assert float(m.inputs[0].scale[0]) == 0.0078125 and int(m.inputs[0].zero_point[0]) == 128
    names = [op.name for op in m.ops]
    assert names.count("CONV_2D") == 35 and names.count("DEPTHWISE_CONV_2D") == 17 and names.count("ADD") == 10
    conv = m.ops[0]
    assert conv.options["stride_h"] == 2 and conv.options["padding"] == "SAME" and conv.options["activation"] == "RELU6"
    assert set(conv.quant) >= {"multiplier", "shift", "act_min", "act_max", "input_offset", "filter_offset"}
    assert conv.quant["filter_offset"] == -165 and conv.inputs[0] == m.inputs[0].name
    add = next(op for op in m.ops if op.name == "ADD")
    assert add.quant["left_shift"] == 20
    assert "QuantizedModel('mobilenet_v2_1.0_224_inat_bird_quant.tflite'" in repr(m)


def test_import_mnv2ref_imports_no_tflite_or_numba():
    import subprocess
    import sys
    code = ("import sys, mnv2ref; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tflite', 'flatbuffers', 'numba', 'ai_edge_litert')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)

"""``mnv2ref predict / trace / summary --tflite`` and ``compare`` on integer traces, against the int8 goldens.

The goldens are TFLite's own tensors (fixtures/int8, fixtures/generate_int8.py; BUILTIN_REF): a trace made
by the CLI from fixtures/shapes.png equals every stored tensor, which checks the image -> input rule too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite", reason="the optional extra mnv2ref[tflite] (tflite, flatbuffers) is not installed")

import mnv2ref  # noqa: E402
from mnv2ref.__main__ import main  # noqa: E402
from mnv2ref.cli import tflite as T  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INT8 = ROOT / "fixtures" / "int8"
CORAL = ROOT / "fixtures" / "coral"
CORAL_FILE = CORAL / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
PNG = ROOT / "fixtures" / "shapes.png"
A = {io: INT8 / f"mnv2_0.35_96_{io}.tflite" for io in ("int8", "uint8", "float32")}


def golden(path: Path):
    return np.load(INT8 / f"golden_{path.stem}.npz")


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("io", sorted(A))
def test_trace_of_the_png_equals_every_builtin_ref_tensor(io, tmp_path, capsys):
    out = tmp_path / "t.npz"
    rc, text, _ = cli(capsys, "trace", PNG, "--tflite", A[io], "--out", out)
    assert rc == 0 and f"to {out}" in text
    rc, text, _ = cli(capsys, "compare", out, INT8 / f"golden_{A[io].stem}.npz", "--prefix-b", "ref/image/")
    g = golden(A[io])
    assert rc == 0 and f"all {len(g['order'])} common tensors equal" in text
    assert os.listdir(tmp_path) == ["t.npz"]  # written atomically: no temporary file left


def test_trace_file_layout(tmp_path, capsys):
    out = tmp_path / "t.npz"
    assert cli(capsys, "trace", PNG, "--tflite", A["uint8"], "--out", out, "--compress")[0] == 0
    model = mnv2ref.load_tflite(A["uint8"])
    z = np.load(out)
    meta = json.loads(z["_tensors"][()])
    names = [k for k in z.files if not k.startswith("_")]
    assert names == list(model.trace(z[names[0]]))  # graph order, input first
    for n in names:
        t = model.tensors[n]
        assert meta[n]["index"] == t.index and meta[n]["dtype"] == str(np.dtype(z[n].dtype))
        assert np.array_equal(np.float32(meta[n]["scale"]), t.scale) and meta[n]["zero_point"] == list(t.zero_point)
    info = json.loads(z["_file"][()])
    assert info["sha256"] == json.load(open(INT8 / "manifest.json"))["files"][A["uint8"].name]["sha256"]


def test_trace_npy_input_in_the_input_dtype_is_fed_as_is(tmp_path, capsys):
    """The non-square 0.5 file: its golden input (int8) saved as .npy, traced, equal to the golden."""
    f = INT8 / "mnv2_0.5_97x131_avg_int8.tflite"
    g = golden(f)
    np.save(tmp_path / "x.npy", g["input/noise"])
    assert cli(capsys, "trace", tmp_path / "x.npy", "--tflite", f, "--out", tmp_path / "t.npz")[0] == 0
    rc, text, _ = cli(capsys, "compare", tmp_path / "t.npz", INT8 / f"golden_{f.stem}.npz", "--prefix-b", "ref/noise/",
                      "--json")
    res = json.loads(text)
    assert rc == 0 and res["ok"] and len(res["tensors"]) == len(g["order"]) and res["first_difference"] is None


def test_compare_finds_a_planted_one_step_error(tmp_path, capsys):
    out = tmp_path / "t.npz"
    cli(capsys, "trace", PNG, "--tflite", A["int8"], "--out", out)
    z = dict(np.load(out))
    names = [k for k in z if not k.startswith("_")]
    bad = names[7]
    a = z[bad].copy()
    a[0, 2, 3, 4] = a[0, 2, 3, 4] + 1 if a[0, 2, 3, 4] < 127 else a[0, 2, 3, 4] - 1
    a[0, 5, 1, 0] = 127 if a[0, 5, 1, 0] < 124 else -128
    port = dict(z, **{bad: a})
    np.savez(tmp_path / "port.npz", **port)
    rc, text, _ = cli(capsys, "compare", tmp_path / "port.npz", out, "--json")
    res = json.loads(text)
    row = next(r for r in res["tensors"] if r["name"] == bad)
    assert rc == 1 and res["first_difference"] == bad and not res["ok"]
    assert row["differing"] == 2 and row["first_index"] == [0, 2, 3, 4] and row["by_steps"]["1"] == 1
    assert row["max_diff"] == abs(int(a[0, 5, 1, 0]) - int(z[bad][0, 5, 1, 0])) >= 3
    assert all(r["differing"] == 0 for r in res["tensors"] if r["name"] != bad)
    rc, text, _ = cli(capsys, "compare", tmp_path / "port.npz", out, "--failures-only")
    assert rc == 1 and "first difference" in text and f"first: {bad}" in text and "(0, 2, 3, 4)" in text
    rc, text, _ = cli(capsys, "compare", tmp_path / "port.npz", out, "--atol", str(row["max_diff"]))
    assert rc == 0 and "within the allowed steps" in text  # --atol: allowed difference in steps


def test_compare_shape_mismatch_is_a_failure(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 3), np.int8))
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 2), np.int8))
    rc, text, _ = cli(capsys, "compare", tmp_path / "a.npz", tmp_path / "b.npz")
    assert rc == 1 and "shape (2, 3) vs (3, 2)" in text


def test_predict_coral_photo_with_labels(capsys):
    rc, text, _ = cli(capsys, "predict", CORAL / "bird.bmp", "--tflite", CORAL_FILE, "--labels",
                      CORAL / "inat_bird_labels.txt", "--interpolation", "bilinear", "--top", "3", "--json")
    top = json.loads(text)["top"]
    assert rc == 0 and top[0]["label"].startswith("Poecile atricapillus") and top[0]["raw"] == 190
    assert top[0]["score"] == (190 - 0) * 0.00390625 and [t["rank"] for t in top] == [1, 2, 3]
    rc, text, _ = cli(capsys, "predict", CORAL / "bird.bmp", "--tflite", CORAL_FILE, "--labels",
                      CORAL / "inat_bird_labels.txt", "--interpolation", "bilinear", "--top", "1")
    assert rc == 0 and "1. 0.7422   Poecile atricapillus (Black-capped Chickadee)" in text


@pytest.mark.parametrize("io", sorted(A))
def test_predict_scores_are_the_dequantized_golden_output(io, capsys):
    g = golden(A[io])
    model = mnv2ref.load_tflite(A[io])
    t = model.outputs[0]
    q = g[f"ref/image/{t.index}"][0]
    want = (q.astype(np.float64) - float(t.zero_point[0])) * float(t.scale[0]) if t.scale.size else q
    rc, text, _ = cli(capsys, "predict", PNG, "--tflite", A[io], "--top", "5", "--json")
    top = json.loads(text)["top"]
    assert rc == 0 and [d["score"] for d in top] == sorted(want, reverse=True)[:5]
    assert [d["class_index"] for d in top] == list(np.argsort(-want, kind="stable")[:5])
    assert all(d["wnid"].startswith("n") for d in top)  # 1000 classes: ImageNet's labels


def test_summary_lists_every_op_with_its_multipliers(capsys):
    rc, text, _ = cli(capsys, "summary", "--tflite", A["int8"], "--json")
    s = json.loads(text)
    model = mnv2ref.load_tflite(A["int8"])
    assert rc == 0 and s["n_ops"] == len(s["ops"]) == len(model.ops) == 65
    assert s["op_counts"] == {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1,
                              "FULLY_CONNECTED": 1, "SOFTMAX": 1}
    for op in s["ops"]:
        if op["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, w, y = op["inputs"][0], op["inputs"][1], op["outputs"][0]
            m, sh = np.array(op["quant"]["multiplier"]), np.array(op["quant"]["shift"])
            assert len(m) == len(w["scale"]) == y["shape"][-1]
            real = np.float64(x["scale"][0]) * np.float64(w["scale"]) / np.float64(y["scale"][0])
            np.testing.assert_allclose(m * 2.0 ** (sh - 31), real, rtol=2 ** -30)  # QuantizeMultiplier
    rc, text, _ = cli(capsys, "summary", "--tflite", A["int8"])
    assert rc == 0 and "op 0  CONV_2D" in text and "multiplier [16]" in text and "act_min" in text
    rc, text, _ = cli(capsys, "summary", "--tflite", A["int8"], "--op", "0")
    assert rc == 0 and text.count("\nop ") == 1
    mult = [str(v) for v in model.ops[0].quant["multiplier"]]
    assert "multiplier [" + ", ".join(mult) + "]" in text  # --op K: the arrays in full


def test_pixels_rule():
    coral = mnv2ref.load_tflite(CORAL_FILE).inputs[0]
    ours = mnv2ref.load_tflite(A["uint8"]).inputs[0]
    assert T.raw_convention(coral) and not T.raw_convention(ours)
    px = np.arange(256, dtype=np.float32).repeat(3).reshape(1, 16, 16, 3)
    assert np.array_equal(T.to_input(px, coral), px.astype(np.uint8))  # p/128 - 1: the pixels themselves
    q = T.to_input(px, ours)  # Keras's p/127.5 - 1, quantized with (1/127.5, 127): half steps round away
    assert q.dtype == np.uint8 and q[0, 0, 0, 0] == 0 and q.max() == 254  # 1 / float32(1/127.5) = 127.49999
    assert not np.array_equal(q, px.astype(np.uint8)) and np.abs(q.astype(int) - px).max() <= 1
    assert np.array_equal(T.to_input(px, ours, "raw"), px.astype(np.uint8))
    i8 = mnv2ref.load_tflite(A["int8"]).inputs[0]
    assert np.array_equal(T.to_input(px, i8, "raw"), (px - 128).astype(np.int8))


def test_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "labels.txt"
    bad.write_text("a\nb\n")
    rc, _, err = cli(capsys, "predict", PNG, "--tflite", A["int8"], "--labels", bad)
    assert rc == 2 and "labels.txt' has 2 labels; the model has 1000 classes" in err
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all" * 10)
    rc, _, err = cli(capsys, "summary", "--tflite", junk)
    assert rc == 2 and "junk.tflite" in err
    rc, _, err = cli(capsys, "trace", PNG, "--tflite", A["int8"], "--out", tmp_path / "t.npz", "--layers", "nope*")
    assert rc == 2 and "no tensor matches" in err
    rc, _, err = cli(capsys, "trace", PNG, "--tflite", A["int8"], "--out", tmp_path / "t.npz", "--float64")
    assert rc == 2 and "--float64 is for Keras weights" in err


def test_help_mentions_tflite():
    for cmd in ("predict", "trace", "summary"):
        p = subprocess.run([sys.executable, "-m", "mnv2ref", cmd, "--help"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0 and "--tflite FILE" in p.stdout

"""The ``mnv2ref`` command, run as a subprocess (``python -m mnv2ref ...``) on the committed fixtures.

Small model (alpha 0.35 at 96x96, TF-made fixture weights) so the module stays well under a minute.
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnv2ref
from mnv2ref import arch

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
W35 = str(FIX / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5")
G35 = str(FIX / "golden_0.35_96.npz")
W50 = str(FIX / "mobilenet_v2_0.5_no_top_fullmodel.h5")
G50 = str(FIX / "golden_0.5_97x131_avg.npz")
COMMANDS = ("predict", "summary", "table", "trace", "compare", "export", "show", "verify")

needs_fixtures = pytest.mark.skipif(not Path(W35).exists() or not Path(G35).exists(),
                                    reason="golden fixtures not committed yet")


def run(*args, cwd=None, env=None, check=None):
    """Run ``python -m mnv2ref args`` -> CompletedProcess (text); ``check`` = expected exit status."""
    e = dict(os.environ, **(env or {}))
    e.pop("MNV2REF_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "mnv2ref", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, env=e, timeout=120)
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}, expected {check}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def scene(path, w=120, h=90, hue=0):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), (90 + hue, 150, 230 - hue))
    d = ImageDraw.Draw(img)
    d.rectangle([w // 5, h // 2, w // 2, h - 5], fill=(180, 60, 50))
    d.ellipse([w * 2 // 3, 5, w * 2 // 3 + 20, 25], fill=(250, 220, 60))
    img.save(path)
    return str(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder: two good images, one in a subfolder, a broken .jpg, and a text file (not an image)."""
    d = tmp_path_factory.mktemp("photos")
    scene(d / "a.png")
    (d / "sub").mkdir()
    scene(d / "sub" / "b.jpg", hue=60)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (d / "notes.txt").write_text("not an image")
    return d


def expected_top(path, k=5):
    """What the Python API says for one image (the recipe the command must follow)."""
    m = mnv2ref.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=W35, backend="numpy")
    x = mnv2ref.preprocess_input(mnv2ref.img_to_array(mnv2ref.load_img(path, target_size=(96, 96)))[None])
    return mnv2ref.decode_predictions(m.predict(x), top=k)[0]


# -- every command has --help -------------------------------------------------------------------------------------

def test_help_lists_every_command_and_each_has_help():
    top = run("--help", check=0).stdout
    for c in COMMANDS:
        assert c in top
        h = run(c, "--help", check=0).stdout
        assert h.startswith(f"usage: mnv2ref {c}")
    assert "--json" in run("predict", "--help").stdout and "--resume" in run("predict", "--help").stdout


def test_usage_errors_exit_2_without_traceback(tmp_path):
    p = run("predict", scene(tmp_path / "x.png"), "--weights", tmp_path / "missing.h5", check=2)
    assert "weights file not found" in p.stderr and "Traceback" not in p.stderr
    env = {"KERAS_HOME": str(tmp_path), "MNV2REF_HOME": str(tmp_path), "MNV2REF_OFFLINE": "1"}
    p = run("predict", tmp_path / "x.png", "--weights", "imagenet", env=env, check=2)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5" in p.stderr and "Traceback" not in p.stderr


# -- predict --------------------------------------------------------------------------------------------------------

@needs_fixtures
def test_predict_text_matches_the_python_api(photos):
    p = run("predict", photos / "a.png", "--weights", W35, "--top", "3", check=0)
    lines = p.stdout.strip().splitlines()
    assert lines[0] == str(photos / "a.png")
    for line, (wnid, label, score) in zip(lines[1:], expected_top(str(photos / "a.png"), 3)):
        assert wnid in line and label in line and f"{score:.4f}" in line


@needs_fixtures
def test_predict_folder_json_lines_skips_and_reports_broken(photos, tmp_path):
    out = tmp_path / "preds.jsonl"
    p = run("predict", photos, "--weights", W35, "--batch-size", "2", "--json", out, check=0)
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    files = [Path(r["file"]).name for r in recs]
    assert sorted(files) == ["a.png", "b.jpg", "broken.jpg"]  # notes.txt: not an image extension, not tried
    bad = next(r for r in recs if r["file"].endswith("broken.jpg"))
    assert "error" in bad and "top" not in bad
    assert "broken.jpg" in p.stderr and "1 unreadable" in p.stderr and "2 classified" in p.stderr
    good = next(r for r in recs if r["file"].endswith("a.png"))
    want = expected_top(str(photos / "a.png"))
    assert [t["wnid"] for t in good["top"]] == [w for w, _, _ in want]
    assert [t["rank"] for t in good["top"]] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([t["score"] for t in good["top"]], [s for _, _, s in want], rtol=1e-5)
    # JSON lines on stdout too
    p = run("predict", photos / "a.png", "--weights", W35, "--json", check=0)
    assert json.loads(p.stdout)["top"][0]["wnid"] == want[0][0]


@needs_fixtures
def test_predict_resume_skips_done_files_and_repairs_a_cut_line(photos, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    scene(d / "1.png")
    scene(d / "2.png", hue=30)
    out = tmp_path / "p.jsonl"
    run("predict", d, "--weights", W35, "--json", out, check=0)
    assert len(out.read_text().splitlines()) == 2
    scene(d / "3.png", hue=90)
    with open(out, "a") as f:
        f.write('{"file": "half-writt')  # an interrupted earlier run
    p = run("predict", d, "--weights", W35, "--json", out, "--resume", check=0)
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert [Path(r["file"]).name for r in recs] == ["1.png", "2.png", "3.png"]
    assert "1 classified" in p.stderr and "2 already in" in p.stderr
    p = run("predict", d, "--weights", W35, "--json", out, "--resume", check=0)
    assert "0 classified" in p.stderr and len(out.read_text().splitlines()) == 3
    run("predict", d, "--weights", W35, "--resume", check=2)  # nothing to resume into


@needs_fixtures
def test_predict_csv_and_resume(photos, tmp_path):
    out = tmp_path / "p.csv"
    run("predict", photos / "a.png", "--weights", W35, "--top", "2", "--csv", out, check=0)
    run("predict", photos / "a.png", photos / "sub" / "b.jpg", photos / "broken.jpg", "--weights", W35, "--top", "2",
        "--csv", out, "--resume", check=0)
    rows = list(csv.DictReader(out.open()))
    assert [(Path(r["file"]).name, r["rank"]) for r in rows] == [
        ("a.png", "1"), ("a.png", "2"), ("b.jpg", "1"), ("b.jpg", "2"), ("broken.jpg", "")]
    assert rows[-1]["error"] and rows[0]["wnid"].startswith("n") and float(rows[0]["score"]) > 0
    assert out.read_text().count("file,rank") == 1  # one header
    run("predict", photos / "a.png", "--weights", W35, "--csv", tmp_path / "p.png", check=2)  # guard


@needs_fixtures
def test_predict_progress_bar(photos):
    p = run("predict", photos / "a.png", photos / "sub" / "b.jpg", "--weights", W35, "--batch-size", "1",
            "--progress", check=0)
    assert "2/2 images" in p.stderr and "[" + "#" * 30 + "]" in p.stderr
    p = run("predict", photos / "a.png", "--weights", W35, check=0)  # stderr is not a terminal: no bar
    assert "images" not in p.stderr


# -- summary and table ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha,size", [(0.35, 96), (1.0, 224)])
def test_summary_json_totals_equal_count_params_and_macs(alpha, size):
    d = json.loads(run("summary", "--alpha", alpha, "--size", size, "--json", check=0).stdout)
    m = mnv2ref.MobileNetV2(weights=None, alpha=alpha, input_shape=(size, size, 3), backend="numpy")
    assert d["totals"]["params"] == m.count_params() == sum(r["params"] for r in d["layers"])
    assert d["totals"]["macs"] == m.count_macs() == sum(r["macs"] for r in d["layers"])
    names = [r["name"] for r in d["layers"]]
    assert names[0] == "input_1" and names[1:] == [l.name for l in m.layers()]
    conv1 = d["layers"][1]
    assert conv1["output_shape"] == [size // 2, size // 2, arch.stem_channels(alpha)]
    assert conv1["activation_bytes"] == 4 * (size // 2) ** 2 * arch.stem_channels(alpha)


def test_summary_text_and_no_top_shapes():
    out = run("summary", check=0).stdout
    assert "Total params: 3,538,984 (trainable 3,504,872, non-trainable 34,112)" in out
    assert "Multiply-adds: 300,774,272" in out and "block_16_project_BN (BatchNormalization)" in out
    d = json.loads(run("summary", "--alpha", 0.5, "--input-shape", 97, 131, "--no-top", "--json", check=0).stdout)
    assert d["layers"][-1]["name"] == "out_relu" and d["layers"][-1]["output_shape"] == [4, 5, 1280]
    d = json.loads(run("summary", "--alpha", 0.5, "--input-shape", 97, 131, "--no-top", "--dynamic", "--json",
                       check=0).stdout)
    assert d["layers"][-1]["output_shape"] == [3, 4, 1280]  # Keras's dynamic-shape padding


def test_summary_table2():
    out = run("summary", "--table2", check=0).stdout
    rows = [l.split() for l in out.splitlines() if " bottleneck " in l]
    assert [(int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows] == list(arch.TABLE2)
    assert rows[0][0] == "112x112x32" and rows[-1][0] == "7x7x160"
    d = json.loads(run("summary", "--table2", "--alpha", 0.35, "--size", 96, "--json", check=0).stdout)
    cs = [r["c"] for r in d["table2"] if r["operator"] == "bottleneck"]
    assert cs == [8, 8, 16, 24, 32, 56, 112]
    assert sum(r["params"] for r in d["table2"]) == arch.count_params(0.35)
    assert sum(r["macs"] for r in d["table2"]) == arch.count_macs(0.35, (96, 96))


def test_table_published_side_by_side():
    p = run("table", check=0)
    assert "22 of 22 computed rows match" in p.stdout
    line = next(l for l in p.stdout.splitlines() if l.startswith("mobilenet_v2_1.0_224 "))
    assert line.split()[1:8] == ["300", "300", "3.47", "3.47", "yes", "71.8", "91.0"]
    rows = json.loads(run("table", "--json", check=0).stdout)
    assert len(rows) == 22 and all(r["match"] for r in rows)


def test_published_json_is_the_seed_table():
    from mnv2ref.cli.summary import published

    seed = {}
    for line in (ROOT / "tests" / "data" / "seed_table.txt").read_text().splitlines():
        m = re.match(r"\|\s*\[(mobilenet_v2_[\d.]+_\d+)\]\s*\|(.*)", line)
        if m:
            seed[m.group(1)] = [float(v) for v in m.group(2).split("|")]
    pub = {p["model"]: [p["macs_millions"], p["params_millions"], p["top1"], p["top5"]] for p in published()}
    assert pub == seed and len(pub) == 22


# -- trace and compare ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """Our float32 trace of the golden fixture's own input (its 'input' array)."""
    out = tmp_path_factory.mktemp("trace") / "ours.npz"
    p = run("trace", G35, "--weights", W35, "--out", out, check=0)
    return out, p.stdout


@needs_fixtures
def test_trace_keys_order_and_values(traced):
    out, stdout = traced
    with np.load(G35) as g, np.load(out) as z:
        order = [str(n) for n in g["layer_order"]]
        assert z.files[:2] == ["input", "preprocessed"] and len(z.files) == 157
        assert [n for n in z.files if n in order] == order  # the fixture's layers, in the same order
        np.testing.assert_array_equal(z["preprocessed"], g["preprocessed"])
        for n in ("Conv1", "block_2_add", "predictions"):
            assert np.abs(z[n] - g["layer/" + n]).max() <= 1e-5 * np.abs(g["layer/" + n]).max()
    assert "wrote 157 arrays" in stdout and "block_3_depthwise_relu" in stdout


@needs_fixtures
def test_trace_layer_filter_float64_json(tmp_path):
    out = tmp_path / "t.npz"
    p = run("trace", G35, "--weights", W35, "--out", out, "--layers", "block_2_*", "--layers", "predictions",
            "--float64", "--json", check=0)
    d = json.loads(p.stdout)
    with np.load(out) as z:
        assert z.files[:2] == ["input", "preprocessed"]
        names = [l.name for l in arch.layers(0.35, (96, 96))]
        assert z.files[2:] == [n for n in names if n.startswith("block_2_")] + ["predictions"]
        assert z["block_2_add"].dtype == np.float64
    assert d["dtype"] == "float64" and [a["name"] for a in d["arrays"]] == z.files
    run("trace", G35, "--weights", W35, "--out", out, "--layers", "nothing_*", check=2)


@needs_fixtures
def test_trace_of_an_image_file(photos, tmp_path):
    out = tmp_path / "img.npz"
    run("trace", photos / "a.png", "--weights", W35, "--out", out, check=0)
    want = expected_top(str(photos / "a.png"), 1)[0]
    with np.load(out) as z:
        assert z["input"].shape == (1, 96, 96, 3) and z["input"].max() <= 255
        assert np.isclose(z["predictions"][0].max(), want[2], rtol=1e-5)


@needs_fixtures
def test_compare_against_tensorflow_passes(traced):
    out, _ = traced
    with np.load(G35) as g:
        n = 2 + len(g["layer_order"])
    p = run("compare", out, G35, check=0)
    assert f"all {n} common layers within rel <= 1e-05" in p.stdout
    d = json.loads(run("compare", out, G35, "--json", check=0).stdout)
    assert d["ok"] and d["first_failure"] is None and len(d["layers"]) == n
    assert d["only_in_b"] == ["probs", "logits"] and all(r["rel"] <= 1e-5 for r in d["layers"])


@needs_fixtures
def test_compare_names_the_first_bad_layer_and_fails(traced, tmp_path):
    out, _ = traced
    with np.load(out) as z:
        arrays = dict(z)
    arrays["block_3_depthwise"] = arrays["block_3_depthwise"] * 1.001  # a 0.1% scale bug, e.g. a wrong epsilon
    arrays["block_5_add"] = arrays["block_5_add"] + 1e-3
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    p = run("compare", bad, G35, check=1)
    assert "first: block_3_depthwise" in p.stdout and "<-- first over tolerance" in p.stdout
    d = json.loads(run("compare", bad, G35, "--json", check=1).stdout)
    assert d["first_failure"] == "block_3_depthwise" and not d["ok"]
    assert [r["name"] for r in d["layers"] if not r["ok"]] == ["block_3_depthwise", "block_5_add"]
    run("compare", bad, G35, "--rtol", "1e-2", check=0)  # looser tolerance: passes
    run("compare", bad, G35, "--atol", "1e-2", check=0)
    arrays["block_4_expand"] = arrays["block_4_expand"][:, :-1]
    np.savez(bad, **arrays)
    p = run("compare", bad, G35, "--failures-only", check=1)
    assert "FAIL shape" in p.stdout


@needs_fixtures
def test_compare_prefixes_and_nothing_in_common(tmp_path):
    out = tmp_path / "b.npz"
    run("trace", G50, "--weights", W50, "--pooling", "avg", "--out", out, check=0)
    run("compare", out, G50, "--prefix-b", "static/", check=0)
    p = run("compare", out, G50, "--prefix-b", "dynamic/", check=1)  # the other padding: shapes differ
    assert "first: block_1_pad" in p.stdout
    np.savez(tmp_path / "other.npz", foo=np.zeros(3))
    p = run("compare", tmp_path / "other.npz", out, check=2)
    assert "no common keys" in p.stderr


# -- export -----------------------------------------------------------------------------------------------------------

def rebuild(arrays: dict, manifest: dict, x: np.ndarray) -> dict:
    """The forward pass from an exported file alone: plain NumPy, float64, following manifest['ops']."""
    oihw = manifest["layout"] == "oihw"
    t = {"input": np.asarray(x, np.float64)}
    for op in manifest["ops"]:
        kind = op["op"]
        if kind in ("conv2d", "depthwise_conv2d"):
            (pt, pb), (pl, pr) = op["padding"]
            h = np.pad(t[op["input"]], ((0, 0), (pt, pb), (pl, pr), (0, 0)))
            k = arrays[op["kernel"]].astype(np.float64)
            if oihw:  # back to (kh, kw, in, out) / (kh, kw, C, 1)
                k = k.transpose(2, 3, 1, 0) if kind == "conv2d" else k.transpose(2, 3, 0, 1)
            (kh, kw), s = op["kernel_size"], op["stride"]
            ho, wo = (h.shape[1] - kh) // s + 1, (h.shape[2] - kw) // s + 1
            y = 0
            for i in range(kh):
                for j in range(kw):
                    win = h[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
                    y = y + (win @ k[i, j] if kind == "conv2d" else win * k[i, j, :, 0])
            if op["bias"]:
                y = y + arrays[op["bias"]]
            if op["activation"] == "relu6":
                y = np.clip(y, 0, 6)
        elif kind == "batch_norm":
            g, b, m, v = (arrays[op[n]].astype(np.float64) for n in ("gamma", "beta", "moving_mean", "moving_variance"))
            y = (t[op["input"]] - m) / np.sqrt(v + op["epsilon"]) * g + b
        elif kind == "relu6":
            y = np.clip(t[op["input"]], 0, 6)
        elif kind == "zero_pad":
            (pt, pb), (pl, pr) = op["padding"]
            y = np.pad(t[op["input"]], ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        elif kind == "add":
            y = t[op["inputs"][0]] + t[op["inputs"][1]]
        elif kind == "global_avg_pool":
            y = t[op["input"]].mean(axis=(1, 2))
        elif kind == "dense":
            k = arrays[op["kernel"]].astype(np.float64)
            y = t[op["input"]] @ (k.T if oihw else k) + arrays[op["bias"]]
            if op["activation"] == "softmax":
                e = np.exp(y - y.max(-1, keepdims=True))
                y = e / e.sum(-1, keepdims=True)
        else:
            raise AssertionError(f"unknown op {kind}")
        assert list(y.shape[1:]) == op["output_shape"], op["name"]
        t[op["output"]] = y
    return t


@needs_fixtures
@pytest.mark.parametrize("layout,fold", [("hwio", True), ("oihw", True), ("oihw", False)])
def test_export_rebuilds_the_model_from_the_file_alone(tmp_path, layout, fold):
    out = tmp_path / "w.npz"
    p = run("export", "--weights", W35, "--out", out, "--layout", layout, *([] if fold else ["--no-fold"]), check=0)
    assert "wrote" in p.stdout and "Conv1/kernel" in p.stdout
    with np.load(out, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__manifest__"}
        manifest = json.loads(str(z["__manifest__"]))
    assert json.loads((tmp_path / "w.json").read_text()) == manifest
    assert manifest["layout"] == layout and manifest["folded"] == fold
    assert manifest["arrays"] == {k: list(a.shape) for k, a in arrays.items()}
    dw = arrays["block_1_depthwise/kernel"]
    assert dw.shape == ((48, 1, 3, 3) if layout == "oihw" else (3, 3, 48, 1))
    assert arrays["Conv1/kernel"].shape == ((16, 3, 3, 3) if layout == "oihw" else (3, 3, 3, 16))
    assert ("bn_Conv1/gamma" in arrays) == (not fold) and ("Conv1/bias" in arrays) == fold
    conv1 = manifest["ops"][0]
    assert conv1["stride"] == 2 and conv1["padding"] == [[0, 1], [0, 1]]  # TF 'SAME': the extra row at the end

    with np.load(G35) as g:
        x, tf = g["preprocessed"], {n: g["layer/" + str(n)] for n in g["layer_order"]}
    got = rebuild(arrays, manifest, x)
    model = mnv2ref.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=W35, dtype="float64",
                                backend="numpy")
    np.testing.assert_allclose(got["predictions"], model.predict(x), rtol=1e-5, atol=1e-9)
    checked = [op["output"] for op in manifest["ops"] if op["output"] in tf]
    assert len(checked) >= 50
    for name in checked:  # every tensor the file names is the Keras layer of that name
        ref = tf[name]
        assert np.abs(got[name] - ref).max() <= 1e-5 * np.abs(ref).max(), name


@needs_fixtures
def test_export_no_top_json_manifest(tmp_path):
    p = run("export", "--weights", W50, "--input-shape", 97, 131, "--out", tmp_path / "n.npz", "--json", check=0)
    m = json.loads(p.stdout)
    assert m["include_top"] is False and m["alpha"] == 0.5 and m["input_shape"] == [97, 131, 3]
    pads = {op["name"]: op["padding"] for op in m["ops"] if op["name"].endswith("_depthwise") and op["stride"] == 2}
    assert pads["block_1_depthwise"] == [[1, 1], [0, 1]]  # odd height 49 -> (1, 1); even width 66 -> (0, 1)
    assert m["pooling"] == "avg" and m["ops"][-1]["output"] == "global_average_pooling2d"  # from the file's config


# -- show -------------------------------------------------------------------------------------------------------------

@needs_fixtures
def test_show_layer_and_block_pngs(photos, tmp_path):
    from PIL import Image

    out = tmp_path / "layer.png"
    p = run("show", photos / "a.png", "--weights", W35, "--layer", "block_2_expand_relu", "--out", out, check=0)
    assert "block_2_expand_relu 24x24x48" in p.stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] >= 500 and im.size[1] >= 400
    out = tmp_path / "block.png"
    p = run("show", photos / "a.png", "--weights", W35, "--block", 2, "--out", out, check=0)
    assert "block_1_project_BN 24x24x8 -> block_2_expand_relu 24x24x48" in p.stdout and "block_2_add" in p.stdout
    with Image.open(out) as im:
        assert im.size[0] > 2.5 * im.size[1]  # five panels side by side
    p = run("show", photos / "a.png", "--weights", W35, "--layer", "block_2_expand_rel", "--out", out, check=2)
    assert "did you mean block_2_expand_relu" in p.stderr
    run("show", photos / "a.png", "--weights", W35, "--block", 17, "--out", out, check=2)


# -- verify is still there --------------------------------------------------------------------------------------------

@needs_fixtures
def test_verify_json():
    d = json.loads(run("verify", "--json", "--backend", "numpy", check=0).stdout)
    assert d["ok"] and len(d["variants"]) >= 2


# -- the walk-through -------------------------------------------------------------------------------------------------

def test_inverted_residual_example_reproduces_the_doc():
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "inverted_residual.py")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    doc = (ROOT / "docs" / "inverted_residual.md").read_text()
    assert "agree with model.trace to 1e-5 of each tensor's max: yes" in p.stdout
    numbers = set(re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?%?", p.stdout))
    missing = sorted(n for n in numbers if n not in doc)
    assert not missing, f"numbers printed by the example but absent from the doc: {missing}"
    for ref in re.findall(r"mnv2ref/\w+\.py:\d+", p.stdout):  # the code lines the doc points at
        assert ref in doc, ref
    for img in re.findall(r"\]\((img/[\w.]+\.png)\)", doc):
        assert (ROOT / "docs" / img).exists(), img


# -- first run: the compile notice ------------------------------------------------------------------------------------

def test_compile_notice_only_when_compiling_takes_long(monkeypatch, capsys):
    import io
    import time

    from mnv2ref import kernels
    from mnv2ref.cli import common

    calls = []
    monkeypatch.setattr(kernels, "warmup", lambda dtypes: (calls.append(dtypes), time.sleep(0.3)))
    out = io.StringIO()
    common.compile_kernels("float32", notice_after=0.01, stream=out)
    assert calls == [("float32",)] and "compiling the Numba kernels" in out.getvalue()
    monkeypatch.setattr(kernels, "warmup", lambda dtypes: None)  # cached: silent
    out = io.StringIO()
    common.compile_kernels("float64", notice_after=5, stream=out)
    assert out.getvalue() == ""

    def broken(dtypes):
        raise ValueError("boom")
    monkeypatch.setattr(kernels, "warmup", broken)  # a failure reaches the caller, not a thread traceback
    with pytest.raises(ValueError, match="boom"):
        common.compile_kernels("float32", notice_after=5, stream=io.StringIO())

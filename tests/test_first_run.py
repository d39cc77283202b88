"""First use on a fresh machine (``mnv2ref/cli/compile.py``): ``mnv2ref compile``, the "compiled for this machine"
marker, the compile lock, and ``predict`` answering a small job with NumPy while the kernels compile in a detached
background process. The end-to-end test runs in subprocesses with an empty ``NUMBA_CACHE_DIR``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mnv2ref.cli import compile as cc
from mnv2ref.compare import TOLERANCE, layer_error

jit_disabled = cc.jit_disabled

ROOT = Path(__file__).resolve().parent.parent
W35 = str(ROOT / "fixtures" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5")


def mnv2ref_cmd(*args, env=None, timeout=300):
    e = dict(os.environ, **(env or {}))
    e.pop("MNV2REF_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mnv2ref", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout)


def test_compile_help():
    p = mnv2ref_cmd("compile", "--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: mnv2ref compile")
    for opt in ("--alpha", "--size", "--all", "--dtype", "NUMBA_CACHE_DIR"):
        assert opt in p.stdout
    assert "compile" in mnv2ref_cmd("--help").stdout
    p = mnv2ref_cmd("compile", "--all", "--alpha", "0.35")
    assert p.returncode == 2 and "--all" in p.stderr and "Traceback" not in p.stderr


def test_marker_is_keyed_by_machine_and_sources(tmp_path, monkeypatch):
    assert not cc.is_compiled("float32", folder=tmp_path)
    path = cc.write_marker(["float32"], None, None, 1.5, folder=tmp_path)
    assert path.parent == tmp_path and path.exists()
    assert cc.is_compiled("float32", folder=tmp_path) and cc.is_compiled("float32", 0.35, 96, folder=tmp_path)
    assert not cc.is_compiled("float64", folder=tmp_path)
    key = cc.machine_key()
    assert {"numba", "python", "cpu_name", "cpu_features", "sources_sha256"} <= set(key)
    for field, value in (("cpu_name", "generic"), ("cpu_features", "+sse2"), ("sources_sha256", "0" * 64),
                         ("numba", "0.1")):  # another CPU, other kernel sources, another numba: not compiled
        monkeypatch.setattr(cc, "machine_key", lambda f=field, v=value: dict(key, **{f: v}))
        assert not cc.is_compiled("float32", folder=tmp_path), field
    monkeypatch.setattr(cc, "machine_key", lambda: key)
    cc.write_marker(["float64"], 0.35, 96, 2.0, folder=tmp_path)  # per-model entries count for that model only
    assert cc.is_compiled("float64", 0.35, 96, folder=tmp_path) and not cc.is_compiled("float64", 1.0, 224,
                                                                                          folder=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_lock_excludes_a_second_process(tmp_path):
    probe = textwrap.dedent(f"""
        from pathlib import Path
        from mnv2ref.cli import compile as cc
        with cc.compile_lock(Path({str(tmp_path)!r}), blocking=False) as got:
            print(got, cc.lock_holder(Path({str(tmp_path)!r})) if not got else "")
    """)
    with cc.compile_lock(tmp_path) as got:
        assert got
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        assert out.stdout.split() == ["False", str(os.getpid())], out.stderr
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True"], out.stderr  # released: the next one gets it
    assert cc.lock_holder(tmp_path) is None


RUN_PREDICT = textwrap.dedent("""
    import json, sys
    import mnv2ref.model as model
    from mnv2ref.__main__ import main
    built, cls = [], model.MobileNetV2
    def spy(*a, **k):
        m = cls(*a, **k)
        built.append(m.backend)
        return m
    model.MobileNetV2 = spy
    status = main(sys.argv[1:])
    print("BACKENDS", json.dumps(built))
    sys.exit(status)
""")


def predict(image, env):
    e = dict(os.environ, **env)
    e.pop("MNV2REF_DEBUG", None)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", RUN_PREDICT, "predict", image, "--weights", W35, "--json"],
                       capture_output=True, text=True, env=e, timeout=600)
    seconds = time.perf_counter() - t
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    return json.loads(lines[0]), json.loads(lines[-1].split(" ", 1)[1]), p.stderr, seconds


@pytest.mark.slow
@pytest.mark.skipif(jit_disabled(), reason="compiles kernels (NUMBA_DISABLE_JIT=1 has nothing to compile)")
def test_first_run_answers_with_numpy_while_compiling_in_the_background(tmp_path):
    from PIL import Image

    image = str(tmp_path / "one.png")
    Image.new("RGB", (120, 90), (90, 150, 230)).save(image)
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), cc.ENV_BACKGROUND: "1"}

    first, backends, err, seconds = predict(image, env)
    assert backends == ["numpy"]
    assert "not compiled for this machine yet" in err and "NumPy backend" in err and "background" in err
    print(f"first answer on an empty cache: {seconds:.1f} s")  # informative; timing is the benchmark's job

    # `mnv2ref compile` waits on the lock for the background process, then finds its marker.
    p = mnv2ref_cmd("compile", env=env, timeout=1200)
    assert p.returncode == 0, p.stderr
    assert "already compiled for this machine" in p.stdout, p.stdout
    folder = Path(p.stdout.split("cache: ", 1)[1].split(" (", 1)[0])
    assert folder.is_relative_to(tmp_path / "cache")
    markers = list(folder.glob("mnv2ref-compiled-*.json"))
    assert len(markers) == 1 and json.loads(markers[0].read_text())["compiled"][0]["dtype"] == "float32"
    log = (folder / cc.LOG).read_text()
    assert "Traceback" not in log and "mnv2ref compile: " in log and "marker: " in log, log

    second, backends, err, _ = predict(image, env)
    assert backends == ["numba"] and "NumPy" not in err and "compiling" not in err, err
    assert set(first) == set(second) and first["file"] == second["file"]  # the same output format
    assert [t["class_index"] for t in first["top"]] == [t["class_index"] for t in second["top"]]
    e = layer_error("top-5 scores", [t["score"] for t in second["top"]], [t["score"] for t in first["top"]])
    assert e.rel <= 2 * TOLERANCE["float32"], e  # numba vs numpy: each within TOLERANCE of TensorFlow


def test_large_unknown_or_disabled_jobs_do_not_fall_back(monkeypatch, tmp_path):
    monkeypatch.setattr(cc, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(cc, "machine_key", lambda: {"k": 1})
    started = []
    monkeypatch.setattr(cc.subprocess, "Popen", lambda *a, **k: started.append(a) or type("P", (), {"pid": 1})())
    cfg = {"alpha": 0.35, "input_shape": (96, 96, 3)}
    monkeypatch.setenv(cc.ENV_BACKGROUND, "1")
    assert cc.first_run_backend(cfg, "float32", cc.SMALL_JOB + 1) is None  # large: waits for numba
    assert cc.first_run_backend(cfg, "float32", None) is None  # size unknown: waits
    monkeypatch.setenv(cc.ENV_BACKGROUND, "0")
    assert cc.first_run_backend(cfg, "float32", 1) is None  # turned off
    assert started == []
    if not jit_disabled():
        import io

        monkeypatch.setenv(cc.ENV_BACKGROUND, "1")
        err = io.StringIO()
        assert cc.first_run_backend(cfg, "float32", 1, stream=err) == "numpy"
        cmd = started[0][0]
        assert len(started) == 1 and cmd[1:5] == ["-m", "mnv2ref", "compile", "--background"]
        assert cmd[cmd.index("--dtype") + 1] == "float32"
        assert "answering 1 image with the NumPy backend" in err.getvalue()
        cc.write_marker(["float32"], None, None, 1.0, folder=tmp_path)
        assert cc.first_run_backend(cfg, "float32", 1) is None  # compiled: numba

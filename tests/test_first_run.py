"""First use on a fresh machine (``mnv2ref/cli/compile.py``): ``mnv2ref compile``, the "compiled for this machine"
marker and the compile lock."""
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
from mnv2ref.kernels._config import jit_disabled

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

"""The model benchmark's pure parts (benchmarks/bench_stats.py): run order, statistics, ratios, targets,
compile-time grouping, tables and the atomic JSON write. No runtime is started; milliseconds."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_stats", Path(__file__).resolve().parent.parent / "benchmarks" / "bench_stats.py")
bs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bs)


def test_rotation_puts_each_runtime_first_once_per_cycle():
    rts = ["a", "b", "c"]
    orders = [bs.rotation(rts, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert [o[0] for o in orders] == rts and all(sorted(o) == rts for o in orders)
    assert bs.rotation(rts, 4) == ["b", "c", "a"] and bs.rotation([], 2) == []


def rec(r, rt, ms, cfg="1.0_224", batch=1, n=10):
    return {"round": r, "runtime": rt, "config": cfg, "batch": batch, "ms_per_image": ms, "n": n}


SERIES = [rec(0, "mnv2ref numba", 6.0), rec(1, "mnv2ref numba", 9.0), rec(2, "mnv2ref numba", 7.0),
          rec(0, "tflite xnnpack", 5.0), rec(1, "tflite xnnpack", 4.0), rec(2, "tflite xnnpack", 6.0),
          rec(0, "onnxruntime", 4.0), rec(1, "onnxruntime", 5.5), rec(2, "onnxruntime", 5.0),
          rec(0, "mnv2ref numba", 0.5, "0.35_96", 32), rec(0, "onnxruntime", 0.45, "0.35_96", 32)]


def test_summary_is_the_median_of_the_round_medians_with_their_spread():
    s = bs.summarize(SERIES)
    ours = s["1.0_224"]["1"]["mnv2ref numba"]
    assert ours["rounds"] == [6.0, 9.0, 7.0] and ours["median"] == 7.0
    assert (ours["min"], ours["max"], ours["n"]) == (6.0, 9.0, 30)
    assert s["1.0_224"]["1"]["onnxruntime"]["median"] == 5.0


def test_ratio_against_the_faster_peer_and_its_range_over_rounds():
    s = bs.summarize(SERIES)
    r = bs.ratio(s["1.0_224"]["1"], SERIES, "1.0_224", 1)
    # medians: tflite 5.0, ort 5.0 -> faster one 5.0 (tflite listed first on a tie); 7.0 / 5.0
    assert r["value"] == pytest.approx(1.4)
    # per round: 6/4, 9/4, 7/5
    assert r["per_round"] == pytest.approx([1.5, 2.25, 1.4])
    assert (r["min"], r["max"]) == (pytest.approx(1.4), pytest.approx(2.25))
    assert bs.ratio({"mnv2ref numba": s["1.0_224"]["1"]["mnv2ref numba"]}) is None  # no peer: no ratio


def test_targets_met_or_not():
    rows = {(r["config"], r["batch"]): r for r in bs.targets(bs.summarize(SERIES), SERIES)}
    assert set(rows) == {("1.0_224", 1), ("0.35_96", 32)}  # only what was measured
    big, small = rows[("1.0_224", 1)], rows[("0.35_96", 32)]
    assert big["target"] == 1.3 and big["met"] is False and big["met_every_round"] is False
    assert small["ratio"] == pytest.approx(0.5 / 0.45) and small["met"] is True  # 1.11 <= 1.2
    assert small["against"] == "onnxruntime"


def test_compile_times_split_nested_compiles_out_of_self_time():
    ev = [(0.0, "start", "driver"), (1.0, "start", "tile"), (3.0, "end", "tile"), (4.0, "end", "driver"),
          (5.0, "start", "tile"), (6.0, "end", "tile")]
    rows = {d["kernel"]: d for d in bs.compile_times(ev)}
    assert rows["driver"]["inclusive_s"] == 4.0 and rows["driver"]["self_s"] == 2.0
    assert rows["tile"]["compiles"] == 2 and rows["tile"]["self_s"] == 3.0
    assert [d["kernel"] for d in bs.compile_times(ev)] == ["tile", "driver"]  # largest self time first


def test_tables_show_every_runtime_ratio_and_verdict():
    s = bs.summarize(SERIES)
    t = bs.speed_table(s, SERIES)
    assert "| mnv2ref | TFLite-XNNPACK | ONNX Runtime |" in t
    assert "| 1.0_224 b1 | 7.00 (6.00-9.00) | 5.00 (4.00-6.00) | 5.00 (4.00-5.50) | 1.40x (1.40-2.25) | <= 1.3x | no |" in t
    assert "| 0.35_96 b32 | 0.500 | - | 0.450 | 1.11x (1.11-1.11) | <= 1.2x | yes |" in t
    cold = {"1.0_224": {"mnv2ref numba": {"from_start_s": 74.2, "from_construct_s": 73.1,
                                          "compile": [{"kernel": "k", "compiles": 2, "self_s": 9.5, "inclusive_s": 12.0}]},
                        "mnv2ref numba warm": {"from_start_s": 0.8, "from_construct_s": 0.4},
                        "onnxruntime": {"error": "boom"}}}
    st = bs.start_table(cold)
    assert "| mnv2ref cold (empty cache) | 74.20 s (73.10 s from construction) | <= 20 s (1.0_224) |" in st
    assert "| mnv2ref warm start | 0.80 s (0.40 s from construction) | <= 1.5 s |" in st
    assert "| ONNX Runtime cold | failed |  |" in st
    assert "| 1.0_224 | `k` | 2 | 9.50 | 12.00 |" in bs.kernel_table(cold)


def test_write_json_is_atomic_and_replaces(tmp_path):
    p = tmp_path / "results" / "r.json"
    bs.write_json(p, {"a": 1})
    bs.write_json(p, {"a": 2})  # a rerun replaces, never appends
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]  # no temp file left behind

    class Bad:
        pass
    with pytest.raises(TypeError):
        bs.write_json(p, {"a": Bad()})
    assert json.loads(p.read_text()) == {"a": 2} and len(list(p.parent.iterdir())) == 1

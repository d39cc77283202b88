"""The pure parts of the model benchmark: run order, summary statistics, ratios, targets, tables, JSON.

Nothing here starts a process or imports a runtime, so ``tests/test_bench_harness.py`` checks it in
milliseconds. ``bench_model.py`` drives the runs, ``bench_worker.py`` is the process that times one runtime.
"""
from __future__ import annotations

import json
import os
import statistics

# Display names, in table order. "mnv2ref" in ratios means the numba backend (the default).
RUNTIMES = ("mnv2ref numba", "mnv2ref numpy", "tflite xnnpack", "onnxruntime", "tensorflow tf.function",
            "pytorch eager")
LABELS = {"mnv2ref numba": "mnv2ref", "mnv2ref numpy": "mnv2ref numpy", "tflite xnnpack": "TFLite-XNNPACK",
          "onnxruntime": "ONNX Runtime", "tensorflow tf.function": "TF tf.function",
          "pytorch eager": "PyTorch eager"}
OURS = "mnv2ref numba"
PEERS_FAST = ("tflite xnnpack", "onnxruntime")  # the ratio is against the faster of these two
# Issue 9's targets: mnv2ref / fastest of TFLite and ONNX Runtime, ms per image, per (config, batch).
TARGETS = {("1.0_224", 1): 1.3, ("1.0_224", 32): 1.1, ("0.35_96", 1): 2.0, ("0.35_96", 32): 1.2}


def rotation(items, round_index: int) -> list:
    """``items`` rotated left by ``round_index``: round r starts with item r, so each runtime runs first,
    second, ... in turn and a slow phase of a shared machine does not always hit the same one."""
    items = list(items)
    if not items:
        return []
    k = round_index % len(items)
    return items[k:] + items[:k]


def summarize(series: list[dict]) -> dict:
    """Series records -> ``{config: {batch: {runtime: stats}}}`` with, per runtime, ``rounds`` (the per-round
    median ms per image, in round order), ``median`` (median of those), ``min``/``max`` (their spread) and ``n``
    (timed calls in all). A record: ``{"round", "runtime", "config", "batch", "ms_per_image", "n"}``."""
    out: dict = {}
    for s in sorted(series, key=lambda s: s["round"]):
        cell = out.setdefault(s["config"], {}).setdefault(str(s["batch"]), {}).setdefault(
            s["runtime"], {"rounds": [], "n": 0})
        cell["rounds"].append(s["ms_per_image"])
        cell["n"] += s.get("n", 0)
    for by_batch in out.values():
        for by_rt in by_batch.values():
            for cell in by_rt.values():
                r = cell["rounds"]
                cell.update(median=statistics.median(r), min=min(r), max=max(r))
    return out


def ratio(by_runtime: dict, series: list[dict] | None = None, config=None, batch=None) -> dict | None:
    """mnv2ref numba / the faster of TFLite and ONNX Runtime (ms per image), from the medians of the rounds,
    and its range: min-max over the rounds of the same ratio within one round (only runtimes timed in that
    round count). None when mnv2ref or both peers are missing."""
    peers = [p for p in PEERS_FAST if p in by_runtime]
    if OURS not in by_runtime or not peers:
        return None
    best = min(peers, key=lambda p: by_runtime[p]["median"])
    value = by_runtime[OURS]["median"] / by_runtime[best]["median"]
    per_round = []
    if series is not None:
        rounds: dict = {}
        for s in series:
            if s["config"] == config and str(s["batch"]) == str(batch):
                rounds.setdefault(s["round"], {})[s["runtime"]] = s["ms_per_image"]
        for r in sorted(rounds):
            got = [rounds[r][p] for p in PEERS_FAST if p in rounds[r]]
            if OURS in rounds[r] and got:
                per_round.append(rounds[r][OURS] / min(got))
    lo, hi = (min(per_round), max(per_round)) if per_round else (value, value)
    return {"value": value, "min": lo, "max": hi, "per_round": per_round, "against": best}


def targets(summary: dict, series: list[dict] | None = None) -> list[dict]:
    """One row per issue-9 target that was measured: the ratio, its range, the target and whether it is met
    (the ratio of the medians <= target; ``met_every_round`` when the whole range is)."""
    rows = []
    for (cfg, batch), limit in TARGETS.items():
        cell = summary.get(cfg, {}).get(str(batch))
        r = ratio(cell, series, cfg, batch) if cell else None
        if r is None:
            continue
        rows.append({"config": cfg, "batch": batch, "target": limit, "ratio": r["value"], "min": r["min"],
                     "max": r["max"], "against": r["against"], "met": r["value"] <= limit,
                     "met_every_round": r["max"] <= limit})
    return rows


def compile_times(events: list[tuple[float, str, str]]) -> list[dict]:
    """Numba compile events ``(time, "start"|"end", dispatcher name)`` in time order -> per dispatcher name:
    compiles, inclusive seconds (callee compiles included) and self seconds (nested compiles excluded),
    largest self time first."""
    stack, per = [], {}
    for t, kind, name in events:
        if kind == "start":
            stack.append([name, t, 0.0])
            continue
        if not stack:
            continue
        n, t0, nested = stack.pop()
        d = per.setdefault(n, {"kernel": n, "compiles": 0, "inclusive_s": 0.0, "self_s": 0.0})
        d["compiles"] += 1
        d["inclusive_s"] += t - t0
        d["self_s"] += t - t0 - nested
        if stack:
            stack[-1][2] += t - t0
    return sorted(per.values(), key=lambda d: -d["self_s"])


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (``mnv2ref.fileio.atomic_path``)."""
    from mnv2ref.fileio import atomic_path

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")


# --- markdown ----------------------------------------------------------------------------------------------------

def _num(x) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:#.3g}"


def _cell(stats: dict | None) -> str:
    if not stats:
        return "-"
    if len(stats["rounds"]) == 1:
        return _num(stats["median"])
    return f"{_num(stats['median'])} ({_num(stats['min'])}-{_num(stats['max'])})"


def speed_table(summary: dict, series: list[dict] | None = None) -> str:
    """ms per image, median of the rounds (min-max of the per-round medians), one row per (config, batch);
    then the ratio to the faster of TFLite and ONNX Runtime with its range, the target and whether it is met."""
    present = [r for r in RUNTIMES if any(r in b for c in summary.values() for b in c.values())]
    head = ["config"] + [LABELS[r] for r in present] + ["ratio (range)", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cfg, by_batch in summary.items():
        for batch, by_rt in sorted(by_batch.items(), key=lambda kv: int(kv[0])):
            r = ratio(by_rt, series, cfg, batch)
            limit = TARGETS.get((cfg, int(batch)))
            rat = f"{r['value']:.2f}x ({r['min']:.2f}-{r['max']:.2f})" if r else "-"
            met = "-" if not r or limit is None else ("yes" if r["value"] <= limit else "no")
            lines.append("| " + " | ".join([f"{cfg} b{batch}"] + [_cell(by_rt.get(rt)) for rt in present]
                                           + [rat, f"<= {limit}x" if limit else "-", met]) + " |")
    return "\n".join(lines)


def start_table(cold: dict) -> str:
    """Cold first prediction (empty Numba cache) and warm start, seconds, per config and runtime:
    ``cold[config][runtime] = {"from_start_s", "from_construct_s", ...}``, with "mnv2ref numba warm" rows."""
    names = [r for r in (OURS, OURS + " warm", "mnv2ref cli predict", "tflite xnnpack", "onnxruntime",
                         "tensorflow tf.function") if any(r in c for c in cold.values())]
    label = {OURS: "mnv2ref cold (empty cache)", OURS + " warm": "mnv2ref warm start",
             "mnv2ref cli predict": "`mnv2ref predict one.png`, empty cache"}
    target = {OURS: "<= 20 s (1.0_224)", OURS + " warm": "<= 1.5 s", "mnv2ref cli predict": "<= 10 s"}
    lines = ["| start, first prediction at batch 1 | " + " | ".join(cold) + " | target |",
             "|---|" + "---|" * (len(cold) + 1)]
    for n in names:
        cells = []
        for cfg in cold:
            d = cold[cfg].get(n)
            if not d or "error" in d:
                cells.append("failed" if d else "-")
                continue
            cells.append(f"{d['from_start_s']:.2f} s ({d['from_construct_s']:.2f} s from construction)"
                         if "from_construct_s" in d else f"{d['from_start_s']:.2f} s")
        lines.append(f"| {label.get(n, LABELS.get(n, n) + ' cold')} | " + " | ".join(cells)
                     + f" | {target.get(n, '')} |")
    return "\n".join(lines)


def kernel_table(cold: dict, top: int = 8) -> str:
    """The largest compile times of the cold mnv2ref run, per config."""
    lines = ["| config | kernel | compiles | self s | inclusive s |", "|---|---|---|---|---|"]
    for cfg, by_rt in cold.items():
        rows = (by_rt.get(OURS) or {}).get("compile", [])
        for d in rows[:top]:
            lines.append(f"| {cfg} | `{d['kernel']}` | {d['compiles']} | {d['self_s']:.2f} | {d['inclusive_s']:.2f} |")
        if len(rows) > top:
            rest = rows[top:]
            lines.append(f"| {cfg} | {len(rest)} more | {sum(d['compiles'] for d in rest)} | "
                         f"{sum(d['self_s'] for d in rest):.2f} | |")
    return "\n".join(lines)

#!/usr/bin/env python
"""One quantized inverted residual block, step by step: every number of docs/int8_block.md.

Block ``block_2`` of ``fixtures/int8/mnv2_0.35_96_int8.tflite`` (TFLite's converter, full-integer int8,
per-channel weights; made by ``fixtures/generate_int8.py`` from the float fixture's weights) on
``fixtures/shapes.png``: 8 -> 48 -> 48 -> 8 channels at 24x24, stride 1, with its residual ADD. The script

1. runs the file with ``mnv2ref.load_tflite`` and records every tensor (``model.trace``), and checks
   the block's tensors against TFLite's own (the BUILTIN_REF golden of ``fixtures/int8``);
2. prints each step's tensors with their scales and zero points, and derives the integer parameters
   TFLite's ``Prepare`` computes (``QuantizeMultiplier``, the ReLU6 clamp, ADD's 20-bit left shift);
3. follows one output element of each step through the integer arithmetic by hand, in plain Python
   ints (accumulator, ``SaturatingRoundingDoublingHighMul``, ``RoundingDivideByPOT``, zero point,
   clamp), and checks it against the trace;
4. recomputes each step's whole tensor from its traced inputs with ``mnv2ref.tflite`` (exact), and
   with XNNPACK's float32 requantization (TFLite's default path) on the same inputs, and counts
   where the two roundings part.

    python examples/int8_block.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import mnv2ref
from mnv2ref.cli.tflite import to_input
from mnv2ref.image import img_to_array, load_img
from mnv2ref.tflite import ops_ref, xnnpack
from mnv2ref.tflite.fixedpoint import mbqm, quantize_multiplier

ROOT = Path(__file__).resolve().parent.parent
FILE = ROOT / "fixtures" / "int8" / "mnv2_0.35_96_int8.tflite"
GOLDEN = ROOT / "fixtures" / "int8" / "golden_mnv2_0.35_96_int8.npz"
IMAGE = ROOT / "fixtures" / "shapes.png"
BLOCK, Y, X = 2, 10, 13
INT32_MIN = -(1 << 31)


# -- the fixed-point primitives, as scalars (gemmlowp / TFLite reference kernels) -------------------------------

def c_div(a: int, b: int) -> int:
    """C++ integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul: (a*b + nudge) / 2^31, nudge 2^30 or 1 - 2^30, C division."""
    if a == b == INT32_MIN:
        return (1 << 31) - 1
    ab = a * b
    return c_div(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)), 1 << 31)


def rdbpot(x: int, e: int) -> int:
    """RoundingDivideByPOT: x / 2^e rounded to nearest, halves away from zero (arithmetic shift + fix-up)."""
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > threshold else 0)


def requantize(acc: int, m: int, shift: int, zp: int, lo: int, hi: int, show) -> int:
    """MultiplyByQuantizedMultiplier (double rounding) + zero point + clamp, printing each stage."""
    left, right = max(shift, 0), max(-shift, 0)
    hi_mul = srdhm(acc * (1 << left), m)
    out = rdbpot(hi_mul, right)
    show(f"  SaturatingRoundingDoublingHighMul({acc}{f' * 2^{left}' if left else ''}, {m}) = {hi_mul}")
    show(f"  RoundingDivideByPOT({hi_mul}, {right}) = {out}")
    res = min(max(out + zp, lo), hi)
    show(f"  + zero point {zp} = {out + zp}; clamp to [{lo}, {hi}] -> {res}")
    return res


# -- helpers ----------------------------------------------------------------------------------------------------

def short(name: str) -> str:
    return name.split(";")[0].split("/", 1)[-1]


def qstr(t) -> str:
    return f"scale {float(t.scale[0]):.9g}, zero point {int(t.zero_point[0])}"


def real_range(t) -> str:
    s, z = float(t.scale[0]), int(t.zero_point[0])
    return f"[{s * (-128 - z):.4f}, {s * (127 - z):.4f}]"


def multiplier_story(s_in, s_w, s_out, show):
    real = float(s_in) * float(s_w) / float(s_out)
    m, shift = quantize_multiplier(real)
    frac, exp = np.frexp(real)
    show(f"  real multiplier s_in * s_w / s_out = {float(s_in):.9g} * {float(s_w):.9g} / {float(s_out):.9g} "
         f"= {real:.9g}")
    show(f"  QuantizeMultiplier: frexp -> {frac:.9f} * 2^{exp}; M = round({frac:.9f} * 2^31) = {m}, shift {shift}")
    show(f"  M * 2^(shift - 31) = {m * 2.0 ** (shift - 31):.12g} (relative error {abs(m * 2.0 ** (shift - 31) / real - 1):.1e})")
    return m, shift


def clamp_story(op, t_out, show):
    q, s, z = op.quant, float(t_out.scale[0]), int(t_out.zero_point[0])
    act = op.options.get("activation", "NONE")
    if act == "RELU6":
        r6 = int(np.floor(np.float32(6) / np.float32(s) + 0.5))
        show(f"  fused ReLU6: act_min = max(-128, {z} + round(0 / s)) = {q['act_min']}, act_max = min(127, {z} + "
             f"round(6 / {s:.9g})) = min(127, {z + r6}) = {q['act_max']}")
        if q["act_max"] == 127:
            show(f"  (6.0 is beyond the tensor's range {real_range(t_out)}: only the int8 limit binds)")
    else:
        show(f"  no activation (linear bottleneck): clamp to the int8 range [{q['act_min']}, {q['act_max']}]")


def main() -> int:
    out = []
    show = out.append
    model = mnv2ref.load_tflite(FILE)
    fm = model._fm  # the flatbuffer's tensors and constants (what the porter reads from the file)
    t_in = model.inputs[0]
    px = img_to_array(load_img(IMAGE, target_size=t_in.shape[1:3]))[None]
    x = to_input(px, t_in)
    trace = model.trace(x)
    ops = [op for op in model.ops if short(op.outputs[0]).startswith(f"block_{BLOCK}_")]
    assert [op.name for op in ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD"], [o.name for o in ops]
    expand, dw, project, add = ops
    T = model.tensors
    g = np.load(GOLDEN)
    by_name = dict(zip((str(n) for n in g["name"]), (int(i) for i in g["index"])))
    same = all(np.array_equal(trace[op.outputs[0]], g[f"ref/image/{by_name[op.outputs[0]]}"]) for op in ops)

    show(f"== the block: {FILE.name}, block_{BLOCK}, input {IMAGE.name} ==")
    show(f"input tensor {t_in.name}: {t_in.dtype} {'x'.join(map(str, t_in.shape))}, {qstr(t_in)}")
    rows = [(ops[0].inputs[0], "block input")] + [(op.outputs[0], op.name) for op in ops]
    for name, what in rows:
        t = T[name]
        show(f"  {what:<18} {short(name):<32} {'x'.join(map(str, t.shape)):<11} {qstr(t)}, real range {real_range(t)}")
    n_bytes = sum(int(np.prod(T[op.outputs[0]].shape)) for op in ops)
    show(f"  activation bytes of the block's four outputs: {n_bytes} int8 ({4 * n_bytes} as float32)")
    show(f"  equal to TFLite's BUILTIN_REF tensors (fixtures/int8 golden): {'yes' if same else 'NO'}")

    # pick the channel: the first whose expand and depthwise outputs at (Y, X) are above the ReLU floor
    e_out, d_out = trace[expand.outputs[0]][0, Y, X], trace[dw.outputs[0]][0, Y, X]
    C = next(c for c in range(project.quant["multiplier"].size)
             if e_out[c] > expand.quant["act_min"] and d_out[c] > dw.quant["act_min"])
    show(f"element followed by hand: row {Y}, column {X}, channel {C}")

    # -- 1. expand ---------------------------------------------------------------------------------------------
    def conv_element(op, taps, title):
        xin, w_t, b_t, y_t = T[op.inputs[0]], T[op.inputs[1]], T[op.inputs[2]], T[op.outputs[0]]
        w, bias = np.asarray(fm.constants[w_t.index]), np.asarray(fm.constants[b_t.index])
        show(f"== {title} ==")
        show(f"  {op.name} {w_t.dtype} weights {'x'.join(map(str, w_t.shape))} ({w_t.scale.size} scales, zero points 0), "
             f"int32 bias {b_t.shape[0]} (scale s_in * s_w, zero point 0)")
        c = C
        s_w = w_t.scale[c]
        m, shift = multiplier_story(xin.scale[0], s_w, y_t.scale[0], show)
        assert (m, shift) == (int(op.quant["multiplier"][c]), int(op.quant["shift"][c]))
        clamp_story(op, y_t, show)
        off = op.quant["input_offset"]
        xs, ws = taps(trace[op.inputs[0]][0], w, c)
        acc = int(bias[c]) + sum(int(wi) * (int(xi) + off) for wi, xi in zip(ws, xs))
        terms = " + ".join(f"{int(wi)}*({int(xi)}{off:+d})" for wi, xi in list(zip(ws, xs))[:4])
        show(f"  accumulator = bias {int(bias[c])} + sum over {len(ws)} taps of w * (x + {off}) = {acc}")
        show(f"    first taps: {terms} ...")
        show(f"  in real numbers: s_in * s_w * acc = {float(xin.scale[0]) * float(s_w) * acc:.6f}")
        res = requantize(acc, m, shift, int(y_t.zero_point[0]), op.quant["act_min"], op.quant["act_max"], show)
        got = int(trace[op.outputs[0]][0, Y, X, c])
        show(f"  traced value {got}: {'equal' if got == res else 'DIFFERENT'}; real {float(y_t.scale[0]) * (res - int(y_t.zero_point[0])):.6f}")
        assert got == res
        scale32 = np.float32(np.float32(xin.scale[0]) * np.float32(s_w)) / np.float32(y_t.scale[0])
        fp = min(max(int(np.rint(np.float32(acc) * scale32)) + int(y_t.zero_point[0]), op.quant["act_min"]), op.quant["act_max"])
        zo = int(y_t.zero_point[0])
        show(f"  XNNPACK's rule on the same accumulator: rint(float32({acc}) * {scale32:.9g}) {'-' if zo < 0 else '+'} "
             f"{abs(zo)} -> {fp}")

    def pointwise_taps(xmap, w, c):
        return xmap[Y, X, :], w[c, 0, 0, :]

    def depthwise_taps(xmap, w, c):
        xs, ws = [], []
        for i in range(3):
            for j in range(3):
                yy, xx = Y - 1 + i, X - 1 + j
                if 0 <= yy < xmap.shape[0] and 0 <= xx < xmap.shape[1]:  # padding taps are skipped
                    xs.append(xmap[yy, xx, c])
                    ws.append(w[0, i, j, c])
        return xs, ws

    conv_element(expand, pointwise_taps, f"1. expand: 1x1 CONV_2D {T[expand.inputs[0]].shape[-1]} -> "
                                         f"{T[expand.outputs[0]].shape[-1]} channels, ReLU6")
    conv_element(dw, depthwise_taps, "2. depthwise: 3x3 DEPTHWISE_CONV_2D, stride 1, SAME padding (1 each side), ReLU6")
    conv_element(project, pointwise_taps, f"3. project: 1x1 CONV_2D {T[project.inputs[0]].shape[-1]} -> "
                                          f"{T[project.outputs[0]].shape[-1]} channels, linear")

    # -- 4. the residual ADD -------------------------------------------------------------------------------------
    q = add.quant
    a_t, b_t, y_t = T[add.inputs[0]], T[add.inputs[1]], T[add.outputs[0]]
    show("== 4. residual ADD: block input + projection ==")
    s1, s2, so = (np.float32(t.scale[0]) for t in (a_t, b_t, y_t))
    twice = float(np.float32(2) * max(s1, s2))
    show(f"  s_1 = {float(s1):.9g} (block input), s_2 = {float(s2):.9g} (projection), s_out = {float(so):.9g}")
    show(f"  left_shift = {q['left_shift']}; twice_max = 2 * max(s_1, s_2) = {twice:.9g}")
    for k, s in ((1, s1), (2, s2)):
        show(f"  input {k}: real multiplier s_{k} / twice_max = {float(s) / twice:.9g} -> M {q[f'input{k}_multiplier']}, "
             f"shift {q[f'input{k}_shift']}")
    show(f"  output: real multiplier twice_max / (2^20 * s_out) = {twice / (float(np.float32(1 << 20) * so)):.9g} -> "
         f"M {q['output_multiplier']}, shift {q['output_shift']}")
    x1, x2 = int(trace[add.inputs[0]][0, Y, X, C]), int(trace[add.inputs[1]][0, Y, X, C])
    a = []
    for k, v in ((1, x1), (2, x2)):
        shifted = (v + q[f"input{k}_offset"]) << q["left_shift"]
        ak = rdbpot(srdhm(shifted, q[f"input{k}_multiplier"]), -q[f"input{k}_shift"])
        show(f"  x_{k} = {v}: ({v} {q[f'input{k}_offset']:+d}) * 2^20 = {shifted}; MultiplyByQuantizedMultiplier -> {ak}")
        a.append(ak)
    show(f"  sum {a[0]} + {a[1]} = {a[0] + a[1]}")
    res = requantize(a[0] + a[1], q["output_multiplier"], q["output_shift"], q["output_offset"], q["act_min"],
                     q["act_max"], show)
    got = int(trace[add.outputs[0]][0, Y, X, C])
    show(f"  traced value {got}: {'equal' if got == res else 'DIFFERENT'}; real: "
         f"{float(s1) * (x1 - int(a_t.zero_point[0])):.6f} + {float(s2) * (x2 - int(b_t.zero_point[0])):.6f} "
         f"~ {float(so) * (res - int(y_t.zero_point[0])):.6f}")
    assert got == res
    p = xnnpack.add_params(fm, add)
    fp = int(xnnpack.add(np.array([x1]), np.array([x2]), p, np.int8)[0])
    show(f"  XNNPACK's rule (20-bit multipliers {p['a_multiplier']} and {p['b_multiplier']}, shift {p['shift']}) -> {fp}")

    # -- 5. whole tensors ----------------------------------------------------------------------------------------
    show("== 5. whole tensors, from the traced inputs ==")
    for op in ops:
        y_t = T[op.outputs[0]]
        shape = trace[op.outputs[0]].shape
        if op.name == "ADD":
            ref = ops_ref.add(trace[op.inputs[0]], trace[op.inputs[1]], op.quant, np.int8)
            fp = xnnpack.add(trace[op.inputs[0]], trace[op.inputs[1]], xnnpack.add_params(fm, op), np.int8)
        else:
            w, bias = np.asarray(fm.constants[op.input_indices[1]]), np.asarray(fm.constants[op.input_indices[2]])
            accf = ops_ref.conv_accumulator if op.name == "CONV_2D" else ops_ref.depthwise_accumulator
            acc = accf(trace[op.inputs[0]], w, bias, op.quant, shape)
            ref = np.clip(mbqm(acc, op.quant["multiplier"], op.quant["shift"]) + op.quant["output_offset"],
                          op.quant["act_min"], op.quant["act_max"]).astype(np.int8)
            e = xnnpack.epilogue(fm, op)
            fp = xnnpack.requantize_fp32(acc, e["scale"], int(y_t.zero_point[0]), e["act_min"], e["act_max"], np.int8)
        d = np.abs(fp.astype(int) - ref.astype(int))
        if op is dw:
            first = tuple(int(i) for i in np.argwhere(d > 0)[0])
            tie = (first, int(acc[first]))
        show(f"  {op.name:<18} {short(op.outputs[0]):<28} {ref.size:>6} values: double rounding = trace: "
             f"{'yes' if np.array_equal(ref, trace[op.outputs[0]]) else 'NO'}; XNNPACK's float32 rounding differs "
             f"in {int((d > 0).sum())} ({100 * (d > 0).mean():.2f}%), by at most {int(d.max())}")
    (n, yy, xx, c), a0 = tie
    m, sh = int(dw.quant["multiplier"][c]), int(dw.quant["shift"][c])
    zo = int(T[dw.outputs[0]].zero_point[0])
    show(f"== 6. where the two roundings part: the depthwise output at row {yy}, column {xx}, channel {c} ==")
    show(f"  accumulator {a0}; exact product acc * M * 2^(shift - 31) = {a0 * m * 2.0 ** (sh - 31):.9f}")
    hm = srdhm(a0, m)
    show(f"  reference: SaturatingRoundingDoublingHighMul = {hm} = {hm / 2 ** -sh:.9f} * 2^{-sh} (rounded once, "
         f"to a tie), RoundingDivideByPOT -> {rdbpot(hm, -sh)} (rounded again: halves away from zero) "
         f"-> {rdbpot(hm, -sh) + zo}")
    sc = np.float32(np.float32(T[dw.inputs[0]].scale[0]) * np.float32(T[dw.inputs[1]].scale[c])) / np.float32(
        T[dw.outputs[0]].scale[0])
    v = np.float32(a0) * sc
    show(f"  XNNPACK: float32({a0}) * {sc:.9g} = {v:.9g}, rounded once to {int(np.rint(v))} -> {int(np.rint(v)) + zo}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

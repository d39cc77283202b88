"""The int8 arithmetic: fixed-point primitives against exact rational oracles, and each op's NumPy
function (mnv2ref.tflite.ops_ref, the readable oracle) against its Numba kernel (kernels_int8) on
random shapes and extreme values: saturation, the largest multipliers, negative and positive shifts,
accumulators near and past the int32 limits, weights that force the K-split of the float32 path."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnv2ref.tflite import fixedpoint as fx
from mnv2ref.tflite import kernels_int8, ops_ref

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
int32s = st.integers(INT32_MIN, INT32_MAX)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _wrap(v):
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def _round_half_up(fr: Fraction) -> int:
    return math.floor(fr + Fraction(1, 2))


def _round_half_away(fr: Fraction) -> int:
    return int(math.copysign(math.floor(abs(fr) + Fraction(1, 2)), fr))


def mbqm_oracle(x: int, m: int, shift: int) -> int:
    """TFLite's double-rounding MBQM as rationals: SRDHM rounds x*M/2^31 half up (its nudge and
    truncating division), RDBPOT rounds the result / 2^right half away from zero."""
    left, right = max(shift, 0), max(-shift, 0)
    xs = _wrap(x << left)
    if xs == m == INT32_MIN:
        h = INT32_MAX
    else:
        h = _round_half_up(Fraction(xs * m, 1 << 31))
    return _round_half_away(Fraction(h, 1 << right))


@SETTINGS
@given(st.lists(st.tuples(int32s, st.integers(0, INT32_MAX), st.integers(-31, 8)), min_size=1, max_size=64))
def test_mbqm_equals_the_rational_oracle(cases):
    x, m, s = (np.array(v, np.int64) for v in zip(*cases))
    got = fx.mbqm(x, m, s)
    assert got.tolist() == [mbqm_oracle(*c) for c in cases]


def test_mbqm_extremes():
    for x in (INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX):
        for m in (0, 1, 1 << 30, INT32_MAX):
            for s in (-31, -1, 0, 1, 30):
                assert int(fx.mbqm(np.int64(x), m, s)) == mbqm_oracle(x, m, s), (x, m, s)
    assert int(fx.srdhm(np.int64(INT32_MIN), INT32_MIN)) == INT32_MAX


@given(st.floats(min_value=1e-12, max_value=1e4, allow_nan=False))
def test_quantize_multiplier_represents_the_double(m):
    q, shift = fx.quantize_multiplier(m)
    if q == 0:
        assert m < 2.0 ** -31
        return
    assert 1 << 30 <= q <= INT32_MAX
    assert abs(q * 2.0 ** (shift - 31) - m) <= 2.0 ** (shift - 32) * (1 + 1e-12)


def test_quantize_multiplier_known_values():
    assert fx.quantize_multiplier(0.5) == (1 << 30, 0)
    assert fx.quantize_multiplier(1.0) == (1 << 30, 1)
    assert fx.quantize_multiplier(0.0) == (0, 0)
    assert fx.quantize_multiplier(1 - 2.0 ** -40) == (1 << 30, 1)      # rounds up to 2^31: halved
    assert fx.quantize_multiplier(2.0 ** -40) == (0, 0)                # shift < -31 flushes to zero


def test_round_half_away_and_clz():
    assert fx.round_half_away(np.array([-2.5, -0.5, 0.5, 1.5, 2.4999999])).tolist() == [-3, -1, 1, 2, 2]
    v = np.array([0, 1, 2, 3, (1 << 31) - 1, 1 << 31, (1 << 32) - 1], np.int64)
    assert fx.count_leading_zeros32(v).tolist() == [32, 31, 30, 30, 1, 0, 0]


# ---- ops: NumPy oracle vs Numba kernel ---------------------------------------------------------

DTYPES = st.sampled_from([np.int8, np.uint8])


def _q(draw, dtype, cout, *, pad=(0, 0), stride=(1, 1), depth_multiplier=None):
    info = np.iinfo(dtype)
    zp_in = draw(st.integers(int(info.min), int(info.max)))
    zp_out = draw(st.integers(int(info.min), int(info.max)))
    mult = draw(st.lists(st.one_of(st.just(INT32_MAX), st.just(1 << 30), st.integers(1 << 30, INT32_MAX)),
                         min_size=cout, max_size=cout))
    shift = draw(st.lists(st.integers(-31, 4), min_size=cout, max_size=cout))
    lo = draw(st.integers(int(info.min), int(info.max)))
    hi = draw(st.integers(lo, int(info.max)))
    q = dict(input_offset=-zp_in, filter_offset=0 if dtype == np.int8 else -draw(st.integers(0, 255)),
             output_offset=zp_out, multiplier=np.array(mult, np.int64), shift=np.array(shift, np.int64),
             act_min=lo, act_max=hi, stride=stride, dilation=(1, 1), pad=pad)
    if depth_multiplier is not None:
        q["depth_multiplier"] = depth_multiplier
    return q


def _tensor(draw, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    mode = draw(st.sampled_from(["uniform", "min", "max", "ends"]))
    if mode == "min":
        return np.full(shape, info.min, dtype)
    if mode == "max":
        return np.full(shape, info.max, dtype)
    if mode == "ends":
        return rng.choice(np.array([info.min, info.max], dtype), size=shape)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def _bias(draw, cout, seed):
    scale = draw(st.sampled_from([1, 1 << 16, 1 << 30, INT32_MAX]))   # near the int32 limits: acc wraps
    rng = np.random.default_rng(seed + 7)
    return np.clip(rng.integers(-scale, scale, cout, endpoint=True), INT32_MIN, INT32_MAX).astype(np.int32)


@st.composite
def pointwise_case(draw):
    dtype = draw(DTYPES)
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    cin, cout = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2 ** 16))
    x = _tensor(draw, (n, h, w, cin), dtype, seed)
    wt = _tensor(draw, (cout, 1, 1, cin), np.int8 if dtype == np.int8 else np.uint8, seed + 1)
    if dtype == np.int8:
        wt = np.clip(wt, -127, 127).astype(np.int8)
    return x, wt, _bias(draw, cout, seed), _q(draw, dtype, cout), (n, h, w, cout)


@SETTINGS
@given(pointwise_case())
def test_conv_1x1_numba_equals_numpy(case):
    x, w, b, q, shape = case
    np.testing.assert_array_equal(kernels_int8.conv_2d(x, w, b, q, shape, x.dtype),
                                  ops_ref.conv_2d(x, w, b, q, shape, x.dtype))


@st.composite
def conv3x3_case(draw, depthwise: bool):
    dtype = draw(DTYPES)
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    s = draw(st.sampled_from([1, 2]))
    same = draw(st.booleans())
    if not same and (h < 3 or w < 3):
        same = True
    oh, ow = ((h + s - 1) // s, (w + s - 1) // s) if same else ((h - 3) // s + 1, (w - 3) // s + 1)
    pad = (max((oh - 1) * s + 3 - h, 0) // 2, max((ow - 1) * s + 3 - w, 0) // 2) if same else (0, 0)
    cin = draw(st.integers(1, 40))
    cout = cin if depthwise else draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2 ** 16))
    x = _tensor(draw, (n, h, w, cin), dtype, seed)
    wshape = (1, 3, 3, cout) if depthwise else (cout, 3, 3, cin)
    wt = _tensor(draw, wshape, dtype, seed + 1)
    if dtype == np.int8:
        wt = np.clip(wt, -127, 127).astype(np.int8)
    q = _q(draw, dtype, cout, pad=pad, stride=(s, s), depth_multiplier=1 if depthwise else None)
    return x, wt, _bias(draw, cout, seed), q, (n, oh, ow, cout)


@pytest.mark.parametrize("depthwise", [True, False], ids=["depthwise", "conv"])
def test_3x3_numba_equals_numpy(depthwise):
    numba_f, numpy_f = ((kernels_int8.depthwise_conv_2d, ops_ref.depthwise_conv_2d) if depthwise
                        else (kernels_int8.conv_2d, ops_ref.conv_2d))

    @SETTINGS
    @given(conv3x3_case(depthwise=depthwise))
    def check(case):
        x, w, b, q, shape = case
        np.testing.assert_array_equal(numba_f(x, w, b, q, shape, x.dtype), numpy_f(x, w, b, q, shape, x.dtype))
    check()


def test_pointwise_split_along_k_is_exact():
    """Extreme weights and inputs over a long K: the float32 path must split K (each chunk < 2^24)."""
    cin, cout = 1100, 5
    x = np.full((1, 2, 3, cin), 127, np.int8)
    x[0, 0, 0, ::3] = -128
    w = np.full((cout, 1, 1, cin), 127, np.int8)
    w[1] = -127
    q = dict(input_offset=128, filter_offset=0, output_offset=3, multiplier=np.full(cout, INT32_MAX),
             shift=np.full(cout, -20), act_min=-128, act_max=127, stride=(1, 1), dilation=(1, 1), pad=(0, 0))
    bound = cin * 255 * 127
    assert bound > 2 ** 24
    kernel = kernels_int8.bind(kernels_int8._Op("CONV_2D", q), w, None, np.int8)
    assert kernel.kind == "pointwise" and len(kernel.chunks) >= 2
    bias = np.array([INT32_MAX, INT32_MIN, 0, 1, -1], np.int32)   # the int32 accumulator wraps
    np.testing.assert_array_equal(kernels_int8.conv_2d(x, w, bias, q, (1, 2, 3, cout), np.int8),
                                  ops_ref.conv_2d(x, w, bias, q, (1, 2, 3, cout), np.int8))


@SETTINGS
@given(st.data())
def test_fully_connected_numba_equals_numpy(data):
    dtype = data.draw(DTYPES)
    b, k, cout = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 300)), data.draw(st.integers(1, 30))
    seed = data.draw(st.integers(0, 2 ** 16))
    x = _tensor(data.draw, (b, k), dtype, seed)
    w = _tensor(data.draw, (cout, k), dtype, seed + 1)
    q = _q(data.draw, dtype, cout)
    q["effective_scale"] = np.array(data.draw(st.lists(st.floats(1e-9, 4.0), min_size=cout, max_size=cout)))
    bias = _bias(data.draw, cout, seed)
    np.testing.assert_array_equal(kernels_int8.fully_connected(x, w, bias, q, (b, cout), dtype),
                                  ops_ref.fully_connected(x, w, bias, q, (b, cout), dtype))


@SETTINGS
@given(st.data())
def test_add_numba_equals_numpy(data):
    dtype = data.draw(DTYPES)
    info = np.iinfo(dtype)
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 7)), 3, data.draw(st.integers(1, 17)))
    seed = data.draw(st.integers(0, 2 ** 16))
    x1, x2 = _tensor(data.draw, shape, dtype, seed), _tensor(data.draw, shape, dtype, seed + 1)
    zp = [data.draw(st.integers(int(info.min), int(info.max))) for _ in range(3)]
    m = [data.draw(st.integers(1 << 30, INT32_MAX)) for _ in range(3)]
    s = [data.draw(st.integers(-31, 0)) for _ in range(3)]
    lo = data.draw(st.integers(int(info.min), int(info.max)))
    q = dict(left_shift=20, input1_offset=-zp[0], input2_offset=-zp[1], output_offset=zp[2],
             input1_multiplier=m[0], input1_shift=s[0], input2_multiplier=m[1], input2_shift=s[1],
             output_multiplier=m[2], output_shift=s[2], act_min=lo, act_max=data.draw(st.integers(lo, int(info.max))))
    np.testing.assert_array_equal(kernels_int8.add(x1, x2, q, dtype), ops_ref.add(x1, x2, q, dtype))


def test_numba_wrappers_reject_float_input():
    with pytest.raises(ValueError, match="int8 or uint8"):
        kernels_int8.conv_2d(np.zeros((1, 1, 1, 1), np.float32), np.zeros((1, 1, 1, 1), np.int8), None,
                             {}, (1, 1, 1, 1), np.int8)


@pytest.mark.parametrize("kind", ["fallback", "fast"])
def test_centred_copy_is_output_minus_zero_point(kind):
    """The float32 copy a convolution hands to the next Numba kernel is exactly ``y - zp_out``,
    also when a layer leaves the float32 path (here: weights too large for its exactness bound)."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (1, 5, 5, 8)).astype(np.int8)
    w = rng.integers(-127, 128, (1, 3, 3, 8)).astype(np.int8)
    q = dict(input_offset=7, filter_offset=0, output_offset=-11, multiplier=np.full(8, 1 << 30),
             shift=np.full(8, -6), act_min=-128, act_max=127, stride=(1, 1), dilation=(1, 1), pad=(1, 1),
             depth_multiplier=1)
    k = kernels_int8.bind(kernels_int8._Op("DEPTHWISE_CONV_2D", q), w, None, np.int8)
    if kind == "fallback":
        k.kind = None
    y, yc = k.run(x, None, (1, 5, 5, 8), np.int8, centred=True)
    np.testing.assert_array_equal(y, ops_ref.depthwise_conv_2d(x, w, None, q, (1, 5, 5, 8), np.int8))
    np.testing.assert_array_equal(yc, y.astype(np.float32) + 11)

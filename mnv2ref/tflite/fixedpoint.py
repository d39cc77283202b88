"""TFLite's and gemmlowp's integer rounding primitives, vectorised over NumPy int64 arrays.

Every value is an int32 held in an int64 array; where C++ would overflow int32 (a left shift,
``x * 2^left_shift``) the result is wrapped to int32 explicitly (``wrap32``), which is what the
compiled kernels do. Sources (google-ai-edge/LiteRT, google/gemmlowp), read, not copied:

* ``quantize_multiplier``: ``tflite/kernels/internal/quantization_util.cc`` ``QuantizeMultiplier``
  -- ``q = frexp(m)``, ``q_fixed = std::round(q * 2^31)`` (halves away from zero), ``2^31`` ->
  ``2^30`` with ``shift + 1``, ``shift < -31`` -> ``(0, 0)``.
* ``srdhm``: gemmlowp ``fixedpoint/fixedpoint.h`` ``SaturatingRoundingDoublingHighMul`` --
  ``(a*b + nudge) / 2^31`` (C division, toward zero), nudge ``2^30`` or ``1 - 2^30`` by the sign of
  ``a*b``; ``INT32_MIN * INT32_MIN`` saturates to ``INT32_MAX``.
* ``rdbpot``: gemmlowp ``RoundingDivideByPOT`` -- ``(x >> e) + ((x & mask) > (mask >> 1) + (x < 0))``
  (halves away from zero).
* ``mbqm``: ``tflite/kernels/internal/common.cc`` ``MultiplyByQuantizedMultiplier(int32, M, shift)``
  of the default ("double rounding") build: ``rdbpot(srdhm(x * 2^max(shift, 0), M), max(-shift, 0))``.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def wrap32(x):
    """Two's-complement wrap of int64 values to int32 (what C++ int32 arithmetic does on overflow)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def round_half_away(x):
    """C ``std::round``/``TfLiteRound``: nearest integer, halves away from zero, in x's float type."""
    x = np.asarray(x)
    t = np.trunc(x)
    frac = x - t  # exact in binary floating point
    return t + np.where(np.abs(frac) >= 0.5, np.sign(x), 0).astype(x.dtype)


def quantize_multiplier(m: float) -> tuple:
    """``QuantizeMultiplier(double m)`` -> ``(M, shift)`` with ``m ~= M * 2^(shift - 31)``."""
    m = float(m)
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = int(round_half_away(np.float64(q) * float(1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if q_fixed > INT32_MAX:  # pragma: no cover - TFLITE_CHECK in the source
        raise ValueError(f"multiplier {m!r} does not quantize")
    return q_fixed, shift


def _cdiv_pow2(x, n: int):
    """C++ signed division by ``2^n`` (truncates toward zero) for int64 arrays."""
    return np.where(x >= 0, x >> n, -((-x) >> n))


def srdhm(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul(int32 a, int32 b)`` (elementwise)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    r = _cdiv_pow2(ab + nudge, 31)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, r)


def rdbpot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT(x, exponent)``, exponent in [0, 31] (scalar or array)."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def mbqm(x, multiplier, shift):
    """``MultiplyByQuantizedMultiplier(int32 x, M, shift)``, double rounding (TFLite's default build).

    ``multiplier`` and ``shift`` broadcast against ``x`` (per-channel: along the last axis).
    """
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rdbpot(srdhm(wrap32(np.asarray(x, dtype=np.int64) << left), multiplier), right)


def sat_shift_left(x, e: int):
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<e>`` for e > 0: ``x << e``, saturated to int32."""
    x = np.asarray(x, dtype=np.int64)
    threshold = (1 << (31 - e)) - 1
    r = wrap32(x << e)
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, r))


def rounding_half_sum(a, b):
    """gemmlowp ``RoundingHalfSum(int32 a, int32 b)``: ``(a + b + sign) / 2`` (C division)."""
    s = np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)
    s = s + np.where(s >= 0, 1, -1)
    return np.where(s >= 0, s // 2, -((-s) // 2))


def count_leading_zeros32(x):
    """``CountLeadingZeros(uint32 x)`` (32 for 0): ``32 - e`` where ``x`` is in ``[2^(e-1), 2^e)``."""
    x = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    _, e = np.frexp(x.astype(np.float64))  # exact: x < 2^32 is a float64
    return np.where(x > 0, 32 - e, 32).astype(np.int64)


# ---- gemmlowp fixed-point exp and reciprocal (fixedpoint.h), used by the reference SOFTMAX ----

def _fx_mul(a, b):
    return srdhm(a, b)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """gemmlowp: exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term = 1895147668          # exp(-1/8) in Q0.31
    constant_1_over_3 = 715827883       # 1/3 in Q0.31
    x = wrap32(a + (1 << 28))           # a + 1/8
    x2 = _fx_mul(x, x)
    x3 = _fx_mul(x2, x)
    x4 = _fx_mul(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    t = rdbpot(wrap32(_fx_mul(wrap32(x4_over_4 + x3), constant_1_over_3) + x2), 1)
    return wrap32(constant_term + _fx_mul(constant_term, wrap32(x + t)))


def exp_on_negative_values(a, integer_bits: int):
    """gemmlowp ``exp_on_negative_values``: a <= 0 in Q(integer_bits).(31-integer_bits) -> exp(a) in Q0.31."""
    a = np.asarray(a, dtype=np.int64)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter
    # Rescale<0> from Q(integer_bits): a saturating left shift by integer_bits
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        sat_shift_left(a_mod_quarter_minus_one_quarter, integer_bits) if integer_bits > 0
        else a_mod_quarter_minus_one_quarter)
    remainder = a_mod_quarter_minus_one_quarter - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent:
            bit = (remainder & (1 << (frac_bits + exponent))) != 0
            result = np.where(bit, _fx_mul(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp: 1 / (1 + a) for a in [0, 1), Q0.31 in and out (Newton-Raphson, 3 steps)."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    x = wrap32(1515870810 + _fx_mul(half_denominator, -1010580540))   # 48/17 - 32/17 * d, Q2.29
    one_q2 = 1 << 29
    for _ in range(3):
        half_denominator_times_x = _fx_mul(half_denominator, x)
        one_minus = wrap32(one_q2 - half_denominator_times_x)
        x = wrap32(x + sat_shift_left(_fx_mul(x, one_minus), 2))
    # Rescale<0>(ExactMulByPot<-1>(x)): Q1.30 -> Q0.31, a saturating left shift by 1
    return sat_shift_left(x, 1)


def get_reciprocal(x, x_integer_digits: int):
    """TFLite ``GetReciprocal`` (``internal/common.h``) -> (Q0.31 scale, num_bits_over_unit)."""
    x = np.asarray(x, dtype=np.int64)
    headroom_plus_one = count_leading_zeros32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_sum_minus_one = wrap32(((x & 0xFFFFFFFF) << headroom_plus_one) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit

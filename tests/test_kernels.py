"""mnv2ref.kernels against their NumPy twins (mnv2ref.kernels.reference).

Tolerance policy. Each output is a sum of n products plus the bias (and a residual). With
S = |bias| + sum |products| (+ |residual|) computed elementwise from absolute values, the
float32 kernel (inputs exactly representable, float64 twin on the same values) obeys the
classic bound |y32 - y64| <= gamma_n * S with gamma_n ~ n * eps32, n = number of roundings
(terms + 2). We assert exactly that. Float64 kernel vs float64 twin: both sides round, so
2 * (n + 2) * eps64 * S (~1e-14 relative for these sizes). ReLU6 and the residual add are
checked bit-exactly on inputs whose sums are exact in binary (multiples of 1/8).

Runs in < 2 minutes with NUMBA_DISABLE_JIT=1 (plain Python kernels): fewer examples then.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnv2ref import kernels as K
from mnv2ref.kernels import reference as R

NOJIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"
EXAMPLES = 30 if NOJIT else 40
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.float32, np.float64]
PADS = [((1, 1), (1, 1)), ((0, 1), (0, 1)), ((1, 0), (1, 0)), ((0, 0), (0, 0)), ((2, 1), (0, 2))]
CHANNELS = [1, 3, 5, 8, 16, 17, 24, 33, 40]


# --- helpers ----------------------------------------------------------------------------------

def _rand(rng, shape, dt, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dt)


def _assert_close(y, ref, S, nterms, dt):
    """|y - ref| <= bound * S elementwise (see module docstring)."""
    assert y.dtype == dt and y.shape == ref.shape, (y.dtype, y.shape, ref.shape)
    eps = np.finfo(dt).eps
    bound = (nterms + 2) * eps * (2 if dt == np.float64 else 1)
    err = np.abs(y.astype(np.float64) - ref)
    tol = bound * S + np.finfo(dt).tiny
    worst = np.max(err / tol) if err.size else 0.0
    assert worst <= 1.0, f"error {err.max():.3g} exceeds bound (ratio {worst:.3g})"


def _f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def _noncontig(a):
    """Same values as ``a`` in a strided view (non-C-contiguous unless it has 1 element)."""
    big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    v = big[..., ::2]
    assert a.size <= 1 or not v.flags.c_contiguous
    return v


def _spatial(draw, max_hw):
    return draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))


def _valid_pads(H, W, pads):
    (t, b), (l, r) = pads
    return H + t + b >= 3 and W + l + r >= 3


# --- pointwise --------------------------------------------------------------------------------

@st.composite
def pointwise_case(draw):
    n = draw(st.integers(1, 3))
    H, W = _spatial(draw, 9 if not NOJIT else 5)
    cin = draw(st.sampled_from(CHANNELS))
    cout = draw(st.sampled_from(CHANNELS))
    return n, H, W, cin, cout, draw(st.sampled_from(DTYPES)), draw(st.integers(0, 2**31))


@SETTINGS
@given(case=pointwise_case(), relu6=st.booleans(), residual=st.booleans(),
       noncontig=st.booleans())
def test_pointwise_matches_twin(case, relu6, residual, noncontig):
    n, H, W, cin, cout, dt, seed = case
    rng = np.random.default_rng(seed)
    x, w, b = _rand(rng, (n, H, W, cin), dt), _rand(rng, (cin, cout), dt), _rand(rng, cout, dt)
    res = _rand(rng, (n, H, W, cout), dt) if residual else None
    y = K.pointwise(_noncontig(x) if noncontig else x, K.pack_pointwise(w), b, relu6, res)
    x64, w64, b64 = _f64(x, w, b)
    ref = R.pointwise(x64, w64, b64, relu6, None if res is None else res.astype(np.float64))
    S = np.abs(x64) @ np.abs(w64) + np.abs(b64) + (0 if res is None else np.abs(res))
    _assert_close(y, ref, S, cin + 1, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("pixels", [1, 4, 5, 6, 11])
def test_pointwise_pixel_tails_and_out(dt, pixels):
    rng = np.random.default_rng(pixels)
    x, w, b = _rand(rng, (pixels, 7), dt), _rand(rng, (7, 33), dt), _rand(rng, 33, dt)
    out = np.full((pixels, 33), np.nan, dt)
    y = K.pointwise(x, K.pack_pointwise(w), b, False, out=out)
    assert y is out
    x64, w64, b64 = _f64(x, w, b)
    _assert_close(y, R.pointwise(x64, w64, b64, False), np.abs(x64) @ np.abs(w64) + np.abs(b64), 8, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_pointwise_inplace_residual(dt):
    rng = np.random.default_rng(0)
    x, w, b = _rand(rng, (2, 3, 4, 9), dt), _rand(rng, (9, 20), dt), _rand(rng, 20, dt)
    res = _rand(rng, (2, 3, 4, 20), dt)
    expect = K.pointwise(x, K.pack_pointwise(w), b, False, res.copy())
    got = K.pointwise(x, K.pack_pointwise(w), b, False, res, out=res)
    assert got is res
    np.testing.assert_array_equal(got, expect)


def test_pack_pointwise_roundtrip_and_keras_shape():
    w = np.arange(5 * 21, dtype=np.float32).reshape(5, 21)
    p = K.pack_pointwise(w)
    assert p.panels.shape == (2, 5, 16) and (p.cin, p.cout) == (5, 21)
    np.testing.assert_array_equal(p.unpack(), w)
    np.testing.assert_array_equal(K.pack_pointwise(w[None, None]).unpack(), w)
    assert "cout=21" in repr(p)


# --- depthwise and conv3x3 --------------------------------------------------------------------

@st.composite
def window_case(draw, channels):
    n = draw(st.integers(1, 3 if not NOJIT else 2))
    H, W = _spatial(draw, 9 if not NOJIT else 6)
    pads = draw(st.sampled_from(PADS))
    if not _valid_pads(H, W, pads):
        pads = ((1, 1), (1, 1))
    return (n, H, W, draw(st.sampled_from(channels)), draw(st.sampled_from([1, 2])), pads,
            draw(st.sampled_from(DTYPES)), draw(st.integers(0, 2**31)))


@SETTINGS
@given(case=window_case(CHANNELS), relu6=st.booleans(), noncontig=st.booleans())
def test_depthwise_matches_twin(case, relu6, noncontig):
    n, H, W, C, s, pads, dt, seed = case
    rng = np.random.default_rng(seed)
    x, w, b = _rand(rng, (n, H, W, C), dt), _rand(rng, (3, 3, C), dt), _rand(rng, C, dt)
    y = K.depthwise3x3(_noncontig(x) if noncontig else x, w, b, s, pads, relu6)
    x64, w64, b64 = _f64(x, w, b)
    ref = R.depthwise3x3(x64, w64, b64, s, pads, relu6)
    S = R.depthwise3x3(np.abs(x64), np.abs(w64), np.abs(b64), s, pads, False)
    _assert_close(y, ref, S, 9 + 2, dt)


@SETTINGS
@given(case=window_case([1, 2, 3, 5]), cout=st.sampled_from([1, 5, 16, 17, 32, 40]),
       relu6=st.booleans(), noncontig=st.booleans())
def test_conv3x3_matches_twin(case, cout, relu6, noncontig):
    n, H, W, cin, s, pads, dt, seed = case
    rng = np.random.default_rng(seed)
    x, w, b = _rand(rng, (n, H, W, cin), dt), _rand(rng, (3, 3, cin, cout), dt), _rand(rng, cout, dt)
    y = K.conv3x3(_noncontig(x) if noncontig else x, w, b, s, pads, relu6)
    x64, w64, b64 = _f64(x, w, b)
    ref = R.conv3x3(x64, w64, b64, s, pads, relu6)
    S = R.conv3x3(np.abs(x64), np.abs(w64), np.abs(b64), s, pads, False)
    _assert_close(y, ref, S, 9 * cin + 1, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("H,W,s,pads", [
    (1, 1, 1, ((1, 1), (1, 1))), (2, 2, 2, ((0, 1), (0, 1))), (2, 2, 1, ((1, 1), (1, 1))),
    (7, 7, 2, ((1, 1), (1, 1))), (8, 8, 2, ((0, 1), (0, 1))), (7, 6, 2, ((0, 1), (0, 1))),
    (3, 3, 1, ((0, 0), (0, 0))), (12, 5, 1, ((1, 1), (1, 1))),
])
def test_windows_named_geometries(dt, H, W, s, pads):
    """The geometries MobileNetV2 needs (even/odd, stride 2 with (0,1) pads, 1x1, 2x2)."""
    rng = np.random.default_rng(H * 100 + W)
    for C in (3, 17, 32):
        x, w, b = _rand(rng, (2, H, W, C), dt), _rand(rng, (3, 3, C), dt), _rand(rng, C, dt)
        x64, w64, b64 = _f64(x, w, b)
        S = R.depthwise3x3(np.abs(x64), np.abs(w64), np.abs(b64), s, pads, False)
        _assert_close(K.depthwise3x3(x, w, b, s, pads), R.depthwise3x3(x64, w64, b64, s, pads), S, 11, dt)
    x, w, b = _rand(rng, (1, H, W, 3), dt), _rand(rng, (3, 3, 3, 24), dt), _rand(rng, 24, dt)
    x64, w64, b64 = _f64(x, w, b)
    S = R.conv3x3(np.abs(x64), np.abs(w64), np.abs(b64), s, pads, False)
    _assert_close(K.conv3x3(x, w, b, s, pads), R.conv3x3(x64, w64, b64, s, pads), S, 28, dt)


def test_output_size_formula():
    x = np.zeros((1, 224, 224, 3), np.float32)
    y = K.conv3x3(x, np.zeros((3, 3, 3, 8), np.float32), np.zeros(8, np.float32), 2, ((0, 1), (0, 1)))
    assert y.shape == (1, 112, 112, 8)
    x = np.zeros((1, 7, 9, 4), np.float32)
    y = K.depthwise3x3(x, np.zeros((3, 3, 4), np.float32), np.zeros(4, np.float32), 2, ((1, 1), (0, 1)))
    assert y.shape == (1, 4, 4, 4)  # (7+2-3)//2+1, (9+1-3)//2+1


# --- ReLU6 boundaries and exact arithmetic ----------------------------------------------------

def _grid(rng, shape, lo, hi, dt, step=0.25):
    """Multiples of ``step`` (a power of 2) in [lo, hi]: products and short sums are exact
    in binary, and sums land exactly on 0 and 6 (and on 6 +- step) often."""
    return (rng.integers(round(lo / step), round(hi / step) + 1, shape) * step).astype(dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_relu6_exact_boundaries(dt):
    # 1x1 with identity weight and zero bias: pre-activation == x exactly.
    eps = np.finfo(dt).eps
    v = np.array([-1, -eps, -0.0, 0.0, eps, 1, 6 - 4 * eps, 6, 6 + 8 * eps, 7, np.inf, -np.inf], dt)
    x = v.reshape(1, 1, -1, 1)
    with np.errstate(invalid="ignore"):  # NUMBA_DISABLE_JIT: inf * 0 in unused pad lanes
        y = K.pointwise(x, K.pack_pointwise(np.ones((1, 1), dt)), np.zeros(1, dt), True)
    np.testing.assert_array_equal(y.ravel(), np.clip(v, 0, 6))
    assert y.dtype == dt
    # Exact sums hitting 0 and 6 in every kernel: results must equal the twin bit for bit.
    rng = np.random.default_rng(1)
    x = _grid(rng, (2, 6, 7, 5), -2, 3, dt, step=1)
    pw = _grid(rng, (5, 19), -1, 1, dt)
    b = _grid(rng, 19, -1, 1, dt)
    res = _grid(rng, (2, 6, 7, 19), -1, 1, dt)
    for relu6 in (True, False):
        y = K.pointwise(x, K.pack_pointwise(pw), b, relu6, res)
        np.testing.assert_array_equal(y, R.pointwise(x, pw, b, relu6, res))
    pre = R.pointwise(x, pw, b, False)
    for v in (0, 6, -0.25, 0.25, 5.75, 6.25):
        assert (pre == v).any(), v
    # Depthwise / conv: choose the bias so pixel (0, 0, 0) lands exactly on 6 (even
    # channels) or 0 (odd channels); the other pixels scatter around on the same grid.
    dw = _grid(rng, (3, 3, 5), -1, 1, dt)
    cw = _grid(rng, (3, 3, 5, 18), -1, 1, dt, step=0.125)
    for s, pads in ((1, ((1, 1), (1, 1))), (2, ((0, 1), (0, 1)))):
        for kernel, twin, w in ((K.depthwise3x3, R.depthwise3x3, dw), (K.conv3x3, R.conv3x3, cw)):
            cout = w.shape[-1]
            pre0 = twin(x, w, np.zeros(cout, dt), s, pads, False)[0, 0, 0]
            bias = np.where(np.arange(cout) % 2 == 0, 6 - pre0, -pre0).astype(dt)
            pre = twin(x, w, bias, s, pads, False)
            assert (pre[0, 0, 0, ::2] == 6).all() and (pre[0, 0, 0, 1::2] == 0).all()
            for relu6 in (True, False):
                np.testing.assert_array_equal(kernel(x, w, bias, s, pads, relu6),
                                              twin(x, w, bias, s, pads, relu6))


def test_float32_stays_float32():
    rng = np.random.default_rng(2)
    x = _rand(rng, (1, 4, 4, 16), np.float32)
    assert K.pointwise(x, K.pack_pointwise(_rand(rng, (16, 16), np.float32)),
                       np.zeros(16, np.float32), True).dtype == np.float32
    assert K.depthwise3x3(x, _rand(rng, (3, 3, 16), np.float32), np.zeros(16, np.float32), 1,
                          ((1, 1), (1, 1))).dtype == np.float32
    assert K.global_avg_pool(x).dtype == np.float32
    assert K.dense(x[:, 0, 0], np.ones((16, 3), np.float32), np.zeros(3, np.float32)).dtype == np.float32


# --- head -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 7, 7, 33), (3, 2, 5, 1)])
def test_pools(dt, shape):
    rng = np.random.default_rng(3)
    x = _rand(rng, shape, dt)
    x64 = x.astype(np.float64)
    _assert_close(K.global_avg_pool(x), R.global_avg_pool(x64),
                  R.global_avg_pool(np.abs(x64)), shape[1] * shape[2] + 1, dt)
    np.testing.assert_array_equal(K.global_max_pool(_noncontig(x)), R.global_max_pool(x))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n,cin,cout", [(1, 33, 10), (2, 7, 16), (3, 20, 64), (1, 50, 100),
                                        (2, 5, 131), (1, 1, 1), (13, 40, 200), (32, 17, 1000)])
def test_dense(dt, n, cin, cout):
    rng = np.random.default_rng(cout)
    x, w, b = _rand(rng, (n, cin), dt), _rand(rng, (cin, cout), dt), _rand(rng, cout, dt)
    x64, w64, b64 = _f64(x, w, b)
    _assert_close(K.dense(_noncontig(x), w, b), R.dense(x64, w64, b64),
                  np.abs(x64) @ np.abs(w64) + np.abs(b64), cin + 1, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_dense_rows_do_not_depend_on_the_batch(dt):
    """Small batches run row by row, large ones (>= one register tile of rows) as a pointwise
    op: the same sum order, so every row has the same bits whichever schedule computed it,
    packed or not."""
    rng = np.random.default_rng(21)
    from mnv2ref.kernels._pointwise import tile_rows

    rows = tile_rows(dt)
    x, w, b = _rand(rng, (3 * rows + 1, 70), dt), _rand(rng, (70, 1000), dt), _rand(rng, 1000, dt)
    big = K.dense(x, K.pack_pointwise(w), b)
    np.testing.assert_array_equal(big, K.dense(x, w, b))
    for i in (0, rows, 3 * rows):
        np.testing.assert_array_equal(K.dense(x[i:i + 1], w, b)[0], big[i])
    np.testing.assert_array_equal(K.dense(x[:2], K.pack_pointwise(w), b), big[:2])


# --- threads ----------------------------------------------------------------------------------

# --- the fused, banded block ------------------------------------------------------------------

@st.composite
def block_case(draw):
    n = draw(st.integers(1, 3 if not NOJIT else 2))
    H, W = _spatial(draw, 11 if not NOJIT else 6)
    s = draw(st.sampled_from([1, 2]))
    pads = ((1, 1), (1, 1)) if s == 1 else draw(st.sampled_from(PADS))
    if not _valid_pads(H, W, pads):
        pads = ((1, 1), (1, 1))
    cin = draw(st.sampled_from(CHANNELS))
    expand = draw(st.booleans())
    ce = draw(st.sampled_from([8, 16, 17, 24, 48, 40])) if expand else cin
    residual = s == 1 and draw(st.booleans())
    cout = cin if residual else draw(st.sampled_from(CHANNELS))
    band = draw(st.sampled_from([None, 1, 2, 3, 5]))
    return (n, H, W, cin, ce, cout, s, pads, expand, residual, band, draw(st.sampled_from(DTYPES)),
            draw(st.integers(0, 2**31)))


def _block_weights(rng, cin, ce, cout, expand, dt):
    we = _rand(rng, (cin, ce), dt, 0.5) if expand else None
    be = _rand(rng, ce, dt) if expand else None
    return we, be, _rand(rng, (3, 3, ce), dt), _rand(rng, ce, dt), _rand(rng, (ce, cout), dt, 0.3), \
        _rand(rng, cout, dt)


@SETTINGS
@given(case=block_case(), noncontig=st.booleans())
def test_fused_block_equals_unfused_kernels_bitwise_and_its_twin(case, noncontig):
    n, H, W, cin, ce, cout, s, pads, expand, residual, band, dt, seed = case
    rng = np.random.default_rng(seed)
    x = _rand(rng, (n, H, W, cin), dt, 2.0)
    we, be, wd, bd, wp, bp = _block_weights(rng, cin, ce, cout, expand, dt)
    pe, pp = (K.pack_pointwise(we) if expand else None), K.pack_pointwise(wp)
    y = K.expand_depthwise_project(_noncontig(x) if noncontig else x, pe, be, wd, bd, s, pads, pp, bp,
                                   residual, band)
    # Same tile code as the unfused kernels: identical bits whatever the bands and chunks.
    e = K.pointwise(x, pe, be, True) if expand else x
    d = K.depthwise3x3(e, wd, bd, s, pads, True)
    np.testing.assert_array_equal(y, K.pointwise(d, pp, bp, False, x if residual else None))
    # And close to the float64 twin: error bound from the chain on absolute values.
    ref = R.expand_depthwise_project(*_f64(x), *(None, None) if not expand else _f64(we, be), *_f64(wd, bd),
                                     s, pads, *_f64(wp, bp), residual)
    a = [None if v is None else np.abs(v.astype(np.float64)) for v in (x, we, be, wd, bd, wp, bp)]
    ea = a[0] if not expand else a[0] @ a[1] + a[2]
    S = R.depthwise3x3(ea, a[3], a[4], s, pads, False) @ a[5] + a[6] + (a[0] if residual else 0)
    _assert_close(y, ref, S, cin + 9 + ce + 4, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("H,W,s,pads", [(7, 7, 2, ((1, 1), (1, 1))), (8, 6, 2, ((0, 1), (0, 1))),
                                        (1, 1, 1, ((1, 1), (1, 1))), (2, 2, 2, ((0, 1), (0, 1))),
                                        (13, 5, 1, ((1, 1), (1, 1)))])
def test_fused_block_any_band_and_out(dt, H, W, s, pads):
    """Every band size from 1 to past the output height gives the same bits, also into ``out``."""
    rng = np.random.default_rng(H * 100 + W)
    x = _rand(rng, (2, H, W, 16), dt)
    we, be, wd, bd, wp, bp = _block_weights(rng, 16, 96, 16, True, dt)
    args = (K.pack_pointwise(we), be, wd, bd, s, pads, K.pack_pointwise(wp), bp, s == 1)
    first = K.expand_depthwise_project(x, *args, band=1)
    Ho = first.shape[1]
    for band in range(2, Ho + 3):
        np.testing.assert_array_equal(K.expand_depthwise_project(x, *args, band=band), first)
    out = np.full_like(first, np.nan)
    assert K.expand_depthwise_project(x, *args, out=out) is out
    np.testing.assert_array_equal(out, first)


@pytest.mark.skipif(NOJIT, reason="threads only exist with the JIT")
def test_results_independent_of_thread_count():
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2")
    rng = np.random.default_rng(4)
    x = _rand(rng, (1, 7, 7, 40), np.float32)
    big = _rand(rng, (2, 15, 13, 24), np.float32)
    cases = [
        lambda: K.pointwise(x, K.pack_pointwise(_rand(np.random.default_rng(5), (40, 72), np.float32)),
                            np.ones(72, np.float32), True),
        lambda: K.pointwise(big, K.pack_pointwise(_rand(np.random.default_rng(6), (24, 24), np.float32)),
                            np.ones(24, np.float32), False, big),
        lambda: K.depthwise3x3(big, _rand(np.random.default_rng(7), (3, 3, 24), np.float32),
                               np.ones(24, np.float32), 2, ((0, 1), (0, 1))),
        lambda: K.depthwise3x3(x, _rand(np.random.default_rng(7), (3, 3, 40), np.float32),
                               np.ones(40, np.float32), 1, ((1, 1), (1, 1))),
        lambda: K.conv3x3(big[..., :3], _rand(np.random.default_rng(8), (3, 3, 3, 32), np.float32),
                          np.ones(32, np.float32), 2, ((0, 1), (0, 1))),
        lambda: K.dense(x[:, 0, :2].reshape(2, 40), _rand(np.random.default_rng(9), (40, 300), np.float32),
                        np.ones(300, np.float32)),
        lambda: K.expand_depthwise_project(
            big, K.pack_pointwise(_rand(np.random.default_rng(10), (24, 144), np.float32)),
            np.ones(144, np.float32), _rand(np.random.default_rng(11), (3, 3, 144), np.float32),
            np.ones(144, np.float32), 1, ((1, 1), (1, 1)),
            K.pack_pointwise(_rand(np.random.default_rng(12), (144, 24), np.float32)), np.ones(24, np.float32),
            True, 2),
    ]
    before = K.get_num_threads()
    try:
        K.set_num_threads(1)
        one = [f() for f in cases]
        K.set_num_threads(2)
        assert K.get_num_threads() == 2
        two = [f() for f in cases]
    finally:
        K.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("nthreads", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 16, 37])
def test_work_items_own_range_first_then_taken_from_the_others(nthreads, n):
    """The engine's work hand-out (``_sync.next_item``, its Python twin; the compiled one is
    the same code on LLVM atomics): every item exactly once; a thread first gets its own
    contiguous range in order; a thread that never runs (preempted) loses nothing."""
    from mnv2ref.kernels._sync import _STRIDE, next_item

    base = 3
    sync = np.zeros(base + _STRIDE * nthreads, np.int64)
    got = {t: [] for t in range(nthreads)}
    live = set(range(nthreads))
    while live:  # round robin, each thread until it is told "none left" (n)
        for t in sorted(live):
            i = next_item(sync, (base, t, nthreads), n)
            if i == n:
                live.discard(t)
            else:
                got[t].append(i)
    assert sorted(sum(got.values(), [])) == list(range(n))
    for t in range(nthreads):
        lo, hi = t * n // nthreads, (t + 1) * n // nthreads
        mine = [lo <= i < hi for i in got[t]]
        assert mine == sorted(mine, reverse=True)  # its own items first ...
        assert got[t][:sum(mine)] == list(range(lo, lo + sum(mine)))  # ... in order
        if n % nthreads == 0:  # equal ranges, threads in lockstep: nobody needs to steal
            assert got[t] == list(range(lo, hi))
    sync[:] = 0  # thread 0 alone (the others never scheduled) still gets everything, in order
    alone = [next_item(sync, (base, 0, nthreads), n) for _ in range(n + 1)]
    assert sorted(alone[:n]) == list(range(n)) and alone[n] == n


def test_engine_pool_reraises_a_workers_error_and_keeps_working(monkeypatch):
    """A thread that fails sets the abort flag (the others leave their barrier), the caller waits
    for every worker and re-raises that error; the next run works normally."""
    import time

    from mnv2ref.kernels import _engine
    from mnv2ref.kernels._sync import _ABORT

    import threading

    last_barrier = threading.Barrier(3, timeout=10)

    def fake_run(prog, bufs, sync, tid, nthreads):  # stands in for the compiled driver
        if tid == nthreads - 1 and prog[0] == 1:
            raise ZeroDivisionError("worker failed")
        t0 = time.perf_counter()
        while prog[0] == 1 and not sync[_ABORT]:  # the caller waits in "the barrier"
            assert time.perf_counter() - t0 < 10, "the abort flag was never set"
        bufs[tid] = tid + 1
        if prog[0] == 0:  # a normal run ends at a barrier every thread passes (as _run's does)
            last_barrier.wait()

    monkeypatch.setattr(_engine, "run_function", lambda: fake_run)
    pool = _engine._Pool()
    out = [0, 0, 0]
    with pytest.raises(ZeroDivisionError, match="worker failed"):
        pool.run(np.array([1]), out, np.zeros(32, np.int64), 3)
    out[:] = [0, 0, 0]
    pool.run(np.array([0]), out, np.zeros(32, np.int64), 3)
    assert out == [1, 2, 3]  # every thread ran, and the pool keeps no reference to the run
    assert pool._job is None


@pytest.mark.parametrize("banded", [True, False])
def test_model_plan_equals_the_layer_by_layer_pass_bitwise(banded):
    """The whole forward pass as one engine program (plan traced from forward.py, tensors
    sharing one arena) gives exactly the bits of forward.py calling the checked kernels one by
    one, for 1 and 2 threads (a wrong arena overlap or work split would change them)."""
    import numba

    import mnv2ref
    from mnv2ref import forward, numba_ops

    size = 32 if NOJIT else 128  # 128: block_1 and block_2 are banded (wide tensor > 1 MiB)
    m = mnv2ref.MobileNetV2(input_shape=(size, size, 3), alpha=0.35, weights=None, banded=banded)
    x = np.random.default_rng(13).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    loop = forward.forward(x, ops=numba_ops, tap=None, **m._forward_kwargs())
    before = K.get_num_threads()
    try:
        outs = []
        for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            K.set_num_threads(n)
            outs.append(m(x))
    finally:
        K.set_num_threads(before)
    for y in outs:
        np.testing.assert_array_equal(y, loop)
    plan = m.compile(batch_size=2)
    from mnv2ref.kernels._program import OP_BLOCK
    assert (plan.program.prog[:, 0] == OP_BLOCK).any() == (banded and not NOJIT)
    assert plan.program.arena.nbytes < 4 * sum(np.prod(l.shape) for l in m.layers()) * 2  # tensors share memory


def test_set_num_threads_rejects_bad_values():
    for bad in (0, -1, 1.5, True, 10**6):
        with pytest.raises(ValueError, match="n:"):
            K.set_num_threads(bad)


# --- wrapper errors ---------------------------------------------------------------------------

F32, F64 = np.float32, np.float64


def _z(shape, dt=F32):
    return np.zeros(shape, dt)


@pytest.mark.parametrize("call,match", [
    (lambda: K.pointwise(_z((1, 2, 2, 3)), K.pack_pointwise(_z((3, 4))), _z(4, F64), True), "bias"),
    (lambda: K.pointwise(_z((1, 2, 2, 3), F64), K.pack_pointwise(_z((3, 4))), _z(4, F64), True), "packed"),
    (lambda: K.pointwise(_z((1, 2, 2, 5)), K.pack_pointwise(_z((3, 4))), _z(4), True), r"x: .*Cin=3"),
    (lambda: K.pointwise(_z((1, 2, 2, 3)), K.pack_pointwise(_z((3, 4))), _z(5), True), r"bias: .*\(4,\)"),
    (lambda: K.pointwise(_z((1, 2, 2, 3)), _z((3, 4)), _z(4), True), "packed"),
    (lambda: K.pointwise(_z((1, 2, 2, 3)), K.pack_pointwise(_z((3, 4))), _z(4), True, _z((1, 2, 2, 5))), "residual"),
    (lambda: K.pointwise(_z((1, 2, 2, 3)).astype(np.int32), K.pack_pointwise(_z((3, 4))), _z(4), True), "x: dtype"),
    (lambda: K.pointwise(_z((1, 2, 2, 3)), K.pack_pointwise(_z((3, 4))), _z(4), True, None, _z((1, 2, 2, 3))), "out"),
    (lambda: K.pack_pointwise(_z((2, 3, 4))), "w"),
    (lambda: K.pack_pointwise([[1.0]]), "w"),
    (lambda: K.depthwise3x3(_z((1, 4, 4, 3)), _z((3, 3, 4)), _z(3), 1, ((1, 1), (1, 1))), r"w: .*\(3, 3, 3\)"),
    (lambda: K.depthwise3x3(_z((1, 4, 4, 3)), _z((3, 3, 3), F64), _z(3), 1, ((1, 1), (1, 1))), "w: dtype"),
    (lambda: K.depthwise3x3(_z((1, 4, 4, 3)), _z((3, 3, 3)), _z(3), 3, ((1, 1), (1, 1))), "stride"),
    (lambda: K.depthwise3x3(_z((1, 4, 4, 3)), _z((3, 3, 3)), _z(3), 1, ((1, -1), (1, 1))), "pads"),
    (lambda: K.depthwise3x3(_z((1, 4, 4, 3)), _z((3, 3, 3)), _z(3), 1, (1, 1)), "pads"),
    (lambda: K.depthwise3x3(_z((1, 1, 4, 3)), _z((3, 3, 3)), _z(3), 1, ((0, 0), (1, 1))), "x \\(height\\)"),
    (lambda: K.depthwise3x3(_z((4, 4, 3)), _z((3, 3, 3)), _z(3), 1, ((1, 1), (1, 1))), "x: expected a 4-D"),
    (lambda: K.conv3x3(_z((1, 4, 4, 3)), _z((3, 3, 2, 8)), _z(8), 2, ((0, 1), (0, 1))), r"w: .*Cin=3"),
    (lambda: K.conv3x3(_z((1, 4, 4, 3)), _z((3, 3, 3, 8)), _z(7), 2, ((0, 1), (0, 1))), "bias"),
    (lambda: K.dense(_z((2, 3)), _z((4, 5)), _z(5)), "w: .*Cin=3"),
    (lambda: K.dense(_z((2, 3)), _z((3, 5)), _z(5, F64)), "bias: dtype"),
    (lambda: K.global_avg_pool(_z((2, 3))), "x: expected a 4-D"),
    (lambda: K.expand_depthwise_project(_z((1, 4, 4, 3)), K.pack_pointwise(_z((4, 8))), _z(8), _z((3, 3, 8)), _z(8),
                                        1, ((1, 1), (1, 1)), K.pack_pointwise(_z((8, 3))), _z(3)), r"expand: .*Cin=4"),
    (lambda: K.expand_depthwise_project(_z((1, 4, 4, 3)), None, _z(3), _z((3, 3, 3)), _z(3),
                                        1, ((1, 1), (1, 1)), K.pack_pointwise(_z((3, 3))), _z(3)), "expand_bias"),
    (lambda: K.expand_depthwise_project(_z((1, 4, 4, 3)), None, None, _z((3, 3, 3)), _z(3),
                                        1, ((1, 1), (1, 1)), K.pack_pointwise(_z((5, 3))), _z(3)), r"project: .*Cin=5"),
    (lambda: K.expand_depthwise_project(_z((1, 4, 4, 3)), None, None, _z((3, 3, 3)), _z(3),
                                        2, ((0, 1), (0, 1)), K.pack_pointwise(_z((3, 3))), _z(3), True),
     r"residual: .*\(1, 2, 2, 3\)"),
    (lambda: K.expand_depthwise_project(_z((1, 4, 4, 3)), None, None, _z((3, 3, 3)), _z(3),
                                        1, ((1, 1), (1, 1)), K.pack_pointwise(_z((3, 3))), _z(3), False, 0), "band"),
    (lambda: K.expand_depthwise_project(_z((1, 4, 4, 3)), None, None, _z((3, 3, 3)), _z(3),
                                        1, ((1, 1), (1, 1)), _z((3, 3)), _z(3)), "project: expected the result"),
    (lambda: K.global_max_pool(_z((2, 0, 3, 1))), "x: spatial"),
])
def test_wrapper_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- compilation hygiene (subprocesses, JIT only) ---------------------------------------------

def _run(code, **env):
    full_env = dict(os.environ, **env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=full_env, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_compiles_nothing_and_keeps_numba_config():
    _run("""
        import numba
        slp = numba.config.SLP_VECTORIZE
        import mnv2ref.kernels as K
        from mnv2ref.kernels import _pointwise, _depthwise, _conv, _block, _head, _engine, _sync, _lanes
        assert numba.config.SLP_VECTORIZE == slp
        for mod in (_pointwise, _depthwise, _conv, _block, _head, _engine, _sync, _lanes):
            for name in dir(mod):
                f = getattr(mod, name)
                if hasattr(f, "signatures"):
                    assert not f.signatures, name
        from mnv2ref.kernels import _leaf
        assert len(_leaf.leaves()) >= 15
        for lf in _leaf.leaves():  # the leaves' dispatchers are not even created
            assert lf._dispatcher is None, lf.name
    """)


# Any x86 spelling of an FMA: vfmadd/vfmsub/vfnmadd/vfnmsub with 132/213/231, packed (ps/pd) or
# scalar (ss/sd), with a register, memory or broadcast ({1to16}) operand, on xmm, ymm or zmm.
_FMA = r"^\s*vfn?m(?:add|sub)(?:132|213|231)(p|s)[sd]\s+(.*)$"

_FMA_PROBE = """
    import re, sys, numba, numpy as np
    from mnv2ref.kernels import _config, _pointwise as P
    before = numba.config.SLP_VECTORIZE
    f = np.float32
    # The float32 tile exactly as the engine calls it (compiled only: the target may not be
    # this machine's CPU).
    args = (np.ones((7, 9), f), np.ones((9, 16), f), np.zeros(16, f), np.zeros((0, 0), f),
            np.zeros((7, 16), f), 0, 7, 0, 16, 1)
    D = P.TILE_F32.leaf.dispatcher()  # the tile is a leaf (_leaf.py), compiled on its own
    _config.ensure_compiled(D, args)
    assert numba.config.SLP_VECTORIZE == before
    if sys.argv[-1] == "run":  # and end to end through the engine, on this machine
        import mnv2ref.kernels as K
        y = K.pointwise(np.ones((7, 9), f), K.pack_pointwise(np.ones((9, 16), f)), np.zeros(16, f), True)
        assert (y == 6).all()
    asm = D.inspect_asm(D.signatures[0])
    fmas = re.findall(%r, asm, re.M)
    print(D.py_func.__name__, sum(k == "p" for k, _ in fmas), sum(k == "s" for k, _ in fmas),
          sum("zmm" in ops for k, ops in fmas if k == "p"), int("zmm" in asm))
""" % _FMA

# An AVX-512 target that any x86 LLVM can compile for (nothing is run).
_AVX512 = dict(NUMBA_CPU_NAME="skylake-avx512",
               NUMBA_CPU_FEATURES="+avx512f,+avx512dq,+avx512bw,+avx512vl,+avx512cd,+avx2,+avx,+fma,+f16c,"
                                  "+bmi,+bmi2,+lzcnt,+popcnt,+movbe,+sse4.2,+sse4.1,+ssse3,+sse3,+sse2,+sse,"
                                  "+cx16,+64bit")


def _fma_counts(tmp_path, *argv, **env):
    """(tile name, packed FMAs, scalar FMAs, packed FMAs on zmm, any zmm at all) of the float32
    pointwise tile, compiled in a fresh process with an empty cache and Numba's SLP setting off."""
    full_env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_SLP_VECTORIZE="0", **env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_FMA_PROBE), *argv], capture_output=True,
                         text=True, env=full_env, timeout=600)
    assert out.returncode == 0, out.stderr
    name, *counts = out.stdout.split()
    return (name, *map(int, counts))


@pytest.mark.slow
@pytest.mark.skipif(NOJIT, reason="inspects generated machine code")
def test_cold_compile_uses_packed_fma(tmp_path):
    """Fresh process, empty cache, this machine's CPU: the pointwise hot loop is packed FMAs
    (any operand form, ymm or zmm), never scalar ones, and the global setting is restored."""
    name, packed, scalar, _, _ = _fma_counts(tmp_path, "run")
    assert packed >= 5 and scalar == 0, (name, packed, scalar)


@pytest.mark.slow
@pytest.mark.skipif(NOJIT, reason="inspects generated machine code")
def test_avx2_target_gets_the_ymm_tile(tmp_path):
    """An AVX2 target (Haswell: 16 ymm registers), whatever the host: 5-pixel tiles whose 5 x 2
    ymm accumulators are packed FMAs, no zmm register anywhere, no scalar FMA."""
    name, packed, scalar, zmm_fmas, any_zmm = _fma_counts(tmp_path, NUMBA_CPU_NAME="haswell",
                                                          NUMBA_CPU_FEATURES="")
    assert name == "block5" and packed >= 10 and scalar == 0 and zmm_fmas == 0 and not any_zmm, \
        (name, packed, scalar, zmm_fmas, any_zmm)


@pytest.mark.slow
@pytest.mark.skipif(NOJIT, reason="inspects generated machine code")
def test_avx512_target_gets_the_zmm_tile(tmp_path):
    """An AVX-512 target (32 zmm registers), whatever the host: 12-pixel tiles, i.e. 12 zmm
    accumulators of packed FMAs (at least the 8 that two FMA units of latency 4 need)."""
    name, packed, scalar, zmm_fmas, _ = _fma_counts(tmp_path, **_AVX512)
    assert name == "block12" and zmm_fmas >= 12 and scalar == 0, (name, packed, scalar, zmm_fmas)


@pytest.mark.slow
@pytest.mark.skipif(NOJIT, reason="inspects Numba's on-disk cache")
def test_a_second_process_compiles_nothing(tmp_path):
    """Warm start: what one process compiled, the next loads from the cache (no cache miss).
    (A function-typed kernel argument once made every process recompile for 11 s.) The three
    kernel calls run through one compiled engine function (``_engine.run_function()``)."""
    code = """
        import numpy as np
        import mnv2ref.kernels as K
        from mnv2ref.kernels import _block, _pointwise, _depthwise
        f = np.float32
        x = np.ones((1, 6, 5, 8), f)
        K.expand_depthwise_project(x, K.pack_pointwise(np.ones((8, 48), f)), np.zeros(48, f),
                                   np.ones((3, 3, 48), f), np.zeros(48, f), 1, ((1, 1), (1, 1)),
                                   K.pack_pointwise(np.ones((48, 8), f)), np.zeros(8, f), True)
        K.pointwise(x, K.pack_pointwise(np.ones((8, 16), f)), np.zeros(16, f), True)
        K.depthwise3x3(x, np.ones((3, 3, 8), f), np.zeros(8, f), 2, ((0, 1), (0, 1)))
        from mnv2ref.kernels import _conv, _head, _engine, _leaf
        run = _engine.run_function()
        leaves = [lf.dispatcher() for lf in _leaf.leaves() if np.dtype(f) in lf.dtypes]
        # Callees of leaves (linked into the one leaf that calls them), compiled in this process:
        others = [f for mod in (_block, _pointwise, _depthwise, _conv, _head) for f in vars(mod).values()
                  if hasattr(f, "signatures") and f.signatures]
        print(sum(d.stats.cache_misses.get(s, 0) for d in [run] + leaves for s in d.signatures),
              sum(d.stats.cache_hits.get(s, 0) for d in [run] + leaves for s in d.signatures),
              len(leaves), max(len(d.signatures) for d in leaves), len(others),
              max((len(f.signatures) for f in others), default=0))
    """
    one = dict(NUMBA_CACHE_DIR=str(tmp_path), MNV2REF_COMPILE_JOBS="1")  # all in this process
    first = _run(code, **one).split()
    second = _run(code, **one).split()
    nleaves = first[2]
    assert first[0] == str(int(nleaves) + 1), first  # the first process compiled engine + leaves
    # ... each leaf once, one signature each: a literal argument (0, True) would compile a second copy.
    assert first[3] == "1" and first[5] == "1", first
    # The second loads the engine and every leaf from the cache and compiles nothing at all.
    assert second == ["0", str(int(nleaves) + 1), nleaves, "1", "0", "0"], second


_BLOCK_PROBE = """
    import hashlib, sys
    import numpy as np
    import mnv2ref.kernels as K
    from mnv2ref.kernels import _engine, _jobs, _leaf
    if sys.argv[-1] == "failing-helpers":  # every helper exits at once, before compiling anything
        import subprocess

        class Dead(_jobs._Helper):
            def __init__(self, dtype, shares):
                self.proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                self.alive = True

        _jobs._Helper = Dead
    f = np.float32
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 9, 7, 24)).astype(f)
    y = K.expand_depthwise_project(x, K.pack_pointwise(rng.standard_normal((24, 72)).astype(f)),
                                   rng.standard_normal(72).astype(f), rng.standard_normal((3, 3, 72)).astype(f),
                                   rng.standard_normal(72).astype(f), 1, ((1, 1), (1, 1)),
                                   K.pack_pointwise(rng.standard_normal((72, 24)).astype(f)),
                                   rng.standard_normal(24).astype(f), True)
    leaves = [lf.dispatcher() for lf in _leaf.leaves() if np.dtype(f) in lf.dtypes]
    misses = sum(d.stats.cache_misses.get(s, 0) for d in leaves for s in d.signatures)
    print(hashlib.sha256(y.tobytes()).hexdigest(), misses, len(leaves),
          sum(_engine.run_function().stats.cache_misses.values()))
"""


def _probe(*argv, **env):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_BLOCK_PROBE), *argv], capture_output=True,
                         text=True, env=dict(os.environ, **env), timeout=600)
    assert out.returncode == 0, out.stderr  # (a missing leaf symbol would abort the process)
    digest, *counts = out.stdout.split()
    return (digest, *map(int, counts))


@pytest.mark.slow
@pytest.mark.skipif(NOJIT, reason="Numba's compile and on-disk cache")
def test_cold_compile_in_helper_processes_and_a_lost_leaf(tmp_path):
    """With 2 compile jobs a helper process compiles part of the leaves into the cache (this
    process compiles fewer than all of them) and the results are the usual bits. Then one
    leaf's cache entry is deleted: the next process recompiles just that leaf, and the cached
    engine and leaves, which call it by its symbol name, still find it (Numba's own mangled
    names are numbered per process; a missing symbol is a fatal LLVM error)."""
    want = _probe(MNV2REF_COMPILE_JOBS="1", NUMBA_CACHE_DIR=str(tmp_path / "ref"))[0]
    cache = str(tmp_path / "cache")
    digest, misses, nleaves, engine = _probe(MNV2REF_COMPILE_JOBS="2", NUMBA_CACHE_DIR=cache)
    assert digest == want and 0 < misses < nleaves and engine == 1, (misses, nleaves, engine)
    lost = [p for p in (tmp_path / "cache").rglob("*") if "_strips-" in p.name]
    assert lost, sorted(p.name for p in (tmp_path / "cache").rglob("*"))
    for p in lost:
        p.unlink()
    assert _probe(MNV2REF_COMPILE_JOBS="2", NUMBA_CACHE_DIR=cache) == (want, 1, nleaves, 0)


@pytest.mark.slow
@pytest.mark.skipif(NOJIT, reason="Numba's compile and on-disk cache")
def test_cold_compile_when_helpers_fail(tmp_path):
    """Helpers that die at once change nothing but the time: this process compiles every leaf
    itself, with the same bits."""
    want = _probe(MNV2REF_COMPILE_JOBS="1", NUMBA_CACHE_DIR=str(tmp_path / "ref"))[0]
    digest, misses, nleaves, engine = _probe("failing-helpers", MNV2REF_COMPILE_JOBS="2",
                                             NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert (digest, misses, engine) == (want, nleaves, 1), (misses, nleaves)


def test_compile_jobs_setting(monkeypatch):
    from mnv2ref.kernels import _jobs

    monkeypatch.setenv("MNV2REF_COMPILE_JOBS", "3")
    assert _jobs.jobs() == 3
    monkeypatch.setenv("MNV2REF_COMPILE_JOBS", "many")
    with pytest.raises(ValueError, match="MNV2REF_COMPILE_JOBS"):
        _jobs.jobs()
    monkeypatch.delenv("MNV2REF_COMPILE_JOBS")
    assert 1 <= _jobs.jobs() <= 4


def test_small_program_keeps_the_faster_thread_count():
    """A program under ``serial_below`` alternates 1 and N threads over its first calls (real
    calls: every result the same bits), then keeps the count with the lower median time."""
    from mnv2ref.kernels import _plan

    assert _plan.faster({1: [3.0, 1.0, 2.0], 2: [1.5, 1.5, 9.0]}) == 2
    assert _plan.faster({1: [1.0, 1.0], 2: [1.0, 1.0]}) == 1  # a tie: fewer threads
    rng = np.random.default_rng(3)
    f = np.float32
    plan = K.Plan(f, nthreads=2)
    x = plan.input((1, 9, 9, 16))
    y = plan.pointwise(x, K.pack_pointwise(rng.standard_normal((16, 24)).astype(f)),
                       rng.standard_normal(24).astype(f), True)
    prog = plan.compile(y, serial_below=10 ** 9)
    assert prog.threads_probe == {1: [], 2: []}
    data = rng.standard_normal((1, 9, 9, 16)).astype(f)
    outs = [prog(data) for _ in range(2 * _plan._PROBE_CALLS + 2)]
    assert prog.threads_probe is None and prog.nthreads in (1, 2)
    assert all(np.array_equal(o, outs[0]) for o in outs)
    big = plan.compile(y, serial_below=0)  # at or above the bound: all threads, no probe
    assert big.threads_probe is None and big.nthreads == 2

"""audiogen_core.fastmath: the multiply-add transcendental functions used on MLX's CPU backend
(whose own exp / tanh / sigmoid are scalar libm calls) against numpy in float64, and the CPU
attention against MLX's SDPA."""

from __future__ import annotations

from audiogen_core import fastmath

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest


def _f64(x: mx.array) -> np.ndarray:
    return np.array(x).astype(np.float64)


def test_exp_tanh_sigmoid_match_numpy_to_float32_precision() -> None:
    x = mx.linspace(-87.0, 88.0, 400_001)
    got = _f64(mx.compile(fastmath.exp_poly)(x))
    ref = np.exp(_f64(x))
    assert np.max(np.abs(got - ref) / ref) < 2e-7
    y = mx.linspace(-20.0, 20.0, 200_001)
    assert np.max(np.abs(_f64(fastmath.tanh_rational(y)) - np.tanh(_f64(y)))) < 5e-7
    sig = 1 / (1 + np.exp(-_f64(y)))
    assert np.max(np.abs(_f64(fastmath.sigmoid_rational(y)) - sig)) < 5e-7
    # Saturation: exactly bounded, no NaN or overflow at the extremes.
    big = mx.array([-1e30, -100.0, 100.0, 1e30])
    np.testing.assert_array_equal(np.array(fastmath.tanh_rational(big)), [-1, -1, 1, 1])
    assert np.isfinite(np.array(fastmath.exp_poly(mx.array([-1e30, -200.0])))).all()


def test_silu_and_swiglu_match_mlx() -> None:
    rng = np.random.default_rng(0)
    h = mx.array(rng.standard_normal((7, 300)).astype(np.float32) * 5)
    g = mx.array(rng.standard_normal((7, 300)).astype(np.float32) * 5)
    np.testing.assert_allclose(np.array(fastmath.silu_fast(g)), np.array(nn.silu(g)), atol=3e-6)
    np.testing.assert_allclose(
        np.array(fastmath.swiglu_fast(h, g)), np.array(h * nn.silu(g)), atol=2e-5, rtol=1e-6
    )


@pytest.mark.parametrize(("heads", "kv_heads", "masked"), [(8, 8, False), (24, 12, True)])
def test_attention_cpu_matches_sdpa(heads: int, kv_heads: int, masked: bool) -> None:
    rng = np.random.default_rng(heads)
    q = mx.array(rng.standard_normal((2, heads, 33, 16)).astype(np.float32))
    k = mx.array(rng.standard_normal((2, kv_heads, 17, 16)).astype(np.float32))
    v = mx.array(rng.standard_normal((2, kv_heads, 17, 16)).astype(np.float32))
    mask = None
    if masked:
        keep = rng.random((2, 1, 1, 17)) > 0.3
        keep[..., 0] = True
        mask = mx.array(np.where(keep, 0.0, -np.inf).astype(np.float32))
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
    got = fastmath.attention_cpu(q, k, v, 0.25, mask)
    np.testing.assert_allclose(np.array(got), np.array(ref), atol=2e-6)

"""The fused CUDA decode step (``audiogen_musicgen.cuda_step`` and
``MusicGenDecoder.fused_step``) against MLX's own unfused graph on the same GPU.

These kernels exist only on MLX's CUDA backend, so the module is skipped on any other machine
(CI's included: it has no GPU); it ran on an H100 through the ``device`` tool, with the results
in the issue notes. The unfused graph it is compared with is itself proven against transformers
by the CPU tests (test_decoder.py).
"""

from __future__ import annotations

import os

import audiogen_core  # noqa: F401  - before mlx

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from audiogen_musicgen import cuda_step
from audiogen_musicgen.config import DecoderConfig
from audiogen_musicgen.decoder import MusicGenDecoder
from audiogen_musicgen.sampling import generate_codes

# float32 references without TF32 (read by MLX at its first float32 matmul on the GPU).
os.environ.setdefault("MLX_ENABLE_TF32", "0")

pytestmark = pytest.mark.skipif(
    not cuda_step.available(), reason="fused CUDA kernels: needs MLX's CUDA backend and a GPU"
)

DTYPES = {
    "float32": (mx.float32, 2e-5),
    "float16": (mx.float16, 1e-2),
    "bfloat16": (mx.bfloat16, 5e-2),
}


def _rel(got: mx.array, ref: mx.array) -> float:
    g = np.array(got.astype(mx.float32))
    r = np.array(ref.astype(mx.float32))
    assert np.isfinite(g).all(), "non-finite output"
    return float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-6))


def _rand(shape: tuple[int, ...], dtype: mx.Dtype, scale: float = 1.0) -> mx.array:
    return (mx.random.normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize(
    "dtype,rows,k,n",
    [
        ("float32", 2, 520, 77),
        ("float32", 8, 520, 77),
        ("float16", 1, 1024, 3072),
        ("float16", 2, 520, 77),
        ("float16", 8, 520, 77),
        ("bfloat16", 5, 520, 77),
    ],
)
def test_gemv_variants_match_mlx(dtype: str, rows: int, k: int, n: int) -> None:
    """Each prologue / epilogue against MLX's unfused ops (float32 references without TF32: the
    module sets MLX_ENABLE_TF32=0, else cuBLAS rounds float32 operands to 10 bits)."""
    dt, tol = DTYPES[dtype]
    mx.random.seed(rows * 7 + n)
    x = _rand((rows, k), dt)
    w = _rand((n, k), dt, k**-0.5)
    g, b = _rand((k,), dt, 0.5) + 1, _rand((k,), dt, 0.1)
    res = _rand((rows, n), dt)
    ln = mx.fast.layer_norm(x, g, b, 1e-5)
    cases = {
        "plain": (cuda_step.gemv(x, w), x @ w.T),
        "norm": (cuda_step.gemv(x, w, norm=(g, b, 1e-5)), ln @ w.T),
        "norm+gelu": (
            cuda_step.gemv(x, w, norm=(g, b, 1e-5), activation="gelu"),
            nn.gelu((ln @ w.T).astype(dt)),
        ),
        "residual": (cuda_step.gemv(x, w, residual=res), res + x @ w.T),
    }
    wb = _rand((rows, n, k), dt, k**-0.5)
    cases["per_row+norm"] = (
        cuda_step.gemv(x, wb, norm=(g, b, 1e-5), per_row=True),
        (ln[:, None, :] @ wb.swapaxes(-1, -2))[:, 0],
    )
    for name, (got, ref) in cases.items():
        err = _rel(got, ref)
        assert got.shape == ref.shape and err <= tol, f"{name}: {err:.2e}"


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch,max_len", [(1, 300), (8, 300), (2, 37)])
def test_attention_writes_the_cache_in_place_and_matches_sdpa(
    dtype: str, batch: int, max_len: int
) -> None:
    """The kernel writes this step's k / v (from qkv) at ``offset`` into the cache it was given
    and attends over positions 0 .. offset; what lies past the offset is never read. Batch and
    cache length are run-time values: one compiled kernel serves all of these shapes."""
    dt, tol = DTYPES[dtype]
    heads, hd = 16, 64
    mx.random.seed(batch + max_len)
    kv = _rand((2, batch, heads, max_len, hd), dt)
    mx.eval(kv)
    for offset in sorted({0, 1, max_len // 2, max_len - 1}):
        qkv = _rand((batch, 3 * heads * hd), dt)
        parts = qkv.reshape(batch, 3, heads, 1, hd)
        before = np.array(kv.astype(mx.float32))
        got = cuda_step.attention(qkv, kv, mx.array([offset], mx.int32))
        mx.eval(got)
        after = np.array(kv.astype(mx.float32))
        # Position `offset` now holds this step's keys / values, nothing else changed.
        new = np.array(mx.stack([parts[:, 1], parts[:, 2]]).astype(mx.float32))[:, :, :, 0]
        np.testing.assert_array_equal(after[:, :, :, offset], new)
        untouched = np.delete(np.arange(max_len), offset)
        np.testing.assert_array_equal(after[:, :, :, untouched], before[:, :, :, untouched])
        ref = mx.fast.scaled_dot_product_attention(
            parts[:, 0], kv[0, :, :, : offset + 1], kv[1, :, :, : offset + 1], scale=hd**-0.5
        )
        err = _rel(got, ref.reshape(batch, heads * hd))
        assert err <= tol, f"offset {offset}: {err:.2e}"


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("s", [20, 44])
def test_folded_cross_matches_softmax_and_product(dtype: str, masked: bool, s: int) -> None:
    """Prompt length ``s`` is a run-time value of the kernel (one compile for both)."""
    dt, tol = DTYPES[dtype]
    batch, heads, n = 4, 16, 1024
    mx.random.seed(3 + s)
    scores = _rand((batch, heads * s), dt, 3.0)
    vwt = _rand((batch, n, heads * s), dt, 0.2)
    res = _rand((batch, n), dt)
    mask = None
    sc = scores.reshape(batch, heads, s)
    if masked:
        keep = mx.array(np.arange(s)[None, :] < np.array([[s], [7], [1], [13]]))
        mask = mx.where(keep, mx.array(0.0, dt), mx.array(mx.finfo(dt).min, dt))
        sc = sc + mask[:, None, :]
    p = mx.softmax(sc, axis=-1, precise=True).reshape(batch, 1, -1)
    ref = res + (p @ vwt.swapaxes(-1, -2))[:, 0]
    got = cuda_step.folded_cross(scores, vwt, res, heads, mask)
    assert _rel(got, ref) <= tol


def _decoder(layers: int, width: int, *, cross: bool = True, dtype: mx.Dtype) -> MusicGenDecoder:
    cfg = DecoderConfig.from_dict(
        {
            "hidden_size": width,
            "num_hidden_layers": layers,
            "num_attention_heads": width // 64,
            "ffn_dim": 4 * width,
            "num_codebooks": 4,
            "vocab_size": 256,
            "pad_token_id": 256,  # upstream: pad = bos = vocab_size (the tables' extra row)
            "bos_token_id": 256,
            "cross_attention": cross,
        }
    )
    mx.random.seed(layers + width)
    dec = MusicGenDecoder(cfg)
    # Non-trivial LayerNorm parameters, so a wrong fusion of the norms cannot hide.
    for _, module in dec.named_modules():
        if isinstance(module, nn.LayerNorm):
            module.weight = mx.random.uniform(0.5, 1.5, (width,))
            module.bias = mx.random.normal((width,)) * 0.1
    dec.set_dtype(dtype)
    mx.eval(dec.parameters())
    return dec


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("prompt", ["folded", "unfolded", "padded", "prefix"])
def test_fused_step_matches_static_step(dtype: str, prompt: str) -> None:
    dt, tol = DTYPES[dtype]
    dec = _decoder(3, 256, cross=prompt != "prefix", dtype=dt)
    batch, steps = 4, 12
    if prompt == "prefix":
        cache = dec.make_cache(None, None, 64, batch=batch)
    else:
        # 4 heads: folded while 4·S <= 256; heads·S a whole number of 16-byte vectors.
        s = {"folded": 4, "unfolded": 70, "padded": 4}[prompt]
        states = _rand((batch, s, 256), dt)
        mask = mx.ones((batch, s), mx.int32)
        if prompt == "padded":
            mask = mx.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], mx.int32)
        cache = dec.make_cache(states, mask, 64)
        folded = cache.cross_kv[0][0].ndim == 3
        assert folded == (prompt != "unfolded")
    assert dec.can_fuse(cache)
    kv_fused = [mx.zeros_like(kv) for kv in cache.kv]  # written in place by the fused step
    kv_ref = list(cache.kv)
    mx.eval(kv_fused)
    for t in range(steps):
        ids = mx.array(np.random.default_rng(t).integers(0, 256, (batch, 4, 1)), mx.int32)
        offset = mx.array([t], mx.int32)
        got = dec.fused_step(ids, offset, kv_fused, cache.cross_kv, cache.cross_mask)
        ref, kv_ref = dec.static_step(ids, offset, kv_ref, cache.cross_kv, cache.cross_mask)
        assert got.shape == ref.shape
        err = _rel(got, ref)
        assert err <= tol, f"step {t}: {err:.2e}"
        for layer, (a, r) in enumerate(zip(kv_fused, kv_ref, strict=True)):
            err = _rel(a[:, :, :, : t + 1], r[:, :, :, : t + 1])
            assert err <= tol, f"step {t} cache of layer {layer}: {err:.2e}"


def test_generate_codes_fused_equals_eager_greedy() -> None:
    dec = _decoder(2, 128, dtype=mx.float32)
    states = _rand((2, 4, 128), mx.float32)
    mask = mx.array([[1, 1, 1, 1], [1, 1, 0, 0]], mx.int32)
    cache = dec.make_cache(
        mx.concatenate([states, mx.zeros_like(states)]), mx.concatenate([mask, mask * 0]), 8
    )
    assert dec.can_fuse(cache)
    fused = generate_codes(dec, states, mask, 40, greedy=True)  # static=None: fused on CUDA
    eager = generate_codes(dec, states, mask, 40, greedy=True, static=False)
    np.testing.assert_array_equal(np.array(fused), np.array(eager))


def test_generate_codes_fused_equals_eager_greedy_with_a_prefix() -> None:
    """Melody / style: the first step runs eagerly with the prefix (a functional cache write),
    the fused steps then write the same caches in place."""
    dec = _decoder(2, 128, cross=False, dtype=mx.float32)
    prefix = [_rand((2, 5, 128), mx.float32) for _ in range(3)]
    assert dec.can_fuse(dec.make_cache(None, None, 8, batch=4))
    for beta in (None, 5.0):  # CFG over [cond, uncond]; double guidance over three prefixes
        kwargs: dict = {"prefix": prefix, "beta": beta, "greedy": True}
        fused = generate_codes(dec, None, None, 30, **kwargs)
        eager = generate_codes(dec, None, None, 30, static=False, **kwargs)
        np.testing.assert_array_equal(np.array(fused), np.array(eager))


def test_quantized_weights_are_not_fused() -> None:
    dec = _decoder(1, 128, dtype=mx.float16)
    nn.quantize(
        dec,
        group_size=64,
        bits=8,
        class_predicate=lambda _, m: isinstance(m, nn.Linear) and m.weight.shape[1] % 64 == 0,
    )
    states = _rand((2, 4, 128), mx.float16)
    cache = dec.make_cache(states, None, 8)
    assert not dec.can_fuse(cache)


if __name__ == "__main__":  # the device machine may lack pytest's plugins: run as a script too
    raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

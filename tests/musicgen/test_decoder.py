"""MusicGen decoder vs transformers' ``MusicgenForConditionalGeneration`` (decoder side).

Fixture tests (no torch) use tests/fixtures/musicgen_decoder (tools/fixtures/musicgen_decoder.py):
teacher-forcing logits, the raw per-step logits of a greedy CFG-3.0 generation replayed through
our KV cache, and the generated codes themselves, mono and stereo, on a padded two-prompt batch.
Live tests rebuild fresh random models with torch and compare the same way.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import InvalidInputError, MissingWeightsError
from audiogen_core.weights import load_safetensors

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from audiogen_musicgen.config import DecoderConfig
from audiogen_musicgen.decoder import KVCache, MusicGenDecoder, _sinusoids
from audiogen_musicgen.sampling import delay_codes, generate_codes
from audiogen_musicgen.weights import load_decoder, sanitize

ATOL = 1e-4  # logits, float32
ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("mono", "stereo")


def _builder() -> ModuleType:
    """The fixture builder, whose tiny-model factory the live tests reuse."""
    path = ROOT / "tools" / "fixtures" / "musicgen_decoder.py"
    spec = importlib.util.spec_from_file_location("musicgen_decoder_builder", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load_fixture(fixtures_dir: Path, name: str) -> tuple[MusicGenDecoder, dict[str, np.ndarray]]:
    d = fixtures_dir / "musicgen_decoder" / name
    config = DecoderConfig.from_composite(json.loads((d / "config.json").read_text()))
    path = d / "decoder.safetensors"
    model = load_decoder(config, load_safetensors(path), source=str(path))
    with np.load(d / "data.npz") as z:
        data = {k: z[k] for k in z.files}
    return model, data


def _replay_logits(
    model: MusicGenDecoder, states: mx.array, mask: mx.array, codes: np.ndarray
) -> np.ndarray:
    """Feed the delayed sequence of ``codes`` one step at a time through the KV cache on the CFG
    batch [cond; uncond]: the raw logits (steps, 2B, K, V) generation saw."""
    config = model.config
    seq = delay_codes(codes, config.codebook_delays, config.pad_token_id)
    steps = seq.shape[-1] - 1
    cache = model.make_cache(
        mx.concatenate([states, mx.zeros_like(states)]),
        mx.concatenate([mask, mx.zeros_like(mask)]),
        steps,
    )
    out = []
    for t in range(steps):
        tokens = mx.array(seq[..., t : t + 1])
        out.append(model.step(mx.concatenate([tokens, tokens]), cache)[:, :, 0])
    return np.array(mx.stack(out))


@pytest.mark.parametrize("name", VARIANTS)
def test_teacher_forcing_logits_match_transformers(fixtures_dir: Path, name: str) -> None:
    model, data = _load_fixture(fixtures_dir, name)
    logits = model(
        mx.array(data["tf_input_ids"]),
        mx.array(data["encoder_hidden_states"]),
        mx.array(data["attention_mask"]),
    )
    assert logits.shape == data["tf_logits"].shape
    np.testing.assert_allclose(np.array(logits), data["tf_logits"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_cached_steps_match_generation_logits_every_step(fixtures_dir: Path, name: str) -> None:
    model, data = _load_fixture(fixtures_dir, name)
    got = _replay_logits(
        model,
        mx.array(data["encoder_hidden_states"]),
        mx.array(data["attention_mask"]),
        data["codes"],
    )
    assert got.shape == data["gen_logits"].shape
    assert got.shape[0] >= 53
    err = np.abs(got - data["gen_logits"]).max(axis=(1, 2, 3))
    assert err.max() <= ATOL, f"worst step {err.argmax()}: {err.max():.2e}"


@pytest.mark.parametrize("static", [False, True], ids=["eager", "static"])
@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_cfg_codes_identical_to_transformers(
    fixtures_dir: Path, name: str, static: bool
) -> None:
    """Both decode paths: the eager one (CPU default) and the compiled fixed-shape step (GPU
    default), which attends over the whole masked cache."""
    model, data = _load_fixture(fixtures_dir, name)
    expected = data["codes"]
    assert expected.shape[-1] >= 50
    codes = generate_codes(
        model,
        mx.array(data["encoder_hidden_states"]),
        mx.array(data["attention_mask"]),
        expected.shape[-1],
        guidance_scale=3.0,
        greedy=True,
        static=static,
    )
    np.testing.assert_array_equal(np.array(codes), expected)


@pytest.mark.parametrize("name", VARIANTS)
def test_static_and_eager_steps_sample_the_same_codes(fixtures_dir: Path, name: str) -> None:
    model, data = _load_fixture(fixtures_dir, name)
    args = (mx.array(data["encoder_hidden_states"]), mx.array(data["attention_mask"]), 40)
    seen: list[tuple[int, int]] = []
    eager = generate_codes(model, *args, top_k=5, key=7, static=False)
    static = generate_codes(
        model, *args, top_k=5, key=7, static=True, on_step=lambda d, n: seen.append((d, n))
    )
    np.testing.assert_array_equal(np.array(static), np.array(eager))
    steps = 40 + max(model.config.codebook_delays)
    assert seen[-1] == (steps, steps) and [d for d, _ in seen] == sorted({d for d, _ in seen})


def test_stereo_fixture_is_stereo_from_config(fixtures_dir: Path) -> None:
    model, _ = _load_fixture(fixtures_dir, "stereo")
    assert model.config.audio_channels == 2 and model.config.num_codebooks == 8
    assert model.config.codebook_delays == [0, 0, 1, 1, 2, 2, 3, 3]
    assert model.config.has_enc_to_dec_proj


def test_sinusoids_are_cos_then_sin() -> None:
    table = _sinusoids(10, 8)
    half = 4
    freqs = np.exp(np.arange(half) * -(np.log(10000) / (half - 1)))
    angles = np.arange(10)[:, None] * freqs[None]
    np.testing.assert_allclose(table[:, :half], np.cos(angles), atol=1e-5)
    np.testing.assert_allclose(table[:, half:], np.sin(angles), atol=1e-5)
    assert _sinusoids(3, 7).shape == (3, 7) and not _sinusoids(3, 7)[:, -1].any()


def test_cache_is_preallocated_and_bounded(fixtures_dir: Path) -> None:
    model, data = _load_fixture(fixtures_dir, "mono")
    cfg = model.config
    states = mx.array(data["encoder_hidden_states"])
    cache = model.make_cache(states, mx.array(data["attention_mask"]), 5)
    assert isinstance(cache, KVCache)
    shape = (2, cfg.num_attention_heads, 5, cfg.head_dim)
    assert all(kv.shape == (2, *shape) for kv in cache.kv)
    tokens = mx.full((2, cfg.num_codebooks, 3), cfg.pad_token_id, dtype=mx.int32)
    model.step(tokens, cache)
    assert cache.offset == 3 and all(kv.shape == (2, *shape) for kv in cache.kv)
    with pytest.raises(ValueError, match="5 positions"):
        model.step(tokens, cache)


def test_sanitize_fuses_and_consumes_every_upstream_key(fixtures_dir: Path) -> None:
    path = fixtures_dir / "musicgen_decoder" / "stereo" / "decoder.safetensors"
    upstream = load_safetensors(path)
    ours = sanitize(upstream)
    assert ours["embed_tokens.weight"].shape == (8 * 33, 16)
    assert ours["lm_heads.weight"].shape == (8 * 32, 16)
    np.testing.assert_array_equal(
        np.array(ours["lm_heads.weight"][32:64]), np.array(upstream["decoder.lm_heads.1.weight"])
    )
    np.testing.assert_array_equal(
        np.array(ours["layers.1.self_attn.qkv_proj.weight"][16:32]),
        np.array(upstream["decoder.model.decoder.layers.1.self_attn.k_proj.weight"]),
    )
    assert not any("q_proj" in k and "self_attn" in k for k in ours)
    assert "enc_to_dec_proj.bias" in ours
    # Text/audio encoder keys of the composite checkpoint are someone else's: ignored.
    assert sanitize({**upstream, "text_encoder.shared.weight": mx.zeros((2, 2))}).keys() == (
        ours.keys()
    )


def test_missing_or_unexpected_weights_name_the_file(fixtures_dir: Path) -> None:
    d = fixtures_dir / "musicgen_decoder" / "mono"
    config = DecoderConfig.from_composite(json.loads((d / "config.json").read_text()))
    upstream = load_safetensors(d / "decoder.safetensors")
    src = str(d / "decoder.safetensors")
    broken = {
        k: v for k, v in upstream.items() if not k.endswith("layers.1.encoder_attn.v_proj.weight")
    }
    with pytest.raises(MissingWeightsError, match=r"decoder\.safetensors.*v_proj"):
        load_decoder(config, broken, source=src)
    no_heads = {k: v for k, v in upstream.items() if "lm_heads.3" not in k}
    with pytest.raises(MissingWeightsError, match=r"lm_heads\.3"):
        load_decoder(config, no_heads, source=src)
    extra = {**upstream, "decoder.model.decoder.layers.0.fc3.weight": mx.zeros((2, 2))}
    with pytest.raises(MissingWeightsError, match=r"decoder\.safetensors: unexpected.*fc3"):
        load_decoder(config, extra, source=src)
    with pytest.raises(MissingWeightsError, match="no MusicGen decoder weights"):
        sanitize({"text_encoder.shared.weight": mx.zeros((2, 2))}, source=src)


def test_config_from_dict_ignores_unknown_and_validates() -> None:
    cfg = DecoderConfig.from_dict({"hidden_size": 64, "num_attention_heads": 4, "model_type": "x"})
    assert cfg.head_dim == 16 and not cfg.has_enc_to_dec_proj
    composite = {
        "decoder": {"hidden_size": 64, "num_attention_heads": 4},
        "text_encoder": {"d_model": 32},
    }
    assert DecoderConfig.from_composite(composite).has_enc_to_dec_proj
    same = {
        "decoder": {"hidden_size": 64, "num_attention_heads": 4},
        "text_encoder": {"d_model": 64},
    }
    assert not DecoderConfig.from_composite(same).has_enc_to_dec_proj
    assert DecoderConfig(num_codebooks=4).codebook_delays == [0, 1, 2, 3]
    with pytest.raises(InvalidInputError, match="divisible"):
        DecoderConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(InvalidInputError, match="audio_channels"):
        DecoderConfig(audio_channels=3)
    with pytest.raises(InvalidInputError, match="activation"):
        DecoderConfig(activation_function="tanh")
    with pytest.raises(InvalidInputError, match="decoder"):
        DecoderConfig.from_composite({"text_encoder": {}})
    # Ids past the embedding tables' vocab_size + 1 rows would be gathered out of bounds.
    with pytest.raises(InvalidInputError, match=r"pad_token_id 2048 is outside 0\.\.vocab_size"):
        DecoderConfig(vocab_size=32)
    with pytest.raises(InvalidInputError, match="bos_token_id"):
        DecoderConfig(vocab_size=32, pad_token_id=32, bos_token_id=None)  # type: ignore[arg-type]
    assert DecoderConfig(vocab_size=32, pad_token_id=32, bos_token_id=32).pad_token_id == 32


def _live_case(
    torch: Any, builder: ModuleType, **kw: Any
) -> tuple[MusicGenDecoder, Any, dict[str, np.ndarray]]:
    model = builder.make_model(torch, **kw)
    data = builder.record(torch, model, new_tokens=14)
    upstream = {k: mx.array(v.numpy()) for k, v in builder.decoder_state_dict(model).items()}
    config = DecoderConfig.from_composite(model.config.to_dict())
    return load_decoder(config, upstream), model, data


@pytest.mark.parametrize(
    "kw",
    [
        {"audio_channels": 1, "seed": 11, "hidden": 32, "layers": 3, "heads": 4, "ffn": 48},
        # Seeds are chosen so the reference's greedy steps have no near-ties (seed 12 had one).
        {"audio_channels": 2, "seed": 14, "activation": "gelu_new", "vocab": 64},
        # Text width == decoder width: no enc_to_dec_proj upstream, none here.
        {"audio_channels": 1, "seed": 13, "hidden": 24, "heads": 3, "text_width": 24},
    ],
)
def test_live_random_models_match_transformers(torch: Any, kw: dict[str, Any]) -> None:
    builder = _builder()
    ours, ref, data = _live_case(torch, builder, **kw)
    assert ours.config.has_enc_to_dec_proj == hasattr(ref, "enc_to_dec_proj")
    states, mask = mx.array(data["encoder_hidden_states"]), mx.array(data["attention_mask"])
    logits = ours(mx.array(data["tf_input_ids"]), states, mask)
    np.testing.assert_allclose(np.array(logits), data["tf_logits"], atol=ATOL, rtol=0)
    replay = _replay_logits(ours, states, mask, data["codes"])
    np.testing.assert_allclose(replay, data["gen_logits"], atol=ATOL, rtol=0)
    codes = np.array(generate_codes(ours, states, mask, data["codes"].shape[-1], greedy=True))
    # Exact codes only where the reference's argmax is unambiguous at our tolerance.
    b = codes.shape[0]
    scores = data["gen_logits"][:, b:] + 3.0 * (
        data["gen_logits"][:, :b] - data["gen_logits"][:, b:]
    )
    top2 = np.sort(scores, axis=-1)[..., -2:]
    ambiguous = np.nonzero((top2[..., 1] - top2[..., 0]).min(axis=(1, 2)) < 1e-4)[0]
    frames = codes.shape[-1] if not ambiguous.size else max(0, int(ambiguous[0]) - 3)
    assert frames >= codes.shape[-1] // 2
    np.testing.assert_array_equal(codes[..., :frames], data["codes"][..., :frames])


@pytest.mark.parametrize("name", VARIANTS)
def test_unpadded_batches_drop_the_cross_mask_exactly(
    fixtures_dir: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without padding (one prompt; CFG's all-pad row has zero keys and values) the cache has
    no key mask, and that changes nothing: same logits as with the mask forced on."""
    from audiogen_musicgen import decoder as decoder_mod

    model, data = _load_fixture(fixtures_dir, name)
    states = mx.array(data["encoder_hidden_states"][:1])
    length = int(data["attention_mask"][0].sum())
    states, mask = states[:, :length], mx.ones((1, length), dtype=mx.int32)
    cfg_states = mx.concatenate([states, mx.zeros_like(states)])
    cfg_mask = mx.concatenate([mask, mx.zeros_like(mask)])
    assert model.make_cache(cfg_states, cfg_mask, 4).cross_mask is None
    padded = mx.array(data["attention_mask"])
    assert (
        model.make_cache(mx.array(data["encoder_hidden_states"]), padded, 4).cross_mask is not None
    )
    ids = mx.array(data["tf_input_ids"][:1])
    ids = mx.concatenate([ids, ids])
    free = np.array(model(ids, cfg_states, cfg_mask))
    monkeypatch.setattr(decoder_mod, "_has_padding", lambda m: True)
    assert model.make_cache(cfg_states, cfg_mask, 4).cross_mask is not None
    forced = np.array(model(ids, cfg_states, cfg_mask))
    np.testing.assert_allclose(free, forced, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_folded_cross_attention_matches_the_projections(fixtures_dir: Path, name: str) -> None:
    """``CrossAttention.fold`` (q_proj / out_proj folded into the fixed text keys and values):
    the same logits as the plain path and transformers, and the same greedy CFG codes."""
    model, data = _load_fixture(fixtures_dir, name)
    args = (
        mx.array(data["tf_input_ids"]),
        mx.array(data["encoder_hidden_states"]),
        mx.array(data["attention_mask"]),
    )
    model.fold_cross_attention = False
    plain = np.array(model(*args))
    model.fold_cross_attention = True
    cache = model.make_cache(args[1], args[2], 4)
    assert cache.cross_kv is not None and cache.cross_kv[0][0].ndim == 3  # folded
    folded = np.array(model(*args))
    np.testing.assert_allclose(folded, plain, atol=1e-5, rtol=0)
    np.testing.assert_allclose(folded, data["tf_logits"], atol=ATOL, rtol=0)
    codes = generate_codes(
        model, args[1], args[2], data["codes"].shape[-1], guidance_scale=3.0, greedy=True
    )
    np.testing.assert_array_equal(np.array(codes), data["codes"])
    model.fold_cross_attention = None  # auto: folds only while H·S <= D
    s = args[1].shape[1]
    auto = model.make_cache(args[1], args[2], 4).cross_kv
    assert auto is not None
    assert (auto[0][0].ndim == 3) == (
        model.config.num_attention_heads * s <= model.config.hidden_size
    )


@pytest.mark.parametrize("fold", [False, True], ids=["plain", "folded"])
@pytest.mark.parametrize("name", VARIANTS)
def test_matvec_projections_match_transformers(fixtures_dir: Path, name: str, fold: bool) -> None:
    """``project``'s batched-matvec form of the decode-step linears (the GPU default, forced on
    here): every step's logits match transformers' generation logits, and the greedy CFG codes
    are identical on both decode paths."""
    model, data = _load_fixture(fixtures_dir, name)
    model.matvec, model.fold_cross_attention = True, fold
    states, mask = mx.array(data["encoder_hidden_states"]), mx.array(data["attention_mask"])
    assert model.make_cache(states, mask, 4).matvec
    got = _replay_logits(model, states, mask, data["codes"])
    err = np.abs(got - data["gen_logits"]).max()
    assert err <= ATOL, f"{err:.2e}"
    for static in (False, True):
        codes = generate_codes(
            model, states, mask, data["codes"].shape[-1], greedy=True, static=static
        )
        np.testing.assert_array_equal(np.array(codes), data["codes"])
    model.matvec = None  # auto: the CPU keeps x @ W^T
    assert not model.make_cache(states, mask, 4).matvec


def test_fold_uses_the_dequantized_weights_of_quantized_projections() -> None:
    from audiogen_musicgen.decoder import CrossAttention

    config = DecoderConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1, ffn_dim=64)
    attn = CrossAttention(config)
    nn.quantize(attn, group_size=32, bits=8)
    assert isinstance(attn.q_proj, nn.QuantizedLinear)
    rng = np.random.default_rng(0)
    states = mx.array(rng.standard_normal((2, 5, 64)).astype(np.float32))
    x = mx.array(rng.standard_normal((2, 3, 64)).astype(np.float32))
    k, v = attn.keys_values(states)
    plain = np.array(attn(x, (k, v), None))
    folded = np.array(attn(x, attn.fold(k, v), None))
    np.testing.assert_allclose(folded, plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_progress_reports_every_step_once_and_syncs_seldom_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch, gpu: bool
) -> None:
    """The reporting policy of ``generate_codes`` (``sampling._Progress``), run here on the CPU
    for both branches: increasing reports ending at (total, total), none repeated. On a GPU a
    step is reported when queued and the host waits only at the first step, every
    ``GPU_SYNC_EVERY`` steps and at the end (a wait drains the whole device queue); on the CPU
    it waits for the step ``PROGRESS_LAG`` back, every step."""
    from audiogen_musicgen import sampling

    waits: list[int] = []
    real_eval = mx.eval

    def counting_eval(*args: Any) -> None:
        waits.append(len(outputs))
        real_eval(*args)

    monkeypatch.setattr(mx, "eval", counting_eval)
    total, seen = 70, []
    progress = sampling._Progress(lambda d, n: seen.append((d, n)), total, gpu)
    outputs: list[mx.array] = []
    for t in range(total):
        outputs.append(mx.array([t]))
        progress.queued(t, outputs)
    progress.finish(outputs)
    done = [d for d, n in seen]
    assert all(n == total for _, n in seen) and done[-1] == total
    assert done == sorted(set(done))
    if gpu:
        every = sampling.GPU_SYNC_EVERY
        assert done == list(range(1, total + 1))
        assert waits == [1, *range(every, total + 1, every), total]
    else:
        lag = sampling.PROGRESS_LAG
        assert done == [*range(1, total - lag + 1), total]
        assert len(waits) == total - lag + 1


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_progress_of_a_prefix_conditioned_generation_reports_its_first_step(
    monkeypatch: pytest.MonkeyPatch, gpu: bool
) -> None:
    """Melody / style decoders run their first step (with the prefix) before the loop; it is
    reported like any other step, on both branches of the policy (a GPU run once skipped it)."""
    from audiogen_musicgen import sampling

    real = sampling._Progress
    monkeypatch.setattr(sampling, "_Progress", lambda cb, total, _: real(cb, total, gpu))
    cfg = DecoderConfig.from_dict(
        {
            "hidden_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "ffn_dim": 128,
            "num_codebooks": 4,
            "vocab_size": 32,
            "pad_token_id": 32,  # upstream: pad = bos = vocab_size (the tables' extra row)
            "bos_token_id": 32,
            "cross_attention": False,
        }
    )
    mx.random.seed(0)
    dec = MusicGenDecoder(cfg)
    prefix = [mx.random.normal((1, 3, 64)) for _ in range(2)]
    seen: list[tuple[int, int]] = []
    generate_codes(
        dec, None, None, 10, prefix=prefix, key=1, top_k=5, on_step=lambda d, n: seen.append((d, n))
    )
    steps = 10 + max(cfg.codebook_delays)
    done = [d for d, _ in seen]
    assert done[0] == 1 and done[-1] == steps and done == sorted(set(done))
    assert all(n == steps for _, n in seen)

"""MusicGen-style's LM: our ``MusicGenDecoder`` loaded from an audiocraft ``LMModel`` state dict
(``sanitize_audiocraft``, ``DecoderConfig.from_audiocraft``) vs audiocraft's ``LMModel`` with
``[style | text]`` prepended and its double classifier-free guidance.

Fixture tests (no torch) use tests/fixtures/style_lm (tools/fixtures/style_lm.py): a tiny random
``LMModel`` in audiocraft's key names (float16), its ``xp.cfg`` sections, random T5 states and
style tokens, the teacher-forced logits of the three guidance branches (full, style-only, null)
and greedy codes for 50 frames with cfg 3 / beta 5 (three passes) and cfg 3 / beta None (two).
Live tests rebuild another random LM with audiocraft (PyPI 1.3.0 or main) and compare the same
way; tests/fixtures/musicgen_keys/style.json (tools/style_keys.py) is the full-size key list of
facebook/musicgen-style's ``state_dict.bin``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import InvalidInputError, MissingWeightsError
from audiogen_core.weights import cast_floats, load_into, load_safetensors

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from audiogen_musicgen import style as style_weights
from audiogen_musicgen.config import DecoderConfig
from audiogen_musicgen.convert import check_parameters
from audiogen_musicgen.decoder import MusicGenDecoder
from audiogen_musicgen.sampling import generate_codes
from audiogen_musicgen.style import StyleConditioner, StyleConfig
from audiogen_musicgen.weights import sanitize_audiocraft

ATOL = 1e-4  # logits, float32
ROOT = Path(__file__).resolve().parents[2]
KEYS = ROOT / "tests" / "fixtures" / "musicgen_keys" / "style.json"
TEXT_WIDTH = 24  # the tiny fixtures' "T5" width
STYLE_BUFFERS = (".inited", ".cluster_size", ".embed_avg", ".num_batches_tracked")


def _tool(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_tool", ROOT / path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load(
    weights: dict[str, mx.array], cfg: dict[str, Any], text_width: int, source: str
) -> MusicGenDecoder:
    config = DecoderConfig.from_audiocraft(cfg, text_width)
    params = sanitize_audiocraft(cast_floats(weights, mx.float32), source=source)
    model = load_into(MusicGenDecoder(config), params, source=source, strict=True)
    assert isinstance(model, MusicGenDecoder)
    return model


def _prefixes(
    decoder: MusicGenDecoder, style: mx.array, t5: mx.array, mask: mx.array
) -> list[mx.array]:
    """The three branches' decoder prefixes: full ``[style | text]``, style-only ``[style | 0]``
    (the dropped description: zero mask), null ``[0 | 0]`` (as many zero style tokens)."""
    text = decoder.encoder_states(t5, mask)
    dropped = decoder.encoder_states(t5, mx.zeros_like(mask))
    return [
        mx.concatenate([style, text], axis=1),
        mx.concatenate([style, dropped], axis=1),
        mx.concatenate([mx.zeros_like(style), dropped], axis=1),
    ]


def _greedy(
    decoder: MusicGenDecoder, prefixes: list[mx.array], frames: int, *, double: bool, static: bool
) -> np.ndarray:
    if double:
        codes = generate_codes(decoder, None, None, frames, prefix=prefixes, beta=5.0,
                               guidance_scale=3.0, greedy=True, static=static)  # fmt: skip
    else:
        codes = generate_codes(decoder, None, None, frames, prefix=[prefixes[0], prefixes[2]],
                               beta=None, guidance_scale=3.0, greedy=True, static=static)  # fmt: skip
    return np.array(codes)


@cache
def _fixture() -> tuple[MusicGenDecoder, dict[str, Any], dict[str, np.ndarray]]:
    d = ROOT / "tests" / "fixtures" / "style_lm"
    cfg = json.loads((d / "config.json").read_text())
    path = d / "weights.safetensors"
    decoder = _load(load_safetensors(path), cfg, TEXT_WIDTH, str(path))
    with np.load(d / "data.npz") as z:
        return decoder, cfg, {k: z[k] for k in z.files}


def _fixture_prefixes() -> list[mx.array]:
    decoder, _, data = _fixture()
    return _prefixes(
        decoder, mx.array(data["style"]), mx.array(data["t5_states"]), mx.array(data["text_mask"])
    )


def test_fixture_config_and_weights() -> None:
    decoder, cfg, _ = _fixture()
    c = decoder.config
    assert (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.ffn_dim) == (32, 2, 2, 128)
    assert (c.num_codebooks, c.vocab_size, c.pad_token_id, c.codebook_delays) == (
        4, 32, 32, [0, 1, 2, 3],
    )  # fmt: skip
    assert not c.cross_attention and c.has_enc_to_dec_proj and c.text_encoder_hidden_size == 24
    assert cfg["fuser"]["prepend"] == ["self_wav", "description"]


def test_fixture_prefixes() -> None:
    """Our text tokens (``enc_to_dec_proj`` = audiocraft's ``output_proj``, then × mask, so pads
    and the dropped text are zero vectors) and the three branch prefixes audiocraft fused."""
    _, _, data = _fixture()
    prefixes = _fixture_prefixes()
    for ours, name in zip(prefixes, ("full", "style", "null"), strict=True):
        assert ours.shape == (2, 15 + 6, 32)
        err = float(np.abs(np.array(ours) - data[f"prefix_{name}"]).max())
        assert err <= 1e-5, (name, err)
    assert not np.any(np.array(prefixes[0])[1, -2:])  # the padded prompt's last two tokens
    assert not np.any(np.array(prefixes[1])[:, 15:]) and not np.any(np.array(prefixes[2]))


def test_fixture_teacher_forced_logits() -> None:
    decoder, _, data = _fixture()
    ids = mx.array(np.concatenate([data["ids"]] * 3))
    logits = decoder(ids, prefix=mx.concatenate(_fixture_prefixes()))
    assert logits.shape == data["logits"].shape == (6, 4, 13, 32)
    err = float(np.abs(np.array(logits) - data["logits"]).max())
    assert err <= ATOL, err
    assert float(np.abs(data["logits"]).max()) > 5  # logits of order 1-10: argmax is meaningful


@pytest.mark.parametrize("static", [False, True], ids=["eager", "static"])
@pytest.mark.parametrize("double", [True, False], ids=["double-cfg", "plain-cfg"])
def test_fixture_greedy_codes(double: bool, static: bool) -> None:
    decoder, _, data = _fixture()
    codes = _greedy(decoder, _fixture_prefixes(), 50, double=double, static=static)
    expected = data["codes_double" if double else "codes_plain"]
    assert codes.shape == expected.shape == (2, 4, 50)
    np.testing.assert_array_equal(codes, expected)
    # the guided argmax was never a near-tie (so equality is a real check, not luck)
    assert float(data["margin_double" if double else "margin_plain"]) > 1e-3


def test_fixture_beta_one_is_plain_cfg() -> None:
    """beta = 1: ``null + cfg·(style + (full − style) − null)`` = ``null + cfg·(full − null)``."""
    decoder, _, data = _fixture()
    codes = generate_codes(decoder, None, None, 50, prefix=_fixture_prefixes(), beta=1.0,
                           guidance_scale=3.0, greedy=True)  # fmt: skip
    np.testing.assert_array_equal(np.array(codes), data["codes_plain"])
    assert not np.array_equal(data["codes_plain"], data["codes_double"])


def _audiocraft(torch: ModuleType) -> tuple[ModuleType, dict[str, Any]]:
    builder = _tool("tools/fixtures/style_lm.py")
    try:
        return builder, builder.import_lm(torch)
    except ImportError as exc:
        if os.environ.get("AUDIOGEN_REQUIRE_TORCH", "") not in ("", "0"):  # CI: never skip
            pytest.fail(f"AUDIOGEN_REQUIRE_TORCH is set but audiocraft is not importable: {exc}")
        pytest.skip(f"audiocraft not installed (pip install --no-deps audiocraft): {exc}")


def test_live_parity(torch: ModuleType, tmp_path: Path) -> None:
    """Another random LM (3 layers, 4 heads, width 48), saved as safetensors in audiocraft's key
    names: teacher-forced logits of the three branches, then 50 greedy frames with double and
    plain CFG (eager and static decoding) against audiocraft's ``LMModel``."""
    builder, ac = _audiocraft(torch)
    # audiogen_core preloads the system OpenBLAS globally, so torch's own sgemm_ calls bind to it
    # too; from 2 torch threads at once that (pthread) OpenBLAS sporadically returned wrong
    # results here (6e-4 off in some rows in ~1 of 8 runs, never with 1 thread or without the
    # preload). The tiny reference needs no threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _live_parity(torch, builder, ac, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _live_parity(
    torch: ModuleType, builder: ModuleType, ac: dict[str, Any], tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    shape = {"dim": 48, "num_heads": 4, "num_layers": 3, "hidden_scale": 4, "n_q": 4, "card": 40}
    cfg = builder.xp_cfg(shape)
    torch.manual_seed(11)
    lm = builder.make_lm(torch, ac, cfg, builder.TEXT_WIDTH)
    builder.randomize(torch, lm)
    lm.eval()
    inp = builder.make_inputs(torch, lm, seed=12)
    path = tmp_path / "state.safetensors"
    save_file({k: v.half().contiguous() for k, v in lm.state_dict().items()}, str(path))
    decoder = _load(load_safetensors(path), cfg, builder.TEXT_WIDTH, str(path))

    prefixes = _prefixes(decoder, mx.array(inp["style"].numpy()), mx.array(inp["t5"].numpy()),
                         mx.array(inp["text_mask"].numpy()))  # fmt: skip
    double = builder.branch_tensors(torch, inp["style"], inp["text"], inp["text_mask"], double=True)
    plain = builder.branch_tensors(torch, inp["style"], inp["text"], inp["text_mask"], double=False)
    with torch.no_grad(), builder.xformers_ops(ac):
        ref = lm(torch.cat([inp["ids"]] * 3), conditions=[], condition_tensors=double)
    ids = mx.array(np.concatenate([inp["ids"].numpy()] * 3).astype(np.int32))
    logits = decoder(ids, prefix=mx.concatenate(prefixes))
    diff = np.abs(np.array(logits) - ref.numpy())
    err = float(diff.max())
    assert err <= ATOL, (err, diff.max(axis=(1, 2, 3)), float(np.abs(ref.numpy()).max()))

    for tensors, is_double in ((double, True), (plain, False)):
        expected, margin = builder.reference_codes(
            torch, ac, lm, tensors, 50, cfg_coef=3.0, beta=5.0 if is_double else None
        )
        assert margin > 1e-3, margin
        for static in (False, True):
            codes = _greedy(decoder, prefixes, 50, double=is_double, static=static)
            np.testing.assert_array_equal(codes, expected.numpy())


@cache
def _keys() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(KEYS.read_text())
    return data


def _lazy(keys: dict[str, list[int]]) -> dict[str, mx.array]:
    """Unevaluated zeros of each shape (1.4 B parameters are never allocated)."""
    return {k: mx.zeros(shape, dtype=mx.float16) for k, shape in keys.items()}


@cache
def _full_models() -> tuple[MusicGenDecoder, StyleConditioner]:
    cfg = _keys()["xp_cfg"]
    decoder = MusicGenDecoder(DecoderConfig.from_audiocraft(cfg, 768))
    style_cfg = StyleConfig.from_audiocraft(cfg["conditioners"]["self_wav"]["style"], 1536)
    return decoder, StyleConditioner(style_cfg)


def _check(upstream: dict[str, mx.array]) -> None:
    """The two sanitizers that share ``state_dict.bin`` must each fill their model exactly."""
    decoder, style = _full_models()
    check_parameters(decoder, sanitize_audiocraft(upstream, source="style"), "style/decoder")
    check_parameters(style, style_weights.sanitize(upstream), "style/conditioner")


def test_key_list_is_musicgen_style_medium() -> None:
    data = _keys()
    keys = data["keys"]
    assert data["repo"] == "facebook/musicgen-style" and len(keys) == 491
    # The models built from the checkpoint's own config alone hold exactly the listed parameters
    # minus the training buffers: 1.415 B (the hub's state_dict.bin is 2.84 GB of float16).
    decoder, style = _full_models()
    held = sum(v.size for m in (decoder, style) for _, v in tree_flatten(m.parameters()))
    listed = sum(int(np.prod(s)) for k, s in keys.items() if not k.endswith(STYLE_BUFFERS))
    assert held == listed
    assert keys["emb.3.weight"] == [2049, 1536] and keys["linears.3.weight"] == [2048, 1536]
    assert keys["transformer.layers.47.self_attn.in_proj_weight"] == [4608, 1536]
    assert keys["condition_provider.conditioners.description.output_proj.weight"] == [1536, 768]
    lm_keys = [k for k in keys if k.startswith(("transformer.", "linears."))]
    assert not any(re.search(r"cross_attention|layer_scale|norm_cross", k) for k in lm_keys)
    assert all(re.search(r"norm\d\.bias$", k) for k in lm_keys if k.endswith(".bias"))
    c = DecoderConfig.from_audiocraft(data["xp_cfg"], 768)
    assert (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.ffn_dim) == (
        1536, 24, 48, 6144,
    )  # fmt: skip
    assert (c.num_codebooks, c.vocab_size, c.cross_attention, c.has_enc_to_dec_proj) == (
        4, 2048, False, True,
    )  # fmt: skip


def test_key_coverage_fills_every_parameter() -> None:
    upstream = _lazy(_keys()["keys"])
    _check(upstream)
    dec = sanitize_audiocraft(upstream)
    assert dec["embed_tokens.weight"].shape == (4 * 2049, 1536)
    assert dec["lm_heads.weight"].shape == (4 * 2048, 1536)
    assert dec["layers.47.self_attn.qkv_proj.weight"].shape == (4608, 1536)
    assert dec["enc_to_dec_proj.weight"].shape == (1536, 768)


def test_every_key_is_consumed() -> None:
    """Removing any tensor breaks one of the two loads, except the style conditioner's training
    buffers (RVQ k-means state, BatchNorm's counter)."""
    keys = _keys()["keys"]
    upstream = _lazy(keys)
    redundant = []
    for key in sorted(upstream):
        without = {k: v for k, v in upstream.items() if k != key}
        if key.endswith(STYLE_BUFFERS):
            _check(without)
            redundant.append(key)
            continue
        with pytest.raises(MissingWeightsError):
            _check(without)
    assert len(redundant) == 3 * 6 + 1


def test_stray_keys_are_rejected() -> None:
    upstream = _lazy(_keys()["keys"])
    decoder, _ = _full_models()
    for stray in ("transformer.layers.0.cross_attention.in_proj_weight", "linears.0.bias",
                  "transformer.layers.3.layer_scale_1.scale"):  # fmt: skip
        with pytest.raises(MissingWeightsError, match=re.escape(stray.split(".", 1)[1][:20])):
            load_into(decoder, sanitize_audiocraft({**upstream, stray: mx.zeros((4,))}),
                      source="state_dict.bin")  # fmt: skip
    without_emb1 = {k: v for k, v in upstream.items() if k != "emb.1.weight"}
    with pytest.raises(MissingWeightsError, match=r"state_dict\.bin: missing weight emb\.1"):
        sanitize_audiocraft(without_emb1, source="state_dict.bin")


def test_live_key_list(torch: ModuleType) -> None:
    """The committed key list is what audiocraft builds for the musicgen-style config."""
    _audiocraft(torch)  # fails in CI without audiocraft
    tool = _tool("tools/style_keys.py")
    assert tool.upstream_keys(torch) == _keys()["keys"]
    assert tool.xp_cfg() == _keys()["xp_cfg"]


def _cfg(**changes: Any) -> dict[str, Any]:
    cfg = json.loads(json.dumps(_keys()["xp_cfg"]))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"transformer_lm__cross_attention": True}, r"transformer_lm\.cross_attention = True"),
        ({"transformer_lm__positional_embedding": "rope"}, r"positional_embedding = 'rope'"),
        ({"transformer_lm__positional_embedding": "sin_rope"}, r"positional_embedding"),
        ({"channels": 2}, "2 channels"),
        ({"transformer_lm__n_q": 8, "channels": 2}, "2 channels"),
        ({"transformer_lm__norm_first": False}, "norm_first"),
        ({"transformer_lm__bias_attn": True}, "bias_attn"),
        ({"transformer_lm__qk_layer_norm": True}, "qk_layer_norm"),
        ({"codebooks_pattern__modeling": "parallel"}, "codebooks_pattern 'parallel'"),
        ({"codebooks_pattern__delay__delays": [0, 0, 0, 0]}, r"delays \[0, 0, 0, 0\]"),
    ],
)
def test_from_audiocraft_refuses(change: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        DecoderConfig.from_audiocraft(_cfg(**change), 768)
    with pytest.raises(InvalidInputError, match="no 'transformer_lm'"):
        DecoderConfig.from_audiocraft({"channels": 1}, 768)


@pytest.mark.parametrize(
    "change",
    [
        # builders.get_lm_model forces cross_attention on when the fuser cross-attends
        {"fuser__cross": ["description"]},
        # a causal window: masks and trims the streaming cache (StreamingMultiheadAttention)
        {"transformer_lm__past_context": 100},
        {"transformer_lm__causal": False},
        # DelayedPatternProvider(empty_initial / flatten_first) changes the sequence layout
        {"codebooks_pattern__delay__empty_initial": 1},
        {"codebooks_pattern__delay__flatten_first": 2},
    ],
)
def test_from_audiocraft_refuses_layout_changes(change: dict[str, Any]) -> None:
    try:
        DecoderConfig.from_audiocraft(_cfg(**change), 768)
    except InvalidInputError:
        return
    raise AssertionError(f"accepted {change}")

"""MusicGen-style end to end: conversion of the audiocraft export plus its companions, and the
pipeline glue (excerpt → 24 kHz → MERT → style conditioner → ``[style | text]`` prefixes →
double guidance).

The numerics of each part are proven against its reference elsewhere: MERT vs transformers'
HubertModel (test_mert.py), the style conditioner vs audiocraft (test_style.py), the LM and the
three-pass guidance vs audiocraft's LMModel (test_style_lm.py). Here the tiny checkpoint of
tests/fixtures/musicgen_style (tools/fixtures/musicgen_style.py) checks what joins them: that the
converter routes every tensor to its part, that the pipeline cuts the excerpt where it says,
builds the branches audiocraft builds, and hands them to the sampler; plus loading through the
hub, options and bad input.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core import audio as audio_io
from audiogen_core.errors import InvalidInputError, WeightsError
from audiogen_core.weights import load_safetensors

import mlx.core as mx
import numpy as np
import pytest

from audiogen_musicgen import MusicGen, chroma, convert, convert_style, sampling

ROOT = Path(__file__).resolve().parents[2]
DURATION = 0.4  # 20 frames


def _builder() -> ModuleType:
    path = ROOT / "tools" / "fixtures" / "musicgen_style.py"
    spec = importlib.util.spec_from_file_location("musicgen_style_builder", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def model(fixtures_dir: Path) -> MusicGen:
    return MusicGen.from_pretrained(fixtures_dir / "musicgen_style" / "converted", dtype="float32")


def _reference(seconds: float = 4.0, rate: int = 44_100) -> np.ndarray:
    """A stereo tune: notes that change every half second (so excerpts differ)."""
    t = np.arange(int(seconds * rate)) / rate
    freq = 220 * 2 ** (np.floor(t * 2) % 7 / 12)
    tone = np.sin(2 * np.pi * np.cumsum(freq) / rate).astype(np.float32)
    return np.stack([tone, 0.5 * tone])


def test_converted_fixture_is_a_style_model(model: MusicGen) -> None:
    assert model.is_style and not model.is_melody
    assert not model.decoder.config.cross_attention
    assert model.style is not None and model.mert is not None
    assert model.style.config.eval_q == 3 and model.style.config.n_q == 6
    assert model.style.config.feature_dim == model.mert.config.hidden_size == 32
    assert model.sample_rate == model.style.config.sample_rate == 32_000


def test_style_tokens_cut_the_excerpt_where_asked(model: MusicGen) -> None:
    """An explicit start: the tokens are those of wav[start : start + 3 s] at 32 kHz, mono,
    resampled to 24 kHz, through MERT and the conditioner."""
    assert model.style is not None and model.mert is not None
    ref = _reference()
    got = model.style_tokens(ref, 44_100, excerpt_start_s=0.5)
    mono = ref.mean(axis=0, keepdims=True)
    wav = chroma.sinc_resample(mono, 44_100, 32_000)
    excerpt = chroma.sinc_resample(wav[:, 16_000 : 16_000 + 96_000], 32_000, 24_000)
    assert excerpt.shape == (1, 72_000)
    feats = model.mert(mx.array(excerpt))
    lengths = model.style.token_lengths([wav.shape[1]])
    expected = model.style(feats, lengths=lengths).tokens
    assert got.shape == (1, 15, model.decoder.config.hidden_size)
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=1e-6)
    other = model.style_tokens(ref, 44_100, excerpt_start_s=0.0)
    assert np.abs(np.array(other) - np.array(got)).max() > 1e-3  # another excerpt
    seeded = [np.array(model.style_tokens(ref, 44_100, seed=s)) for s in (1, 1, 2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])  # reproducible excerpt choice
    q1 = model.style_tokens(ref, 44_100, excerpt_start_s=0.5, eval_q=1)
    assert np.abs(np.array(q1) - np.array(got)).max() > 1e-3  # eval_q matters


def test_branches_are_audiocrafts(model: MusicGen) -> None:
    states, mask = model.encode_text(["warm pads", "drums"])
    style = model.style_tokens(_reference(), 44_100, batch=2, excerpt_start_s=0.2)
    full, partial, null = model.style_prefixes(states, mask, style, beta=5.0)
    s, n = style.shape[1], states.shape[1]
    assert full.shape == partial.shape == null.shape == (2, s + n, model.decoder.config.hidden_size)
    text = model.decoder.encoder_states(states, mask)
    np.testing.assert_array_equal(np.array(full[:, :s]), np.array(style))
    np.testing.assert_array_equal(np.array(full[:, s:]), np.array(text))
    np.testing.assert_array_equal(np.array(partial[:, :s]), np.array(style))
    assert not np.array(partial[:, s:]).any() and not np.array(null).any()
    # Plain CFG: [full, null]. No reference: one zero style token in every branch.
    assert len(model.style_prefixes(states, mask, style, beta=None)) == 2
    plain = model.style_prefixes(states, mask, None, beta=5.0)
    assert [p.shape[1] for p in plain] == [1 + n] * 3
    assert not np.array(plain[0][:, :1]).any()


def test_generate_is_the_sampler_on_those_branches(model: MusicGen) -> None:
    ref = _reference()
    kw: dict[str, Any] = {"style_excerpt_start": 0.25, "style_beta": 5.0}
    codes = model.generate_codes(
        "lofi", DURATION, greedy=True, style=ref, style_sample_rate=44_100, **kw
    )
    states, mask = model.encode_text("lofi")
    tokens = model.style_tokens(ref, 44_100, excerpt_start_s=0.25)
    prefix = model.style_prefixes(states, mask, tokens, beta=5.0)
    frames = model.num_frames(DURATION)
    expected = sampling.generate_codes(
        model.decoder, None, None, frames, prefix=prefix, beta=5.0, greedy=True
    )
    np.testing.assert_array_equal(codes, np.array(expected))
    plain = model.generate_codes("lofi", DURATION, greedy=True, style=ref, style_sample_rate=44_100)
    assert codes.shape == plain.shape == (1, 4, frames)
    assert (codes != plain).any()  # double guidance changes the result


def test_text_and_style_options(model: MusicGen, tmp_path: Path) -> None:
    ref = _reference(3.5, 22_050)
    path = audio_io.write(tmp_path / "ref.flac", ref, 22_050)
    a = model.generate("lofi", DURATION, style=path, seed=4, style_beta=5.0)
    b = model.generate("lofi", DURATION, style=path, seed=4, style_beta=5.0)
    assert a.shape == (1, 1, round(DURATION * 32_000))
    np.testing.assert_array_equal(a, b)  # same seed, same excerpt, same audio
    style_only = model.generate(None, DURATION, style=[path, path], seed=4)
    assert style_only.shape[0] == 2
    text_only = model.generate(["a", "b"], DURATION, seed=4, style_beta=5.0)
    assert text_only.shape[0] == 2
    two = model.generate_codes(
        ["a", "b"], DURATION, style=[path, ref[:, :80_000]], style_sample_rate=22_050, seed=1
    )
    assert two.shape == (2, 4, 20)


def test_bad_style_input(model: MusicGen, fixtures_dir: Path) -> None:
    short = _reference(2.0, 32_000)
    with pytest.raises(InvalidInputError, match="needs at least 3 s"):
        model.generate_codes("x", DURATION, style=short, style_sample_rate=32_000)
    with pytest.raises(InvalidInputError, match="eval_q"):
        model.generate_codes("x", DURATION, style=_reference(), style_sample_rate=44_100, eval_q=7)
    with pytest.raises(InvalidInputError, match="outside"):
        model.generate_codes(
            "x", DURATION, style=_reference(), style_sample_rate=44_100, style_excerpt_start=3.5
        )
    with pytest.raises(InvalidInputError, match="needs its rate"):
        model.generate_codes("x", DURATION, style=_reference())
    with pytest.raises(InvalidInputError, match="3 style references for 2 prompts"):
        model.generate_codes(
            ["a", "b"], DURATION, style=[_reference()] * 3, style_sample_rate=44_100
        )
    with pytest.raises(InvalidInputError, match="style_beta"):
        model.generate_codes("x", DURATION, style_beta=float("nan"))
    text = MusicGen.from_pretrained(fixtures_dir / "musicgen_pipeline" / "mono")
    with pytest.raises(InvalidInputError, match="not a style model"):
        text.generate_codes("x", DURATION, style=_reference(), style_sample_rate=44_100)
    with pytest.raises(InvalidInputError, match="prompts are required"):
        text.generate_codes(None, DURATION)


def _companions(fixtures_dir: Path, tmp: Path) -> dict[str, Path]:
    mod = _builder()
    d: dict[str, Path] = mod.companion_dirs(
        tmp, fixtures_dir / "musicgen_style" / "upstream" / "encodec"
    )
    return d


def test_live_conversion_routes_every_tensor(
    torch: ModuleType, fixtures_dir: Path, tmp_path: Path
) -> None:
    """Converting the upstream files again gives the committed conversion, tensor for tensor."""
    companions = _companions(fixtures_dir, tmp_path / "companions")
    out = convert_style.convert_style(
        fixtures_dir / "musicgen_style" / "upstream" / "style", tmp_path / "conv", companions
    )
    manifest = convert.read_manifest(out)
    assert manifest["model"] == "musicgen-style"
    committed = fixtures_dir / "musicgen_style" / "converted"
    for part in convert_style.PARTS:
        ours, theirs = (load_safetensors(d / part / "model.safetensors") for d in (out, committed))
        assert ours.keys() == theirs.keys(), part
        for k in ours:
            np.testing.assert_array_equal(np.array(ours[k]), np.array(theirs[k]), err_msg=k)
        assert json.loads((out / part / "config.json").read_text()) == json.loads(
            (committed / part / "config.json").read_text()
        )
    # A companion that does not fit is refused before anything is written.
    shutil.copyfile(fixtures_dir / "t5" / "gated" / "config.json", companions["t5"] / "config.json")
    cfg = json.loads((companions["t5"] / "config.json").read_text())
    cfg["d_model"] = 40
    (companions["t5"] / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="T5 width 40"):
        convert_style.convert_style(
            fixtures_dir / "musicgen_style" / "upstream" / "style", tmp_path / "bad", companions
        )
    assert not (tmp_path / "bad").exists()


def test_live_hub_style_repo_with_companions(
    torch: ModuleType, fixtures_dir: Path, tmp_path: Path, fake_hub: Any
) -> None:
    """``from_pretrained("facebook/musicgen-style")``: the checkpoint, then the three repos
    audiocraft loads by name, through the (fake) hub; converted once, then cached."""
    upstream = fixtures_dir / "musicgen_style" / "upstream"
    fake_hub.add(
        "facebook/musicgen-style",
        {"state_dict.bin": upstream / "style" / "state_dict.bin", "README.md": "x"},
    )
    companions = _companions(fixtures_dir, tmp_path / "companions")
    for name, repo in convert_style.COMPANIONS.items():
        fake_hub.add_dir(repo, companions[name])
    cache = tmp_path / "cache"
    m = MusicGen.from_pretrained("facebook/musicgen-style", cache_dir=cache, dtype="float32")
    assert m.is_style
    repos = [c["repo_id"] for c in fake_hub.calls]
    assert repos[0] == repos[1] == "facebook/musicgen-style"  # configs, then the .bin
    assert set(repos[2:]) == set(convert_style.COMPANIONS.values())
    local = MusicGen.from_pretrained(fixtures_dir / "musicgen_style" / "converted", dtype="float32")
    ref = _reference()
    kw: dict[str, Any] = {
        "style": ref,
        "style_sample_rate": 44_100,
        "greedy": True,
        "style_beta": 5.0,
    }
    np.testing.assert_array_equal(
        m.generate_codes("x", DURATION, style_excerpt_start=0.1, **kw),
        local.generate_codes("x", DURATION, style_excerpt_start=0.1, **kw),
    )
    # Offline: the snapshots and the converted copy are enough (no second conversion).
    again = MusicGen.from_pretrained("facebook/musicgen-style", cache_dir=cache, offline=True)
    assert again.source == m.source
    assert len(list((cache / "musicgen").iterdir())) == 1

"""MusicGen melody (prefix conditioning, no cross-attention) vs transformers'
``MusicgenMelodyForConditionalGeneration``.

Fixture tests (no torch) load tests/fixtures/musicgen_melody/{mono,stereo} (tiny random models in
the hub layout, tools/fixtures/musicgen_melody.py) and compare: teacher-forced logits with a
chroma prefix; greedy CFG-3 codes and audio with a 40-frame chroma (tiled to the 235-frame
prefix) and with no melody at all (upstream's bin-0 chroma). Live tests rebuild fresh random
models with torch and compare the same way.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import InvalidInputError, MissingWeightsError

import mlx.core as mx
import numpy as np
import pytest

from audiogen_musicgen import MusicGen, convert
from audiogen_musicgen.config import DecoderConfig
from audiogen_musicgen.sampling import generate_codes

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("mono", "stereo")
ATOL = 1e-4
AUDIO_ATOL = 1e-3


def _builder() -> ModuleType:
    path = ROOT / "tools" / "fixtures" / "musicgen_melody.py"
    spec = importlib.util.spec_from_file_location("musicgen_melody_builder", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _expected(directory: Path) -> dict[str, Any]:
    with np.load(directory / "expected.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audiogen-cache"
    monkeypatch.setenv("AUDIOGEN_CACHE", str(path))
    return path


def _dir(fixtures_dir: Path, name: str) -> Path:
    return fixtures_dir / "musicgen_melody" / name


def _check(model: MusicGen, exp: dict[str, Any]) -> dict[str, float]:
    """Teacher forcing, greedy codes with and without a melody, audio: our numbers vs theirs."""
    prompts = [str(p) for p in exp["prompts"]]
    duration = float(exp["duration"])
    scale = float(exp["guidance_scale"])
    ids, _ = model.tokenizer(prompts)
    np.testing.assert_array_equal(ids, exp["input_ids"])
    states, mask_mx = model.encode_text(prompts)
    prefix = model.decoder.melody_prefix(states, mask_mx, mx.array(exp["chroma"]))
    assert prefix.shape[1] == model.decoder.config.chroma_length + ids.shape[1]
    logits = np.array(model.decoder(mx.array(exp["tf_input_ids"]), prefix=prefix))
    assert logits.shape == exp["tf_logits"].shape
    tf_err = float(np.abs(logits - exp["tf_logits"]).max())
    assert tf_err <= ATOL, tf_err

    chroma = list(exp["chroma"])
    codes = model.generate_codes(
        prompts, duration, guidance_scale=scale, greedy=True, chroma=chroma
    )
    assert codes.shape == exp["codes"].shape and codes.shape[-1] >= 50
    np.testing.assert_array_equal(codes, exp["codes"])
    text_codes = model.generate_codes(prompts, duration, guidance_scale=scale, greedy=True)
    np.testing.assert_array_equal(text_codes, exp["codes_text"])
    assert (codes != text_codes).any()  # the melody changes what is generated

    audio = model.generate(prompts, duration, guidance_scale=scale, greedy=True, chroma=chroma)
    assert audio.shape == exp["audio"].shape and np.abs(exp["audio"]).max() > 0.1
    audio_err = float(np.abs(audio - exp["audio"]).max())
    assert audio_err <= AUDIO_ATOL, audio_err
    return {"tf": tf_err, "audio": audio_err}


@pytest.mark.parametrize("name", VARIANTS)
def test_melody_matches_transformers(fixtures_dir: Path, cache: Path, name: str) -> None:
    model = MusicGen.from_pretrained(_dir(fixtures_dir, name), cache_dir=cache, dtype="float32")
    assert model.is_melody
    assert model.audio_channels == (2 if name == "stereo" else 1)
    assert not model.decoder.config.cross_attention
    assert not hasattr(model.decoder.layers[0], "encoder_attn")
    _check(model, _expected(_dir(fixtures_dir, name)))


@pytest.mark.parametrize("name", VARIANTS)
def test_static_step_path_with_prefix(fixtures_dir: Path, cache: Path, name: str) -> None:
    """The compiled fixed-shape step (first step eager with the prefix, then static)."""
    model = MusicGen.from_pretrained(_dir(fixtures_dir, name), cache_dir=cache, dtype="float32")
    exp = _expected(_dir(fixtures_dir, name))
    prompts = [str(p) for p in exp["prompts"]]
    states, mask = model.encode_text(prompts)
    prefix = model.melody_prefixes(states, mask, list(exp["chroma"]))
    frames = exp["codes"].shape[-1]
    for static in (False, True):
        codes = generate_codes(
            model.decoder, None, None, frames, prefix=prefix, greedy=True, static=static
        )
        np.testing.assert_array_equal(np.array(codes), exp["codes"])
    sampled = [
        np.array(generate_codes(model.decoder, None, None, 20, prefix=prefix, key=3, static=s))
        for s in (False, True)
    ]
    np.testing.assert_array_equal(sampled[0], sampled[1])


def test_melody_from_audio_uses_the_chroma_extractor(fixtures_dir: Path, cache: Path) -> None:
    """A melody array goes through chroma.chroma_features; same codes as passing that chroma."""
    from audiogen_musicgen import chroma as chroma_mod

    model = MusicGen.from_pretrained(_dir(fixtures_dir, "mono"), cache_dir=cache)
    t = np.arange(44_100 * 2) / 44_100
    tune = np.sin(2 * np.pi * 440 * t * (1 + (t > 1) * 0.26)).astype(np.float32)  # A then C#
    stereo = np.stack([tune, 0.5 * tune])
    a = model.generate_codes("lofi", 0.3, greedy=True, melody=stereo, melody_sample_rate=44_100)
    expected_chroma = chroma_mod.chroma_features(stereo, 44_100)
    b = model.generate_codes("lofi", 0.3, greedy=True, chroma=[expected_chroma])
    np.testing.assert_array_equal(a, b)
    assert expected_chroma.shape[1] == 12 and expected_chroma.sum(axis=1).max() == 1


def test_one_melody_for_all_prompts_or_one_each(fixtures_dir: Path, cache: Path) -> None:
    model = MusicGen.from_pretrained(_dir(fixtures_dir, "mono"), cache_dir=cache)
    exp = _expected(_dir(fixtures_dir, "mono"))
    one = model.generate_codes(["a", "b"], 0.2, greedy=True, chroma=[exp["chroma"][0]] * 2)
    melody = np.random.default_rng(0).standard_normal(16_000).astype(np.float32)
    model.generate_codes(["a", "b"], 0.2, greedy=True, melody=melody, melody_sample_rate=16_000)
    assert one.shape == (2, 4, 10)
    with pytest.raises(InvalidInputError, match="3 melodies for 2 prompts"):
        model.generate_codes(["a", "b"], 0.2, melody=[melody] * 3, melody_sample_rate=16_000)
    with pytest.raises(InvalidInputError, match="melody_sample_rate"):
        model.generate_codes("a", 0.2, melody=melody)
    with pytest.raises(InvalidInputError, match=r"chroma 0 must be \(frames, 12\)"):
        model.generate_codes("a", 0.2, chroma=[np.zeros((5, 7), np.float32)])


def test_melody_file(fixtures_dir: Path, cache: Path, tmp_path: Path) -> None:
    from audiogen_core import audio as audio_io

    model = MusicGen.from_pretrained(_dir(fixtures_dir, "mono"), cache_dir=cache)
    t = np.arange(22_050) / 22_050
    tune = (0.5 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)[None]
    path = audio_io.write(tmp_path / "hum.flac", tune, 22_050)
    from_file = model.generate_codes("x", 0.2, greedy=True, melody=path)
    from_array = model.generate_codes(
        "x", 0.2, greedy=True, melody=audio_io.read(path)[0], melody_sample_rate=22_050
    )
    np.testing.assert_array_equal(from_file, from_array)
    with pytest.raises(InvalidInputError, match=r"missing\.wav"):
        model.generate_codes("x", 0.2, melody=tmp_path / "missing.wav")


def test_melody_on_a_text_model_is_an_error(fixtures_dir: Path, cache: Path) -> None:
    model = MusicGen.from_pretrained(fixtures_dir / "musicgen_pipeline" / "mono", cache_dir=cache)
    assert not model.is_melody
    with pytest.raises(InvalidInputError, match="not a melody model"):
        model.generate("x", 0.2, melody=np.zeros(1000, np.float32), melody_sample_rate=16_000)
    with pytest.raises(InvalidInputError, match="not a melody model"):
        model.generate_codes("x", 0.2, chroma=[np.eye(12, dtype=np.float32)])


def test_config_and_conversion_detect_melody(fixtures_dir: Path, tmp_path: Path) -> None:
    d = _dir(fixtures_dir, "stereo")
    config = DecoderConfig.from_composite(json.loads((d / "config.json").read_text()))
    assert config.is_melody and not config.cross_attention
    assert (config.num_chroma, config.chroma_length) == (12, 235)
    assert config.has_audio_enc_to_dec_proj and config.has_enc_to_dec_proj
    out = convert.convert(d, tmp_path / "conv")
    manifest = convert.read_manifest(out)
    assert manifest["model"] == "musicgen-melody" and manifest["num_codebooks"] == 8
    # A text checkpoint under a melody config: no chroma projection (and unused cross-attention).
    text = tmp_path / "text-as-melody"
    shutil.copytree(fixtures_dir / "musicgen_pipeline" / "mono", text)
    cfg = json.loads((text / "config.json").read_text())
    cfg["model_type"] = "musicgen_melody"
    (text / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MissingWeightsError, match=r"missing weights: audio_enc_to_dec_proj"):
        convert.convert(text, tmp_path / "conv2")
    assert not (tmp_path / "conv2").exists()


@pytest.mark.parametrize("name", VARIANTS)
def test_live_melody_matches_transformers(
    torch: ModuleType, tmp_path: Path, cache: Path, name: str
) -> None:
    """A fresh random model (another seed) through the same comparison."""
    mod = _builder()
    pipe = mod._pipeline_builder()
    tokenizer = pipe.load_tokenizer()
    enc = tokenizer(mod.PROMPTS, padding=True, return_tensors="pt")
    channels = 2 if name == "stereo" else 1
    rng = np.random.default_rng(10 + channels)
    chroma = mod.one_hot_chroma(rng, len(mod.PROMPTS), 300)  # longer than 235: cut, not tiled
    frames = 50
    for seed in range(100, 120):
        ref = mod.make_model(torch, audio_channels=channels, seed=seed)
        melody = mod.reference_generate(torch, ref, enc, frames, chroma)
        text = mod.reference_generate(torch, ref, enc, frames, None)
        if min(melody["margin"], text["margin"]) > 1e-4:
            break
    pipe.save_upstream(ref, tokenizer, tmp_path / "m")
    exp = {
        "prompts": np.array(mod.PROMPTS),
        "duration": 1.0,
        "guidance_scale": mod.GUIDANCE,
        "input_ids": enc["input_ids"].numpy(),
        "chroma": chroma,
        "codes": melody["codes"],
        "audio": melody["audio"],
        "codes_text": text["codes"],
        **mod.teacher_forcing(torch, ref, enc, chroma, rng),
    }
    model = MusicGen.from_pretrained(tmp_path / "m", cache_dir=cache, dtype="float32")
    errs = _check(model, exp)
    assert errs["tf"] <= ATOL

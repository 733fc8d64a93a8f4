"""The MusicGen pipeline end to end vs transformers' ``MusicgenForConditionalGeneration``.

Fixture tests (no torch) load tests/fixtures/musicgen_pipeline/{mono,stereo} (tiny random models
saved by transformers' ``save_pretrained`` in the hub layout, built by
tools/fixtures/musicgen_pipeline.py) and compare our text → codes → audio with what transformers'
``generate(do_sample=False, guidance_scale=3.0)`` produced from the same prompts. The live tests
build fresh random models with torch and compare the same way. The rest covers loading
(conversion cache, converted dirs, the hub through ``fake_hub``, .bin-only and broken dirs) and
bad inputs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core import audio as audio_io
from audiogen_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    MissingWeightsError,
    WeightsError,
)

import numpy as np
import pytest

from audiogen_musicgen import MusicGen, convert

AUDIO_ATOL = 1e-3  # the brief's bound; measured ~2e-7 (float32 throughout)
ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("mono", "stereo")


def _builder() -> ModuleType:
    path = ROOT / "tools" / "fixtures" / "musicgen_pipeline.py"
    spec = importlib.util.spec_from_file_location("musicgen_pipeline_builder", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _expected(directory: Path) -> dict[str, Any]:
    with np.load(directory / "expected.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private conversion cache (also as $AUDIOGEN_CACHE, so nothing lands in ~/.cache)."""
    path = tmp_path / "audiogen-cache"
    monkeypatch.setenv("AUDIOGEN_CACHE", str(path))
    return path


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every conversion (``convert.convert`` calls) made through the cache."""
    calls: list[Path] = []
    real = convert.convert

    def counting(src: Path, dst: Path, **kw: Any) -> Path:
        calls.append(dst)
        return real(src, dst, **kw)

    monkeypatch.setattr(convert, "convert", counting)
    return calls


def _model_dir(fixtures_dir: Path, name: str) -> Path:
    return fixtures_dir / "musicgen_pipeline" / name


def _load(fixtures_dir: Path, name: str, cache: Path) -> MusicGen:
    return MusicGen.from_pretrained(
        _model_dir(fixtures_dir, name), cache_dir=cache, dtype="float32"
    )


def _check_parity(model: MusicGen, expected: dict[str, Any]) -> float:
    """Our greedy text → codes → audio against transformers'; returns the audio max abs error."""
    prompts = [str(p) for p in expected["prompts"]]
    duration = float(expected["duration"])
    ids, mask = model.tokenizer(prompts)
    np.testing.assert_array_equal(ids, expected["input_ids"])
    np.testing.assert_array_equal(mask, expected["attention_mask"])
    codes = model.generate_codes(
        prompts, duration, guidance_scale=float(expected["guidance_scale"]), greedy=True
    )
    assert codes.shape == expected["codes"].shape and codes.shape[-1] >= 50
    np.testing.assert_array_equal(codes, expected["codes"])
    audio = model.generate(
        prompts, duration, guidance_scale=float(expected["guidance_scale"]), greedy=True
    )
    assert audio.dtype == np.float32
    assert audio.shape == expected["audio"].shape
    assert np.abs(expected["audio"]).max() > 0.1  # the reference is not silence
    err = float(np.abs(audio - expected["audio"]).max())
    assert err <= AUDIO_ATOL, err
    return err


@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_text_to_audio_matches_transformers(
    fixtures_dir: Path, cache: Path, name: str
) -> None:
    model = _load(fixtures_dir, name, cache)
    expected = _expected(_model_dir(fixtures_dir, name))
    assert model.audio_channels == expected["audio"].shape[1] == (2 if name == "stereo" else 1)
    assert model.num_codebooks == expected["codes"].shape[1]
    _check_parity(model, expected)


def test_channels_come_from_the_config_not_the_name(
    fixtures_dir: Path, cache: Path, tmp_path: Path
) -> None:
    misleading = tmp_path / "musicgen-small"  # a mono name for the stereo checkpoint
    shutil.copytree(_model_dir(fixtures_dir, "stereo"), misleading)
    model = MusicGen.from_pretrained(misleading, cache_dir=cache)
    assert (model.audio_channels, model.num_codebooks) == (2, 8)
    audio = model.generate("lofi beat", 0.2, seed=0)
    assert audio.shape == (1, 2, 40)


def test_stereo_left_is_even_codebooks_right_is_odd(fixtures_dir: Path, cache: Path) -> None:
    model = _load(fixtures_dir, "stereo", cache)
    codes = _expected(_model_dir(fixtures_dir, "stereo"))["codes"]
    base = model.decode(codes)
    odd_changed = codes.copy()
    odd_changed[:, 1::2] = (odd_changed[:, 1::2] + 7) % model.decoder.config.vocab_size
    changed = model.decode(odd_changed)
    np.testing.assert_array_equal(changed[:, 0], base[:, 0])  # left untouched
    assert np.abs(changed[:, 1] - base[:, 1]).max() > 1e-3
    left = np.array(model.audio_encoder.decode(codes[:, ::2]))
    np.testing.assert_allclose(base[:, :1], left, atol=1e-6)


def test_conversion_happens_once_then_the_cache_is_read(
    fixtures_dir: Path, cache: Path, conversions: list[Path]
) -> None:
    src = _model_dir(fixtures_dir, "mono")
    first = MusicGen.from_pretrained(src, cache_dir=cache)
    assert len(conversions) == 1
    converted = conversions[0]
    assert converted.parent == cache / "musicgen" and converted.is_dir()
    manifest_path = converted / convert.MANIFEST
    stamp = manifest_path.stat().st_mtime_ns
    second = MusicGen.from_pretrained(src, cache_dir=cache)
    assert len(conversions) == 1, "the second load converted again"
    assert manifest_path.stat().st_mtime_ns == stamp
    assert first.source == second.source == str(converted)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format"] == convert.FORMAT and manifest["source"] == str(src.resolve())
    assert manifest["audiogen_version"] == "0.1.0" and manifest["dtype"] == "float32"
    assert (manifest["audio_channels"], manifest["num_codebooks"]) == (1, 4)
    assert sorted(p.name for p in converted.iterdir()) == [
        "decoder",
        "encodec",
        "manifest.json",
        "t5",
        "tokenizer",
    ]
    # No temporary directories are left behind next to the converted copy.
    assert [p.name for p in converted.parent.iterdir()] == [converted.name]


def test_conversion_racing_a_finished_one_keeps_the_winner(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    src = _model_dir(fixtures_dir, "mono")
    dst = convert.convert(src, tmp_path / "converted")
    stamp = (dst / convert.MANIFEST).stat().st_mtime_ns
    # A second process converting the same checkpoint finds dst taken when it renames.
    assert convert.convert(src, dst) == dst
    assert (dst / convert.MANIFEST).stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # its temp dir is gone


def test_default_cache_is_audiogen_cache_env(
    fixtures_dir: Path, cache: Path, conversions: list[Path]
) -> None:
    MusicGen.from_pretrained(_model_dir(fixtures_dir, "mono"))
    assert conversions[0].parent == cache / "musicgen"


def test_edited_checkpoint_is_converted_again(
    fixtures_dir: Path, cache: Path, conversions: list[Path], tmp_path: Path
) -> None:
    src = tmp_path / "model"
    shutil.copytree(_model_dir(fixtures_dir, "mono"), src)
    MusicGen.from_pretrained(src, cache_dir=cache)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config, indent=2))  # new size and mtime
    MusicGen.from_pretrained(src, cache_dir=cache)
    assert len(conversions) == 2 and conversions[0] != conversions[1]


def test_converted_dir_loads_directly(
    fixtures_dir: Path, cache: Path, conversions: list[Path]
) -> None:
    MusicGen.from_pretrained(_model_dir(fixtures_dir, "stereo"), cache_dir=cache)
    converted = conversions[0]
    model = MusicGen.from_pretrained(converted, cache_dir=cache / "unused", dtype="float32")
    assert len(conversions) == 1 and not (cache / "unused").exists()
    _check_parity(model, _expected(_model_dir(fixtures_dir, "stereo")))


def test_sharded_safetensors_checkpoint(fixtures_dir: Path, cache: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    src = _model_dir(fixtures_dir, "stereo")
    sharded = tmp_path / "sharded"
    shutil.copytree(src, sharded, ignore=shutil.ignore_patterns("model.safetensors"))
    tensors = load_file(str(src / "model.safetensors"))
    keys = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    weight_map = {}
    for shard, names in shards.items():
        save_file({k: tensors[k] for k in names}, str(sharded / shard))
        weight_map.update(dict.fromkeys(names, shard))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = MusicGen.from_pretrained(sharded, cache_dir=cache, dtype="float32")
    _check_parity(model, _expected(src))


def test_hub_repo_through_fake_hub(fixtures_dir: Path, cache: Path, fake_hub: Any) -> None:
    src = _model_dir(fixtures_dir, "mono")
    files: dict[str, Any] = {
        p.name: p for p in src.iterdir() if p.is_file() and p.name != "expected.npz"
    }
    files["pytorch_model.bin"] = b"not needed: safetensors are there"
    files["README.md"] = "# musicgen-small"
    fake_hub.add("facebook/musicgen-small", files)
    model = MusicGen.from_pretrained("facebook/musicgen-small", cache_dir=cache, dtype="float32")
    assert fake_hub.count == 1
    call = fake_hub.calls[0]
    assert call["repo_id"] == "facebook/musicgen-small"
    snapshot = Path(fake_hub.snapshot_download("facebook/musicgen-small", local_files_only=True))
    got = sorted(p.name for p in snapshot.iterdir())
    assert got == sorted(set(files) - {"pytorch_model.bin", "README.md"})  # allow-list worked
    _check_parity(model, _expected(src))
    manifest = json.loads((Path(model.source) / convert.MANIFEST).read_text())
    assert manifest["source"] == "facebook/musicgen-small"
    assert manifest["revision"] == snapshot.name
    # Offline: the snapshot cache and the converted copy are enough.
    again = MusicGen.from_pretrained("facebook/musicgen-small", cache_dir=cache, offline=True)
    assert again.source == model.source


def test_unknown_hub_repo_needs_trust(cache: Path, fake_hub: Any) -> None:
    with pytest.raises(InvalidInputError, match="trust_remote_code"):
        MusicGen.from_pretrained("someone/musicgen-copy", cache_dir=cache)
    assert fake_hub.count == 0


def _bin_only(fixtures_dir: Path, directory: Path, bins: dict[str, bytes]) -> Path:
    directory.mkdir()
    src = _model_dir(fixtures_dir, "mono")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(src / name, directory / name)
    for name, data in bins.items():
        (directory / name).write_bytes(data)
    return directory


def test_bin_only_dir_says_what_to_install(
    fixtures_dir: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without audiogen-convert installed (with it, .bin is read: tests/convert cover that).
    monkeypatch.setitem(sys.modules, "audiogen_convert.formats", None)
    single = _bin_only(fixtures_dir, tmp_path / "medium", {"pytorch_model.bin": b"\x80\x02"})
    with pytest.raises(WeightsError, match=r'pip install "audiogen-convert\[torch\]"') as e:
        MusicGen.from_pretrained(single, cache_dir=cache)
    assert "pytorch_model.bin" in str(e.value) and str(single) in str(e.value)
    sharded = _bin_only(
        fixtures_dir,
        tmp_path / "large",
        {
            "pytorch_model-00001-of-00002.bin": b"",
            "pytorch_model-00002-of-00002.bin": b"",
            "pytorch_model.bin.index.json": b"{}",
        },
    )
    with pytest.raises(WeightsError, match=r"audiogen-convert\[torch\]"):
        MusicGen.from_pretrained(sharded, cache_dir=cache)
    assert not (cache / "musicgen").exists() or not any((cache / "musicgen").iterdir())


def test_missing_and_garbage_dirs(fixtures_dir: Path, cache: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        MusicGen.from_pretrained(tmp_path / "nope", cache_dir=cache)
    with pytest.raises(InvalidInputError, match="does not exist"):
        MusicGen.from_pretrained("./nope/model", cache_dir=cache)

    empty = tmp_path / "garbage"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(WeightsError, match="not a MusicGen model directory") as e:
        MusicGen.from_pretrained(empty, cache_dir=cache)
    assert str(empty) in str(e.value)

    (empty / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="unreadable JSON") as e:
        MusicGen.from_pretrained(empty, cache_dir=cache)
    assert str(empty / "config.json") in str(e.value)

    (empty / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    with pytest.raises(WeightsError, match="not a MusicGen config"):
        MusicGen.from_pretrained(empty, cache_dir=cache)

    melody = json.loads((_model_dir(fixtures_dir, "mono") / "config.json").read_text())
    melody["model_type"] = "musicgen_melody"
    (empty / "config.json").write_text(json.dumps(melody))
    with pytest.raises(MissingWeightsError, match=r"no model\.safetensors"):
        MusicGen.from_pretrained(empty, cache_dir=cache)  # a melody config, but no weights


def test_broken_checkpoints_name_the_file(fixtures_dir: Path, cache: Path, tmp_path: Path) -> None:
    src = _model_dir(fixtures_dir, "mono")
    truncated = tmp_path / "truncated"
    shutil.copytree(src, truncated)
    data = (src / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match="truncated") as e:
        MusicGen.from_pretrained(truncated, cache_dir=cache)
    assert str(truncated / "model.safetensors") in str(e.value)

    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(src, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(MissingWeightsError, match="no tokenizer"):
        MusicGen.from_pretrained(no_tokenizer, cache_dir=cache)

    from safetensors.numpy import load_file, save_file

    missing = tmp_path / "missing_key"
    shutil.copytree(src, missing)
    tensors = load_file(str(src / "model.safetensors"))
    del tensors["decoder.model.decoder.layers.1.fc2.weight"]
    save_file(tensors, str(missing / "model.safetensors"))
    with pytest.raises(MissingWeightsError, match=r"layers\.1\.fc2") as missing_error:
        MusicGen.from_pretrained(missing, cache_dir=cache)
    assert str(missing / "model.safetensors") in str(missing_error.value)
    # Checked before writing: nothing (not even a temporary directory) reached the cache.
    assert not (cache / "musicgen").exists() or not any((cache / "musicgen").iterdir())


def test_broken_converted_dir(fixtures_dir: Path, cache: Path, conversions: list[Path]) -> None:
    MusicGen.from_pretrained(_model_dir(fixtures_dir, "mono"), cache_dir=cache)
    converted = conversions[0]
    manifest = json.loads((converted / convert.MANIFEST).read_text())
    (converted / convert.MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(WeightsError, match="newer"):
        MusicGen.from_pretrained(converted)
    (converted / convert.MANIFEST).write_text(json.dumps(manifest))
    (converted / "encodec" / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match=r"encodec/model\.safetensors"):
        MusicGen.from_pretrained(converted)


@pytest.fixture(scope="module")
def mono(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> MusicGen:
    cache = tmp_path_factory.mktemp("cache")
    return MusicGen.from_pretrained(_model_dir(fixtures_dir, "mono"), cache_dir=cache)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompts": ""}, "prompt 0 is empty"),
        ({"prompts": ["ok", "   "]}, "prompt 1 is empty"),
        ({"prompts": []}, "non-empty list"),
        ({"prompts": ["ok", 3]}, "must be a string"),
        ({"duration": 0}, "duration"),
        ({"duration": 31}, "duration"),
        ({"duration": float("nan")}, "duration"),
        ({"duration": -1.0}, "duration"),
        ({"duration": True}, "duration"),
        ({"duration": "5"}, "duration"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.1}, "top_p"),
        ({"top_p": float("nan")}, "top_p"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"seed": -1}, "seed"),
        ({"progress": "yes"}, "progress"),
    ],
)
def test_bad_inputs(mono: MusicGen, kwargs: dict[str, Any], match: str) -> None:
    args = {"prompts": "lofi beat", "duration": 0.2, "seed": 0, **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        mono.generate(**args)


def test_bad_dtype(fixtures_dir: Path, cache: Path) -> None:
    with pytest.raises(InvalidInputError, match="dtype"):
        MusicGen.from_pretrained(_model_dir(fixtures_dir, "mono"), cache_dir=cache, dtype="int8")


def test_long_prompt_warns_and_is_truncated(mono: MusicGen) -> None:
    text = "epic drums with a long tail " * 80  # > 2000 characters, > 512 tokens
    with pytest.warns(UserWarning, match="characters"):
        states, mask = mono.encode_text(text)
    assert states.shape[1] == 512 and mask.shape == (1, 512)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mono.encode_text("short prompt")


def test_same_seed_same_codes(mono: MusicGen) -> None:
    a = mono.generate_codes(["lofi beat", "epic drums"], 0.3, seed=7)
    b = mono.generate_codes(["lofi beat", "epic drums"], 0.3, seed=7)
    c = mono.generate_codes(["lofi beat", "epic drums"], 0.3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 4, 15) and a.dtype == np.int32
    assert (a != c).any()
    assert a.min() >= 0 and a.max() < mono.decoder.config.vocab_size  # no pad id leaks out
    unseeded = [mono.generate_codes("lofi beat", 0.3) for _ in range(2)]
    assert (unseeded[0] != unseeded[1]).any()


def test_sampling_knobs_reach_the_sampler(mono: MusicGen) -> None:
    # top_k=1 is greedy whatever the seed; so is a tiny top_p (only the top token survives).
    greedy = mono.generate_codes("lofi beat", 0.3, greedy=True)
    for seed in (1, 2):
        np.testing.assert_array_equal(
            mono.generate_codes("lofi beat", 0.3, top_k=1, seed=seed), greedy
        )
        np.testing.assert_array_equal(
            mono.generate_codes("lofi beat", 0.3, top_k=None, top_p=1e-6, seed=seed), greedy
        )


def test_duration_sets_frames_and_samples(mono: MusicGen) -> None:
    assert mono.frame_rate == 50 and mono.sample_rate == 200
    assert mono.num_frames(0.1) == 5  # 0.1·50 is 5.000000000000001 in floats
    assert mono.num_frames(0.51) == 26  # rounded up: the audio covers the duration
    assert mono.num_frames(30) == 1500
    audio = mono.generate("lofi beat", 0.51, seed=0)
    assert audio.shape == (1, 1, round(0.51 * 200))
    assert np.isfinite(audio).all()


def test_progress_reports_every_step(mono: MusicGen) -> None:
    seen: list[tuple[int, int]] = []
    mono.generate_codes("lofi beat", 0.2, seed=0, progress=lambda s, t: seen.append((s, t)))
    total = 10 + 3  # frames + delays
    assert seen[-1] == (total, total)
    # Step t is reported once its tokens exist (the host stays one step ahead, so the last but
    # one is reported together with the last).
    assert [s for s, _ in seen] == [*range(1, total - 1), total]
    assert {t for _, t in seen} == {total}


def test_progress_bar(mono: MusicGen, capsys: pytest.CaptureFixture[str]) -> None:
    mono.generate_codes("lofi beat", 0.2, seed=0, progress=True)
    assert "13/13" in capsys.readouterr().err


def test_save_writes_audio(mono: MusicGen, tmp_path: Path) -> None:
    audio = mono.generate(["lofi beat"], 0.4, seed=3)
    path = mono.save(audio[0], tmp_path / "beat.wav", subtype="FLOAT")
    back, rate = audio_io.read(path)
    assert rate == mono.sample_rate
    np.testing.assert_allclose(back, audio[0], atol=1e-7)


def test_float16_loads_and_generates(fixtures_dir: Path, cache: Path) -> None:
    import mlx.core as mx

    model = MusicGen.from_pretrained(
        _model_dir(fixtures_dir, "mono"), cache_dir=cache, dtype="float16"
    )
    assert model.decoder.lm_heads.weight.dtype == mx.float16
    audio = model.generate("lofi beat", 0.2, seed=0)
    assert audio.dtype == np.float32 and np.isfinite(audio).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_live_parity_with_transformers(
    torch: ModuleType, cache: Path, tmp_path: Path, name: str
) -> None:
    builder = _builder()
    channels = 2 if name == "stereo" else 1
    tokenizer = builder.load_tokenizer()
    frames = 50
    for seed in range(100, 120):  # fresh weights, not the fixture's
        model = builder.make_model(torch, audio_channels=channels, seed=seed)
        data = builder.reference_generate(torch, model, tokenizer, frames)
        if data["margin"] > 1e-4:
            break
    else:
        pytest.fail("no seed gave unambiguous greedy steps")
    src = tmp_path / f"upstream-{name}"
    builder.save_upstream(model, tokenizer, src)
    ours = MusicGen.from_pretrained(src, cache_dir=cache, dtype="float32")
    expected = {
        **data,
        "prompts": np.array(builder.PROMPTS),
        "duration": np.float64(frames / builder.FRAME_RATE),
        "guidance_scale": np.float64(builder.GUIDANCE),
    }
    _check_parity(ours, expected)


def test_hub_repo_with_only_bin_weights_fetches_them_when_readable(
    fixtures_dir: Path, cache: Path, tmp_path: Path, fake_hub: Any, torch: ModuleType
) -> None:
    """Like facebook/musicgen-medium: a first pass finds no safetensors, a second fetches the
    .bin (read by audiogen-convert with torch) and generation matches the safetensors model."""
    from safetensors.torch import load_file

    src = _model_dir(fixtures_dir, "mono")
    repo = _bin_only(fixtures_dir, tmp_path / "repo", {})
    torch.save(load_file(src / "model.safetensors"), repo / "pytorch_model.bin")
    fake_hub.add_dir("facebook/musicgen-medium", repo)
    m = MusicGen.from_pretrained("facebook/musicgen-medium", cache_dir=cache)
    assert fake_hub.count == 2
    assert "pytorch_model.bin" in fake_hub.calls[1]["allow_patterns"]
    assert "pytorch_model.bin" not in fake_hub.calls[0]["allow_patterns"]
    ref = MusicGen.from_pretrained(src, cache_dir=cache)
    np.testing.assert_array_equal(
        m.generate_codes("lofi beat", 0.3, greedy=True),
        ref.generate_codes("lofi beat", 0.3, greedy=True),
    )


def test_hub_repo_with_only_bin_weights_and_no_reader_downloads_nothing_more(
    fixtures_dir: Path, cache: Path, tmp_path: Path, fake_hub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "audiogen_convert.formats", None)
    repo = _bin_only(fixtures_dir, tmp_path / "repo", {"pytorch_model.bin": b"\x80\x02"})
    fake_hub.add_dir("facebook/musicgen-medium", repo)
    with pytest.raises(WeightsError, match=r'pip install "audiogen-convert\[torch\]"'):
        MusicGen.from_pretrained("facebook/musicgen-medium", cache_dir=cache)
    assert fake_hub.count == 1

"""T5 tokenizer parity with transformers ``T5TokenizerFast`` (models/t5/tokenization_t5.py) called
as ``tok(texts, padding="longest", truncation=True, max_length=...)``. Ids must be identical."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import InvalidInputError, WeightsError
from audiogen_core.tokenizer import T5Tokenizer

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EDGE_EXTRA = ["ＡＢＣ full width", "ﬁ ligature", "①② circled", "Ⅻ roman", "x\u3000y", "\u200b"]


@pytest.fixture(scope="module")
def tok_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "t5" / "tokenizer"


@pytest.fixture(scope="module")
def cases(fixtures_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (fixtures_dir / "t5" / "tokenizer_cases.json").read_text(encoding="utf-8")
    )
    return data


def test_fixture_single_prompts_identical(tok_dir: Path, cases: dict[str, Any]) -> None:
    tok = T5Tokenizer.from_pretrained(tok_dir)
    assert tok.vocab_size == cases["vocab_size"]
    for case in cases["cases"]:
        ids, mask = tok(case["text"], max_length=10**6)
        assert ids.tolist() == [case["input_ids"]], repr(case["text"])
        assert mask.tolist() == [[1] * len(case["input_ids"])]


def test_fixture_padded_truncated_batches_identical(tok_dir: Path, cases: dict[str, Any]) -> None:
    tok = T5Tokenizer.from_pretrained(tok_dir)
    for batch in cases["batches"]:
        ids, mask = tok(batch["texts"], max_length=batch["max_length"])
        assert ids.dtype == np.int32 and mask.dtype == np.int32
        assert ids.tolist() == batch["input_ids"]
        assert mask.tolist() == batch["attention_mask"]
        assert ids.shape[1] <= batch["max_length"]
        lengths = mask.sum(axis=1)
        # every row ends in </s>, padding after it is id 0
        assert all(ids[i, n - 1] == tok.eos_id for i, n in enumerate(lengths))
        assert (ids[mask == 0] == tok.pad_id).all()


def test_long_prompt_truncated_to_512_including_eos(tok_dir: Path, cases: dict[str, Any]) -> None:
    tok = T5Tokenizer.from_pretrained(tok_dir)
    long_case = max(cases["cases"], key=lambda c: len(c["input_ids"]))
    assert len(long_case["input_ids"]) > 512
    ids, _ = tok(long_case["text"])
    assert ids.shape == (1, 512)
    assert ids[0, :511].tolist() == long_case["input_ids"][:511]
    assert ids[0, 511] == tok.eos_id


def test_bad_inputs(tok_dir: Path) -> None:
    tok = T5Tokenizer.from_pretrained(tok_dir)
    for bad in ([], None, ["ok", 3], b"bytes"):
        with pytest.raises(InvalidInputError, match="texts"):
            tok(bad)  # type: ignore[arg-type]
    for bad_len in (0, -5, 2.5, True):
        with pytest.raises(InvalidInputError, match="max_length"):
            tok("x", max_length=bad_len)  # type: ignore[arg-type]


def test_missing_and_corrupt_files(tok_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="nope"):
        T5Tokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(WeightsError, match=r"no tokenizer\.json or spiece\.model"):
        T5Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Unigram"')
    with pytest.raises(WeightsError, match=r"tokenizer\.json.*unreadable"):
        T5Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Unigram", "vocab": 5}}')
    with pytest.raises(WeightsError, match=r"tokenizer\.json.*invalid"):
        T5Tokenizer.from_pretrained(tmp_path)
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"] = {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=r"tokenizer\.json.*Unigram"):
        T5Tokenizer.from_pretrained(tmp_path)


def test_spiece_only_without_converter_names_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "spiece.model").write_bytes(b"\x00")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(
        WeightsError, match=rf"{tmp_path}.*spiece\.model.*needs transformers, sentencepiece"
    ):
        T5Tokenizer.from_pretrained(tmp_path)


def _reference(path: Path) -> Any:
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # lazy alias in v5

    return T5TokenizerFast.from_pretrained(str(path))


def _assert_same(ours: T5Tokenizer, ref: Any, texts: list[str], max_length: int) -> None:
    enc = ref(texts, padding="longest", truncation=True, max_length=max_length)
    ids, mask = ours(texts, max_length=max_length)
    assert ids.tolist() == enc["input_ids"], (texts, max_length)
    assert mask.tolist() == enc["attention_mask"], (texts, max_length)


TEXT = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["", " ", "</s>", "<pad> <unk>", "Café 🎸", "a  b\t\nc"]
)


def test_live_edge_cases_match(torch: ModuleType, tok_dir: Path, cases: dict[str, Any]) -> None:
    ours, ref = T5Tokenizer.from_pretrained(tok_dir), _reference(tok_dir)
    texts = [c["text"] for c in cases["cases"]] + EDGE_EXTRA
    for max_length in (512, 1, 2, 7, 100):
        _assert_same(ours, ref, texts, max_length)
        for text in texts:
            _assert_same(ours, ref, [text], max_length)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(TEXT, min_size=1, max_size=4), max_length=st.integers(1, 40))
def test_live_generated_text_matches(
    torch: ModuleType, tok_dir: Path, texts: list[str], max_length: int
) -> None:
    _assert_same(T5Tokenizer.from_pretrained(tok_dir), _reference(tok_dir), texts, max_length)


def _spm_model(corpus: list[str]) -> bytes:
    """A SentencePiece Unigram model in T5's id layout (pad 0, eos 1, unk 2, no bos) with the
    NFKC normalisation real T5 checkpoints use."""
    sentencepiece = pytest.importorskip("sentencepiece")
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 3),
        model_writer=buf,
        vocab_size=200,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
    )
    return buf.getvalue()


def _proto_fields(data: bytes) -> list[tuple[int, Any]]:
    """Top-level (field number, value) pairs of a protobuf message (wire format by hand, so the
    test needs no protobuf package)."""
    out, i = [], 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 2:
            n = varint()
            value, i = data[i : i + n], i + n
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((field, value))
    return out


@pytest.fixture(scope="module")
def spm_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dir with only spiece.model, dir with a transformers-saved tokenizer.json whose normaliser
    is SentencePiece's Precompiled charsmap, as on the hub's t5-base)."""
    import importlib.util

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "fixtures"))
    try:
        corpus = importlib.import_module("t5").CORPUS
    finally:
        sys.path.pop(0)
    model = _spm_model(corpus)
    spm_only = tmp_path_factory.mktemp("spiece")
    (spm_only / "spiece.model").write_bytes(model)

    sentencepiece = importlib.import_module("sentencepiece")
    sp = sentencepiece.SentencePieceProcessor(model_proto=model)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    normalizer_spec = next(v for f, v in _proto_fields(model) if f == 3)
    charsmap = next(v for f, v in _proto_fields(normalizer_spec) if f == 2)
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Precompiled(charsmap)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # lazy alias in v5

    json_dir = tmp_path_factory.mktemp("precompiled")
    T5TokenizerFast(tokenizer_object=tok, extra_ids=0).save_pretrained(str(json_dir))
    assert "Precompiled" in (json_dir / "tokenizer.json").read_text(encoding="utf-8")
    return spm_only, json_dir


def test_live_precompiled_normalizer_matches(
    torch: ModuleType, spm_dirs: tuple[Path, Path], cases: dict[str, Any]
) -> None:
    _, json_dir = spm_dirs
    ours, ref = T5Tokenizer.from_pretrained(json_dir), _reference(json_dir)
    texts = [c["text"] for c in cases["cases"]] + EDGE_EXTRA
    # NFKC must be in effect: full-width letters normalise to ASCII ones
    assert ours("ＡＢＣ")[0].tolist() == ours("ABC")[0].tolist()
    for max_length in (512, 5):
        _assert_same(ours, ref, texts, max_length)
        for text in texts:
            _assert_same(ours, ref, [text], max_length)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(TEXT, min_size=1, max_size=4), max_length=st.integers(1, 40))
def test_live_precompiled_generated_text_matches(
    torch: ModuleType, spm_dirs: tuple[Path, Path], texts: list[str], max_length: int
) -> None:
    _, json_dir = spm_dirs
    _assert_same(T5Tokenizer.from_pretrained(json_dir), _reference(json_dir), texts, max_length)


def test_live_spiece_only_conversion_matches(
    torch: ModuleType, spm_dirs: tuple[Path, Path], cases: dict[str, Any]
) -> None:
    pytest.importorskip("google.protobuf", reason="transformers reads spiece.model via protobuf")
    spm_only, _ = spm_dirs
    ours, ref = T5Tokenizer.from_pretrained(spm_only), _reference(spm_only)
    texts = [c["text"] for c in cases["cases"]] + EDGE_EXTRA
    _assert_same(ours, ref, texts, 512)

"""T5 SentencePiece tokenizer on the ``tokenizers`` library (no transformers at run time).

Matches transformers 5's ``T5Tokenizer`` (``models/t5/tokenization_t5.py``), which does not use a
``tokenizer.json`` pipeline as saved: it keeps the Unigram vocabulary and only a ``Precompiled``
SentencePiece normaliser, and always uses WhitespaceSplit + Metaspace pre-tokenisation and an
``$A </s>`` post-processor. We load the file and impose the same pipeline, so ids agree.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import os
from pathlib import Path
from typing import Any

from audiogen_core.errors import InvalidInputError, WeightsError

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors

_PAD = "<pad>"
_EOS = "</s>"


def _precompiled_charsmap(normalizer: Any) -> bytes | None:
    """The SentencePiece charsmap of a ``tokenizer.json`` normaliser (alone or in a Sequence)."""
    if not isinstance(normalizer, dict):
        return None
    if normalizer.get("type") == "Sequence":
        items = normalizer.get("normalizers") or []
    else:
        items = [normalizer]
    for item in items:
        if isinstance(item, dict) and item.get("type") == "Precompiled":
            charsmap = item.get("precompiled_charsmap")
            if isinstance(charsmap, str):
                return base64.b64decode(charsmap)
    return None


class T5Tokenizer:
    """Text → ``(input_ids, attention_mask)`` int32 arrays ``(B, L)``, right-padded with id 0,
    each row ending in ``</s>``; ids identical to transformers'
    ``T5TokenizerFast(texts, padding="longest", truncation=True, max_length=...)``."""

    def __init__(self, tokenizer: Tokenizer, source: str | os.PathLike[str] = "tokenizer") -> None:
        self.source = Path(source)
        self._tokenizer = tokenizer
        eos_id = tokenizer.token_to_id(_EOS)
        pad_id = tokenizer.token_to_id(_PAD)
        if eos_id is None or pad_id is None:
            raise WeightsError(f"{source}: not a T5 tokenizer (no {_EOS} or {_PAD} token)")
        self.eos_id: int = eos_id
        self.pad_id: int = pad_id

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> T5Tokenizer:
        """Load ``tokenizer.json`` from a directory, or convert its ``spiece.model`` (needs
        transformers and sentencepiece, imported only then)."""
        root = Path(path)
        if not root.is_dir():
            raise WeightsError(f"{root}: tokenizer directory not found")
        if (root / "tokenizer.json").is_file():
            return cls(_load_tokenizer_json(root / "tokenizer.json"), root / "tokenizer.json")
        if (root / "spiece.model").is_file():
            return cls(_convert_spiece(root), root / "spiece.model")
        raise WeightsError(f"{root}: no tokenizer.json or spiece.model")

    def __call__(
        self, texts: str | list[str], max_length: int = 512
    ) -> tuple[np.ndarray, np.ndarray]:
        batch = [texts] if isinstance(texts, str) else texts
        if not isinstance(batch, list) or not batch:
            raise InvalidInputError("texts must be a string or a non-empty list of strings")
        for text in batch:
            if not isinstance(text, str):
                raise InvalidInputError(f"texts must be strings, got {type(text).__name__}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise InvalidInputError(f"max_length must be a positive integer, got {max_length!r}")
        tok = self._tokenizer
        # The settings transformers passes for padding="longest", truncation=True; the backend's
        # truncation reserves room for the post-processor's </s>.
        tok.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
        tok.enable_padding(direction="right", pad_id=self.pad_id, pad_token=_PAD)
        encodings = tok.encode_batch(batch, add_special_tokens=True)
        ids = np.array([e.ids for e in encodings], dtype=np.int32)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int32)
        return ids, mask


def _load_tokenizer_json(path: Path) -> Tokenizer:
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: unreadable tokenizer file: {e}") from e
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as e:  # tokenizers (pyo3) raises a plain Exception for bad content
        raise WeightsError(f"{path}: invalid tokenizer file: {e}") from e
    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict) or model.get("type") != "Unigram":
        raise WeightsError(f"{path}: not a T5 (SentencePiece Unigram) tokenizer")
    try:
        charsmap = _precompiled_charsmap(raw.get("normalizer"))
    except (binascii.Error, ValueError) as e:
        raise WeightsError(f"{path}: bad precompiled_charsmap: {e}") from e
    eos_id = tokenizer.token_to_id(_EOS)
    if eos_id is None:
        raise WeightsError(f"{path}: not a T5 tokenizer (no {_EOS} token)")
    tokenizer.normalizer = normalizers.Precompiled(charsmap) if charsmap is not None else None
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", _EOS],
        pair=["$A", _EOS, "$B", _EOS],
        special_tokens=[(_EOS, eos_id)],
    )
    return tokenizer


def _missing_modules(names: tuple[str, ...]) -> list[str]:
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _convert_spiece(root: Path) -> Tokenizer:
    # transformers reads spiece.model with sentencepiece's protobuf schema; without protobuf it
    # silently falls back to a tiktoken reader and fails with an unrelated message, so check first.
    missing = _missing_modules(("transformers", "sentencepiece", "google.protobuf"))
    if missing:
        raise WeightsError(
            f"{root}: has only spiece.model; converting it needs {', '.join(missing)} "
            "(pip install transformers sentencepiece protobuf), or supply a tokenizer.json"
        )
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # lazy alias in v5

    try:
        converted = T5TokenizerFast.from_pretrained(str(root))  # nosec B615
    except (ImportError, OSError, ValueError) as e:
        raise WeightsError(f"{root}: cannot convert spiece.model: {e}") from e
    backend: Tokenizer = converted.backend_tokenizer
    return Tokenizer.from_str(backend.to_str())


__all__ = ["T5Tokenizer"]

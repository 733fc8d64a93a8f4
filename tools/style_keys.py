"""Upstream key list of facebook/musicgen-style's ``state_dict.bin`` (``best_state``), for
tests/musicgen/test_style_lm.py.

Builds, on torch's meta device (no memory, no download), audiocraft's ``LMModel`` as
``builders.get_lm_model`` does for the musicgen-style config (medium scale: dim 1536, 24 heads,
48 layers, n_q 4, card 2048; config/model/lm/{default,musicgen_lm}.yaml,
model_scale/medium.yaml, conditioner/style2music.yaml) with a conditioning provider holding the
text conditioner's ``output_proj`` (Linear 768 → 1536; T5 itself is not in the checkpoint), and
the style conditioner's modules (``embed``, ``transformer``, ``batch_norm``, ``rvq``,
``output_proj``) as ``StyleConditioner.__init__`` builds them (tools/fixtures/style.py
``make_blocks``; with audiocraft main installed the real ``StyleConditioner``'s keys are checked
to be the same). Writes key names, shapes and the ``xp.cfg`` sections to
tests/fixtures/musicgen_keys/style.json. Run:

    uv run python tools/style_keys.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "musicgen_keys" / "style.json"
MEDIUM = {"dim": 1536, "num_heads": 24, "num_layers": 48, "hidden_scale": 4, "n_q": 4,
          "card": 2048}  # fmt: skip
T5_WIDTH = 768
# style2music.yaml's conditioners.self_wav.style (sample_rate resolves to the model's 32 kHz).
STYLE = {
    "model_name": "mert", "transformer_scale": "default", "sample_rate": 32000,
    "encodec_checkpoint": "//pretrained/facebook/encodec_32khz", "encodec_n_q": 3, "length": 3.0,
    "ds_factor": 15, "n_q_out": 6, "eval_q": 3, "q_dropout": True, "bins": 1024,
    "varying_lengths": [1.5, 4.5], "batch_norm": True, "compute_mask": True,
    "num_codebooks_lm": 4, "ds_rate_compression": 640, "use_middle_of_segment": False,
    "rvq_threshold_ema_dead_code": 0.1,
}  # fmt: skip
STYLE_SHAPE = {"dim": 512, "num_heads": 8, "num_layers": 8, "ffn_dim": 2048, "output_dim": 1536,
               "n_q": 6, "bins": 1024}  # fmt: skip


def _load(name: str) -> Any:
    path = ROOT / "tools" / "fixtures" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_fixture_builder", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def xp_cfg() -> dict[str, Any]:
    cfg: dict[str, Any] = _load("style_lm").xp_cfg(MEDIUM)
    cfg["conditioners"] = {
        "self_wav": {"model": "style", "style": STYLE},
        "description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False,
                                              "word_dropout": 0.2, "normalize_text": False}},
    }  # fmt: skip
    return cfg


def upstream_keys(torch: Any) -> dict[str, list[int]]:
    """``best_state`` key names and shapes (torch layout)."""
    style_lm, style = _load("style_lm"), _load("style")
    ac = style_lm.import_lm(torch)
    cfg = xp_cfg()
    with torch.device("meta"):
        lm = style_lm.make_lm(torch, ac, cfg, T5_WIDTH)
        blocks = style.make_blocks(torch, ac, STYLE_SHAPE, seed=0)
    keys = {k: list(v.shape) for k, v in lm.state_dict().items()}
    style_keys = {
        style.PREFIX + k: list(v.shape) for k, v in blocks.state_dict().items()
    }  # fmt: skip
    main = style.import_audiocraft(torch, conditioners=True)
    if main["conditioners"] is not None:  # audiocraft main: the real class has the same keys
        stand_in = style.MertStandIn(torch, torch.zeros(1, 1, 768), 72000)
        sc = style.make_conditioner(torch, main, stand_in, output_dim=MEDIUM["dim"])
        real = {style.PREFIX + k: list(v.shape) for k, v in sc.state_dict().items()}
        assert real == style_keys, sorted(set(real) ^ set(style_keys))
    return {**keys, **style_keys}


def main() -> None:
    import torch

    keys = upstream_keys(torch)
    data = {"repo": "facebook/musicgen-style", "xp_cfg": xp_cfg(), "keys": keys}
    OUT.write_text(json.dumps(data, indent=0) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(keys)} keys")


if __name__ == "__main__":
    main()

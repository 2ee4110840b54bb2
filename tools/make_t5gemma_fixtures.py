"""Write tests/fixtures/t5gemma/: a tiny T5Gemma folder and transformers' encoder outputs on it.

Runs in the Stable Audio 3 reference venv (transformers 5.8), never in CI:

    /tmp/sa3-ref/bin/python tools/make_t5gemma_fixtures.py

The model is a narrow random `T5GemmaForConditionalGeneration` (decoder and lm_head included, as
in `google/t5gemma-b-b-ul2`, so the loader must skip them): grouped-query attention (4 query heads
over 2 key/value heads), a head width (4 x 16) unlike the hidden size (48), query_pre_attn_scalar
unlike head_dim, alternating sliding (window 4) / full layers, and a small attn_logit_softcapping
so that applying it visibly changes the output. Every parameter is drawn from a seeded generator.

Written under OUT:
  float32/   the folder saved by save_pretrained in float32: config.json, model.safetensors,
             tokenizer.json, tokenizer_config.json
  bfloat16/  the same model cast to bfloat16 and saved (config.json says "dtype": "bfloat16")
  expected.safetensors  for the prompts in inputs.json, loaded the way the SA3 reference's
             T5GemmaConditioner loads them (AutoTokenizer; AutoConfig with is_encoder_decoder=False;
             T5GemmaEncoderModel.from_pretrained with transformers' default attention, sdpa):
               input_ids, attention_mask             the batch, padded to 256 tokens
               float32.batch / bfloat16.batch        last_hidden_state of the batch
               single.input_ids, float32.single, bfloat16.single
                                                     the long prompt alone (no padding: sdpa then
                                                     gets no mask on the full-attention layer)
               float32.eager_softcapped              attn_implementation="eager" (applies the
                                                     softcap) on the batch's first two prompts
  inputs.json  the prompts, max_length, attention implementation used

The tokenizer is built by tests/fixture_inputs.py (build_t5gemma_test_tokenizer), which the tests use too.
Its tokenizer.json adds only <bos>; tokenizer_config.json sets add_bos_token and add_eos_token,
which transformers 5 applies by rewriting the post-processor (so ids end with <eos>).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (AutoConfig, AutoTokenizer, PreTrainedTokenizerFast, T5GemmaConfig,
                          T5GemmaEncoderModel, T5GemmaForConditionalGeneration)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tokenizer is built by the same code as the tests'

from fixture_inputs import build_t5gemma_test_tokenizer  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "t5gemma"
SEED = 20260517
MAX_LENGTH = 256  # the SA3 conditioner's max_length
LONG_PROMPT = " ".join(["warm analog synth pad with slow filter sweep and vinyl crackle"] * 40)
PROMPTS = [
    "",
    "lo-fi hip hop beat 90 BPM",
    LONG_PROMPT,  # > 256 tokens: truncated
    "Café ambient — 日本の雨 drums ✓ naïve",
]
ENCODER = dict(
    hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=4,
    layer_types=["sliding_attention", "full_attention"], attn_logit_softcapping=2.0,
    final_logit_softcapping=30.0, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)
# tokenizer_config.json's padding_side per folder; None: absent, so GemmaTokenizer pads on the left.
PADDING_SIDES = {"float32": None, "bfloat16": "right"}
DECODER = dict(
    ENCODER, hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=1, layer_types=["sliding_attention"],
)




def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Fill every parameter from a seeded generator (transformers zero-inits the RMSNorm weights)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(module.named_parameters(), key=lambda item: item[0]):
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[-1]))
            else:  # RMSNorm weights: the norm scales by (1 + weight)
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))


def save_tokenizer(folder: Path, padding_side: str | None) -> None:
    """tokenizer.json + tokenizer_config.json naming transformers' GemmaTokenizer, as Gemma folders
    do; without padding_side that class pads on the left."""
    fast = PreTrainedTokenizerFast(tokenizer_object=build_t5gemma_test_tokenizer(), pad_token="<pad>",
                                   eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")
    fast.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    settings = json.loads(config_path.read_text(encoding="utf-8"))
    settings["tokenizer_class"] = "GemmaTokenizer"
    settings.pop("padding_side", None)
    if padding_side is not None:
        settings["padding_side"] = padding_side
    config_path.write_text(json.dumps(settings, indent=2), encoding="utf-8")


def load_like_reference(folder: Path, attn_implementation: str | None = None):
    """The calls of stable_audio_3's T5GemmaConditioner (dtype: transformers' default, "auto")."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    config.is_encoder_decoder = False
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = T5GemmaEncoderModel.from_pretrained(folder, config=config, **extra).eval()
    return tokenizer, model


def run(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask)["last_hidden_state"].contiguous()


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    vocab_size = build_t5gemma_test_tokenizer().get_vocab_size()
    config = T5GemmaConfig(encoder=dict(ENCODER, vocab_size=vocab_size), decoder=dict(DECODER, vocab_size=vocab_size),
                           vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = T5GemmaForConditionalGeneration(config)
    randomize_(model, SEED)
    model.save_pretrained(OUT / "float32")
    model.to(torch.bfloat16).save_pretrained(OUT / "bfloat16")
    for name, padding_side in PADDING_SIDES.items():
        save_tokenizer(OUT / name, padding_side)
        (OUT / name / "generation_config.json").unlink(missing_ok=True)  # unused by an encoder

    expected = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        tokenizer, encoder = load_like_reference(OUT / name)
        assert encoder.config._attn_implementation == "sdpa", encoder.config._attn_implementation
        assert encoder.dtype == dtype, (name, encoder.dtype)
        encoded = tokenizer(PROMPTS, truncation=True, max_length=MAX_LENGTH, padding="max_length",
                            return_tensors="pt")
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"].to(torch.bool)
        single = tokenizer([LONG_PROMPT], truncation=True, max_length=MAX_LENGTH, padding="max_length",
                           return_tensors="pt")
        assert bool(single["attention_mask"].all()), "the long prompt must fill all 256 positions"
        first = 0 if tokenizer.padding_side == "right" else MAX_LENGTH - int(attention_mask[1].sum())
        assert input_ids[1, first] == 2 and input_ids[1, first + int(attention_mask[1].sum()) - 1] == 1
        expected[f"{name}.input_ids"] = input_ids
        expected[f"{name}.attention_mask"] = attention_mask
        expected[f"{name}.batch"] = run(encoder, input_ids, attention_mask)
        expected[f"{name}.single"] = run(encoder, single["input_ids"], single["attention_mask"].to(torch.bool))
        expected["single.input_ids"] = single["input_ids"]
        if name == "float32":
            _, eager = load_like_reference(OUT / name, attn_implementation="eager")
            expected["float32.eager_softcapped"] = run(eager, input_ids[:2], attention_mask[:2])
    save_file({key: value.contiguous() for key, value in expected.items()}, str(OUT / "expected.safetensors"))
    (OUT / "inputs.json").write_text(json.dumps(
        {"prompts": PROMPTS, "max_length": MAX_LENGTH, "attn_implementation": "sdpa",
         "padding_sides": {name: side or "left" for name, side in PADDING_SIDES.items()}, "eager_prompts": 2},
        indent=1, ensure_ascii=False), encoding="utf-8")

    valid = expected["float32.attention_mask"][:2, :, None]
    gap = ((expected["float32.eager_softcapped"] - expected["float32.batch"][:2]) * valid).abs().max()
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)", file=sys.stderr)
    print("tokens per prompt:", expected["float32.attention_mask"].sum(1).tolist(), file=sys.stderr)
    print(f"eager (softcapped) vs sdpa on valid tokens: {float(gap):.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()

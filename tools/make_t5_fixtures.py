"""Write tests/fixtures/t5/: tiny T5 encoders and transformers' outputs on them.

Runs in the transformers venv (never in CI):

    /tmp/tf-ref/bin/python tools/make_t5_fixtures.py

For each variant (relu = original T5 / t5-base, gated-gelu = T5 v1.1 / Flan-T5) it saves a
perturbed random `T5EncoderModel` with `save_pretrained` (config.json + model.safetensors) and
`expected.safetensors` holding transformers' tokenization (PreTrainedTokenizerFast with
padding="max_length", truncation=True) and `last_hidden_state`. It also records transformers'
relative-position buckets over a wide range of distances, and (relu) the float16 output, which is
how stable-audio-tools runs T5. The tokenizer is not saved: tests/fixture_inputs.py builds it for both sides.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
from transformers.models.t5.modeling_t5 import T5Attention

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixture_inputs import build_test_tokenizer  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "t5"
SEED = 20240607
MAX_LENGTH = 20
TEXTS = [
    "a dog barks in the rain",
    "",
    "loud thunder and soft rain then a piano and drums with a synth beat of 120 bpm and "
    "ambient noise and a guitar, then the dogs bark and the drummer drums",
    "Loud  THUNDER,   then quiet piano </s> drums",
]
VARIANTS = {
    # t5-base's layout (SAO 1.0), its bucket settings; head_dim * heads == d_model.
    "relu": dict(feed_forward_proj="relu", d_kv=8, num_heads=4, d_ff=64),
    # Flan-T5 layout; inner attention width (4 x 6) != d_model, and few buckets with a short
    # max_distance so the last (clamped) bucket is reached within MAX_LENGTH tokens.
    "gated-gelu": dict(
        feed_forward_proj="gated-gelu", d_kv=6, num_heads=4, d_ff=48,
        relative_attention_num_buckets=8, relative_attention_max_distance=10,
    ),
}
BUCKET_SETTINGS = [(32, 128), (8, 10)]


def tiny_model(variant: dict) -> T5EncoderModel:
    config = T5Config(vocab_size=100, d_model=32, num_layers=2, **variant)
    model = T5EncoderModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # layer norms start at 1: move them too
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def main() -> None:
    torch.manual_seed(SEED)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_test_tokenizer(), pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    encoded = hf_tokenizer(TEXTS, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                           return_tensors="pt")
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"].bool()
    (OUT / "inputs.json").write_text(json.dumps({"texts": TEXTS, "max_length": MAX_LENGTH}, indent=1))

    for name, variant in VARIANTS.items():
        model = tiny_model(variant)
        folder = OUT / name
        model.save_pretrained(folder)
        with torch.no_grad():
            hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        expected = {
            "input_ids": input_ids.contiguous(),
            "attention_mask": attention_mask.contiguous(),
            "last_hidden_state": hidden.contiguous(),
        }
        if name == "relu":  # stable-audio-tools casts the whole T5 to float16
            with torch.no_grad():
                half = model.half()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            expected["last_hidden_state_float16"] = half.contiguous()
        save_file(expected, str(folder / "expected.safetensors"))

    distances = torch.arange(-300, 301)
    buckets = {"relative_position": distances}
    for num_buckets, max_distance in BUCKET_SETTINGS:
        buckets[f"buckets_{num_buckets}_{max_distance}"] = T5Attention._relative_position_bucket(
            distances, bidirectional=True, num_buckets=num_buckets, max_distance=max_distance
        )
    save_file(buckets, str(OUT / "buckets.safetensors"))

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)", file=sys.stderr)
    print("ids:\n", input_ids, "\nmask sums:", attention_mask.sum(1).tolist(), file=sys.stderr)


if __name__ == "__main__":
    main()

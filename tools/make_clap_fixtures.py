"""Write tests/fixtures/clap/: a tiny CLAP folder and transformers' outputs on it.

Runs in the transformers venv (never in CI):

    /tmp/tf-ref/bin/python tools/make_clap_fixtures.py

`model/` is a Hugging Face CLAP folder as save_pretrained writes it (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json, preprocessor_config.json) for a
perturbed random fused ClapModel: RoBERTa text tower (2 layers, width 32) and HTSAT audio tower
(4 stages, depths 2-2-1-2 so shifted windows run in the two large stages and the last stage's
second block falls back to unshifted whole-grid attention; width 4 -> 32). To stay small the
saved weights leave out the derived `relative_position_index` buffers (224 KB); one copy is kept
in expected.safetensors (as uint8) so the test can put it back. The tokenizer is a byte-level BPE
trained here on a few captions (RoBERTa's special tokens and post-processor).

expected.safetensors holds transformers' results:
- text: ids/mask of TEXTS (padding="max_length", max_length=77, truncation), the penultimate
  hidden states, pooler output (the last layer's first token), text projection, and the
  ClapModel logits against the audio;
- audio, fused and unfused (the same weights without the fusion branch, enable_fusion=false):
  the final-norm tokens (hooked), pooler output and audio projection for input features built
  by `audio_test_features` (a formula in tests/fixture_inputs.py, shared with tests/test_clap.py;
  a slice is stored to catch drift);
- features: ClapFeatureExtractor (laion's settings: 50 Hz - 14 kHz) on `sample_clip` clips in
  every truncation/padding mode (frames strided for the 10 s cases, one channel stored where the
  four are copies), with the random crop choices it made recorded in inputs.json.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixture_inputs import audio_test_features, sample_clip  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "clap"
SEED = 20240611
MAX_LENGTH = 77
TEXTS = [
    "a dog barks in the rain",
    "",
    "loud thunder and soft rain, then a piano and drums with a synth beat of 120 bpm, ambient noise, "
    "a guitar, birds singing in the morning, a car passing by on a wet road, people talking in a "
    "busy cafe, a train horn in the distance, church bells ringing, waves crashing on the shore, "
    "wind blowing through the trees, a cat meowing, footsteps on gravel and a door slamming shut",
    "Café jazz — trumpet & upright bass 🎷",
]
CORPUS = [
    "a dog barks in the rain", "soft piano music with rain", "loud thunder and heavy rain",
    "drums and a synth beat at 120 bpm", "birds singing in the morning", "a car passing by",
    "people talking in a busy cafe", "church bells ringing", "waves crashing on the shore",
    "wind blowing through the trees", "a cat meowing", "footsteps on gravel", "a train horn",
]
TEXT_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                   max_position_embeddings=80)
# mlp_ratio 2 (not 4) halves the feed-forward weights, the bulk of the fixture.
AUDIO_CONFIG = dict(depths=[2, 2, 1, 2], num_attention_heads=[1, 2, 2, 4], hidden_size=32,
                    patch_embeds_hidden_size=4, mlp_ratio=2.0, enable_fusion=True)
PROJECTION_DIM = 16
VOCAB_SIZE = 300
IS_LONGER = [True, False]
FEATURE_SETTINGS = dict(frequency_min=50, frequency_max=14_000)  # laion/clap-htsat-* preprocessors
SHORT_MAX_LENGTH = 12_000  # 0.25 s -> 26 frames keeps the mode-by-mode cases small
FEATURE_CASES = [
    # name, clip length (samples), truncation, padding, max_length (None = 10 s), frame stride
    ("short_rand_trunc_repeatpad", 5_000, "rand_trunc", "repeatpad", SHORT_MAX_LENGTH, 1),
    ("short_rand_trunc_repeat", 5_000, "rand_trunc", "repeat", SHORT_MAX_LENGTH, 1),
    ("short_rand_trunc_pad", 5_000, "rand_trunc", "pad", SHORT_MAX_LENGTH, 1),
    ("short_fusion", 5_000, "fusion", "repeatpad", SHORT_MAX_LENGTH, 1),
    ("long_rand_trunc", 30_000, "rand_trunc", "repeatpad", SHORT_MAX_LENGTH, 1),
    ("long_fusion", 30_000, "fusion", "repeatpad", SHORT_MAX_LENGTH, 1),
    ("barely_longer_fusion", SHORT_MAX_LENGTH + 100, "fusion", "repeatpad", SHORT_MAX_LENGTH, 1),
    ("ten_seconds_rand_trunc", 200_000, "rand_trunc", "repeatpad", None, 25),
    ("twelve_seconds_fusion", 600_000, "fusion", "repeatpad", None, 25),
]


def build_tokenizer() -> Tokenizer:
    """Byte-level BPE with RoBERTa's special tokens (<s>=0, <pad>=1, </s>=2, <unk>=3) and post-processor."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    return tokenizer


def perturb(model: ClapModel) -> None:
    """Move every tensor off its init so zero-initialised paths (bias tables, BatchNorm) matter."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                # The spectrogram BatchNorm sees dB-like inputs around -20; the fusion ones ~0.
                centre = -20.0 if "audio_encoder.batch_norm" in name else 0.0
                buffer.copy_(centre + torch.randn_like(buffer))
            elif name.endswith("running_var"):
                scale = 40.0 if "audio_encoder.batch_norm" in name else 1.0
                buffer.copy_(scale * torch.exp(0.3 * torch.randn_like(buffer)))


def audio_outputs(model: ClapModel, features: torch.Tensor, is_longer: torch.Tensor | None) -> dict:
    captured = {}
    hook = model.audio_model.audio_encoder.norm.register_forward_hook(
        lambda module, args, output: captured.__setitem__("tokens", output))
    with torch.no_grad():
        out = model.audio_model(input_features=features, is_longer=is_longer)
        embeds = model.audio_projection(out.pooler_output)
    hook.remove()
    return {"tokens": captured["tokens"], "pooled": out.pooler_output, "audio_embeds": embeds}


def unfused_copy(fused: ClapModel) -> ClapModel:
    config = fused.config.to_dict()
    config["audio_config"]["enable_fusion"] = False
    model = ClapModel(ClapConfig(**{k: v for k, v in config.items() if k in ("text_config", "audio_config",
                                                                                "projection_dim")})).eval()
    state = {k: v for k, v in fused.state_dict().items()
             if ".fusion_model." not in k and ".mel_conv2d." not in k}
    model.load_state_dict(state, strict=True)
    return model


def record_random_choices() -> list[tuple[str, int]]:
    """Wrap numpy's randint/choice so the extractor's random choices can be read back:
    [("randint" | "choice", value)] in the order drawn."""
    drawn: list[tuple[str, int]] = []
    randint, choice = np.random.randint, np.random.choice

    def recording(kind, draw):
        def wrapped(*args, **kwargs):
            value = draw(*args, **kwargs)
            drawn.append((kind, int(value)))
            return value
        return wrapped

    np.random.randint, np.random.choice = recording("randint", randint), recording("choice", choice)
    return drawn


def feature_fixtures(folder: Path) -> tuple[dict, list]:
    extractor = ClapFeatureExtractor(**FEATURE_SETTINGS)
    extractor.save_pretrained(folder)
    drawn = record_random_choices()
    tensors, cases = {}, []
    for name, samples, truncation, padding, max_length, stride in FEATURE_CASES:
        drawn.clear()
        out = extractor(sample_clip(samples).numpy(), sampling_rate=48_000, truncation=truncation,
                        padding=padding, max_length=max_length, return_tensors="pt")
        features = out["input_features"][0]  # [C, frames, bins]
        longer = bool(out["is_longer"][0][0])
        length = max_length or extractor.nb_max_samples
        # rand_trunc draws its offset with randint, fusion its three starts with choice; a
        # batch with no longer clip then has one promoted with randint (not a crop).
        kind = "randint" if truncation == "rand_trunc" else "choice"
        crops = [value for drawn_kind, value in drawn if drawn_kind == kind] if samples > length else []
        crops = crops[:1] if truncation == "rand_trunc" else crops
        copies = all(torch.equal(features[0], channel) for channel in features)
        stored = features[:1] if copies else features
        tensors[f"features.{name}"] = stored[:, ::stride].contiguous()
        cases.append({"name": name, "samples": samples, "truncation": truncation, "padding": padding,
                      "max_length": max_length, "frame_stride": stride, "crops": crops,
                      "channels": features.shape[0], "identical_channels": copies,
                      "is_longer": longer, "frames": features.shape[1]})
    return tensors, cases


def main() -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    if OUT.exists():
        shutil.rmtree(OUT)
    folder = OUT / "model"
    folder.mkdir(parents=True)

    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", cls_token="<s>", sep_token="</s>",
    )
    hf_tokenizer.save_pretrained(folder)
    encoded = hf_tokenizer(TEXTS, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                           return_tensors="pt")
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]

    config = ClapConfig(text_config=dict(vocab_size=VOCAB_SIZE, **TEXT_CONFIG), audio_config=AUDIO_CONFIG,
                        projection_dim=PROJECTION_DIM)
    model = ClapModel(config).eval()
    perturb(model)
    model.save_pretrained(folder)
    weights = load_file(str(folder / "model.safetensors"))
    index_key = next(k for k in weights if k.endswith("relative_position_index"))
    index = weights[index_key]
    weights = {k: v for k, v in weights.items() if not k.endswith("relative_position_index")}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})

    expected = {"input_ids": input_ids, "attention_mask": attention_mask.bool(),
                "relative_position_index_8": index.to(torch.uint8)}
    with torch.no_grad():
        text = model.text_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        expected["text.penultimate"] = text.hidden_states[-2]
        expected["text.pooled"] = text.pooler_output
        expected["text.text_embeds"] = model.text_projection(text.pooler_output)

    fused_inputs = audio_test_features(2, 4)
    is_longer = torch.tensor(IS_LONGER)[:, None]
    expected["audio.input_slice"] = fused_inputs[:, :, :1].contiguous()
    for key, value in audio_outputs(model, fused_inputs, is_longer).items():
        expected[f"audio.fused.{key}"] = value
    unfused = unfused_copy(model)
    for key, value in audio_outputs(unfused, fused_inputs[:, :1], None).items():
        expected[f"audio.unfused.{key}"] = value
    with torch.no_grad():
        joint = model(input_ids=input_ids, attention_mask=attention_mask, input_features=fused_inputs,
                      is_longer=is_longer)
    expected["logits_per_text"] = joint.logits_per_text
    expected["logits_per_audio"] = joint.logits_per_audio

    feature_tensors, cases = feature_fixtures(folder)
    expected.update(feature_tensors)
    save_file({k: v.contiguous() for k, v in expected.items()}, str(OUT / "expected.safetensors"))
    (OUT / "inputs.json").write_text(json.dumps(
        {"texts": TEXTS, "max_length": MAX_LENGTH, "is_longer": IS_LONGER, "feature_cases": cases},
        indent=1, ensure_ascii=False))

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)", file=sys.stderr)
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"  {path.relative_to(OUT)}: {path.stat().st_size / 1024:.1f} KiB", file=sys.stderr)
    print("token counts:", attention_mask.sum(1).tolist(), file=sys.stderr)
    print("feature crops:", [(c["name"], c["crops"], c["is_longer"]) for c in cases], file=sys.stderr)


if __name__ == "__main__":
    main()

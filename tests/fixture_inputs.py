"""Inputs built by code, shared by the fixture writers in tools/ and the tests that read their
fixtures: both sides must build exactly the same thing, so there is one copy, here.

- ``build_test_tokenizer``: the tiny T5 tokenizer (tools/make_t5_fixtures.py, tests/test_t5.py).
- ``audio_test_features`` and ``sample_clip``: CLAP's audio inputs (tools/make_clap_fixtures.py,
  tests/test_clap.py).
- ``build_t5gemma_test_tokenizer``: the tiny Gemma-like tokenizer (tools/make_t5gemma_fixtures.py,
  tests/test_t5gemma.py).
- ``deterministic_weights``: the random weights of the evaluation networks (tools/make_eval_fixtures.py,
  tests/test_eval_networks.py).

The fixture writers run in another venv (with transformers); they import this file with tests/ on
sys.path, so it imports only torch and tokenizers.
"""

from __future__ import annotations

import math

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import Unigram

_WORDS = ["dog", "bark", "rain", "loud", "thunder", "piano", "drum", "soft", "the", "a", "in",
          "and", "then", "of", "with", "beat", "bpm", "120", "guitar", "synth", "ambient", "noise"]
_SUFFIXES = ["s", "ing", "ed", "er"]


def build_test_tokenizer() -> Tokenizer:
    """A T5-like SentencePiece-unigram tokenizer over a tiny vocabulary: <pad>=0, </s>=1, <unk>=2."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + word, -2.0 - 0.1 * i) for i, word in enumerate(_WORDS)]
    pieces += [(suffix, -3.0 - 0.1 * i) for i, suffix in enumerate(_SUFFIXES)]
    pieces += [("\u2581", -4.0)]
    pieces += [(char, -5.0) for char in "abcdefghijklmnopqrstuvwxyz0123456789,."]
    tokenizer = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.add_special_tokens(["<pad>", "</s>", "<unk>"])
    return tokenizer


def audio_test_features(batch: int, channels: int, frames: int = 1001, bins: int = 64) -> torch.Tensor:
    """Deterministic log-mel-like input features Tensor[batch, channels, frames, bins] (float32)."""
    t = torch.arange(frames, dtype=torch.float64)[:, None]
    f = torch.arange(bins, dtype=torch.float64)[None, :]
    planes = []
    for b in range(batch):
        for c in range(channels):
            planes.append(
                6.0 * torch.sin(0.013 * t * (1 + 0.3 * c) + 0.21 * f * (1 + b))
                + 3.0 * torch.cos(0.0011 * t * f + 0.7 * c - 1.3 * b)
                + 2.0 * torch.sin(12.9898 * t + 78.233 * f + 37.719 * (4 * b + c))
                - 20.0
            )
    return torch.stack(planes).view(batch, channels, frames, bins).float()


def sample_clip(samples: int, sample_rate: int = 48_000) -> torch.Tensor:
    """A deterministic mono clip Tensor[samples] (float32): chirp + tone, a slow envelope,
    pseudo-noise, and 40 ms of digital silence (exercises the -100 dB floor)."""
    n = torch.arange(samples, dtype=torch.float64)
    t = n / sample_rate
    chirp = 0.4 * torch.sin(2 * torch.pi * (200.0 * t + 900.0 * t * t))
    tone = 0.2 * torch.sin(2 * torch.pi * 3150.0 * t + 0.5)
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 1.3 * t)
    noise = 0.1 * torch.sin(12.9898 * n + 78.233)
    clip = (chirp + tone) * envelope + noise
    clip[1000:2920] = 0.0
    return clip.float()

_T5GEMMA_CORPUS = [
    "lo-fi hip hop beat 90 BPM with warm vinyl crackle and mellow piano chords",
    "warm analog synth pad with slow filter sweep, ambient drone, rain and thunder",
    "punchy kick drum, bright snare, crash cymbal, energetic rock groove 120 BPM",
    "café jazz trio, brushed drums, upright bass, naïve melody",
]


def build_t5gemma_test_tokenizer() -> Tokenizer:
    """A Gemma-like BPE tokenizer ("▁" for spaces) over a tiny corpus: <pad>=0, <eos>=1, <bos>=2,
    <unk>=3; its post-processor adds <bos> and <eos>."""
    # The pipeline transformers' GemmaTokenizer rebuilds from a tokenizer.json's vocab and merges.
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "\u2581")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tokenizer.decoder = decoders.Replace("\u2581", " ")
    trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  show_progress=False)
    tokenizer.train_from_iterator(_T5GEMMA_CORPUS * 5, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)])
    return tokenizer


def deterministic_weights(state: dict, seed: int) -> dict:
    """The fixture tool's rule: every tensor from one generator, in sorted key order."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(state):
        shape = state[key].shape
        if key.endswith("num_batches_tracked"):
            out[key] = state[key]
            continue
        t = torch.randn(shape, generator=generator, dtype=torch.float64)
        if key.endswith("running_var"):
            t = 1.0 + 0.2 * t.abs()
        elif len(shape) >= 2:
            t = t / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            t = 1.0 + 0.1 * t
        else:
            t = 0.1 * t
        out[key] = t.float()
    return out

"""CLAP embeddings for evaluation and training: prompt adherence (CLAP score) and retrieval.

The CLAP score of a (text, audio) pair is the cosine similarity of their L2-normalised CLAP
embeddings (paper sec. 5.1, "CLAPscore"): audio mixed to mono, resampled to CLAP's 48 kHz and
turned into log-mel features by ``audio_features.ClapFeatureExtractor`` (with "fusion"
truncation a long clip is seen whole, shrunk, plus three 10 s crops from its start, middle and end).

- ``ClapScorer.from_folder(folder)``: a Hugging Face CLAP folder (ours or LAION's);
  ``ClapScorer.from_laion_checkpoint(pt_file, tokenizer)``: laion_clap's 630k-*-fusion-best.pt with
  RoBERTa's tokenizer.json; ``ClapScorer.load(path, tokenizer)`` picks one by the path;
  ``scorer.scores(texts, audio, sample_rate)`` -> Tensor[N] cosine similarity of each pair.
- ``score_gap(text_embeds, audio_embeds)``: matched minus mismatched mean similarity.
- ``retrieval_accuracy(text_embeds, audio_embeds, k)``: top-k retrieval in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..audio.io import resample
from ..audio.features import PREPROCESSOR_CONFIG_FILE, ClapFeatureExtractor, ClapFeatures
from ..errors import InputError
from ..models.clap import ClapModel
from ..models.clap_config import ClapConfig
from ..text.clap_encoder import CLAP_MAX_LENGTH
from ..text.tokenizer import TOKENIZER_FILE, TextTokenizer

AudioBatch = Tensor | Sequence[Tensor]
# laion_clap's HTSAT front end (model_configs/HTSAT-tiny.json: fmin 50, fmax 14000).
LAION_FREQUENCY_RANGE = (50.0, 14_000.0)
ROBERTA_TOKENIZER_HINT = ("tokenizer.json of roberta-base or of the Hugging Face laion/clap-htsat-fused folder "
                          "(laion_clap uses roberta-base's tokenizer)")


def mono_clips(audio: AudioBatch) -> list[Tensor]:
    """Tensor[B, C, T], Tensor[B, T] or a list of Tensor[C, T] / Tensor[T] -> list of Tensor[T]
    (channels averaged)."""
    if isinstance(audio, Tensor):
        if audio.dim() not in (2, 3):
            raise InputError(f"audio must be Tensor[B, C, T] or Tensor[B, T], got shape {tuple(audio.shape)}")
        clips = list(audio)
    else:
        clips = list(audio)
    mono = []
    for clip in clips:
        clip = torch.as_tensor(clip)
        if clip.dim() == 2:
            clip = clip.mean(dim=0)
        if clip.dim() != 1:
            raise InputError(f"each clip must be Tensor[C, T] or Tensor[T], got shape {tuple(clip.shape)}")
        mono.append(clip)
    return mono


def clap_audio_features(extractor: ClapFeatureExtractor, audio: AudioBatch, sample_rate: int,
                        generators: Sequence[torch.Generator | None] | None = None,
                        truncation: str | None = None) -> ClapFeatures:
    """Clips at ``sample_rate`` -> ClapFeatures, each clip independent of the others: clip i's
    random crops come from ``generators[i]`` (a fused batch with no long clip is left as it is;
    the reference would mark one clip at random)."""
    clips = mono_clips(audio)
    if generators is not None and len(generators) != len(clips):
        raise InputError(f"got {len(generators)} generators for {len(clips)} clips")
    features, longer = [], []
    for index, clip in enumerate(clips):
        clip = resample(clip.float().cpu(), sample_rate, extractor.sampling_rate)
        generator = None if generators is None else generators[index]
        mel, is_longer = extractor.clip_features(clip, truncation, generator=generator)
        features.append(mel)
        longer.append(is_longer)
    return ClapFeatures(torch.stack(features), torch.tensor(longer, dtype=torch.bool))


def default_extractor(model: ClapModel) -> ClapFeatureExtractor:
    """transformers' extractor settings, with the truncation the audio tower expects."""
    fused = model.audio is not None and model.config.audio.enable_fusion
    return ClapFeatureExtractor(feature_size=model.config.audio.num_mel_bins,
                                truncation="fusion" if fused else "rand_trunc")


@dataclass
class ClapScorer:
    """A CLAP model with its tokenizer and feature extractor, producing normalised embeddings."""

    model: ClapModel
    tokenizer: TextTokenizer
    extractor: ClapFeatureExtractor
    max_length: int = CLAP_MAX_LENGTH

    @classmethod
    def from_folder(cls, folder: str | Path, device: torch.device | str = "cpu") -> "ClapScorer":
        folder = Path(folder)
        model = ClapModel.from_pretrained(folder, device=device)
        tokenizer = TextTokenizer.from_folder(folder, default_pad_token_id=model.config.text.pad_token_id)
        if (folder / PREPROCESSOR_CONFIG_FILE).is_file():
            extractor = ClapFeatureExtractor.from_folder(folder)
        else:
            extractor = default_extractor(model)
        return cls(model, tokenizer, extractor)

    @classmethod
    def from_laion_checkpoint(cls, path: str | Path, tokenizer: str | Path, config: ClapConfig | None = None,
                              device: torch.device | str = "cpu") -> "ClapScorer":
        """laion_clap's checkpoint file (630k-audioset-fusion-best.pt) and RoBERTa's tokenizer
        (a tokenizer.json or a folder holding one), which the .pt file does not contain."""
        tokenizer = Path(tokenizer)
        tokenizer_file = tokenizer / TOKENIZER_FILE if tokenizer.is_dir() else tokenizer
        if not tokenizer_file.is_file():
            raise InputError(f"CLAP tokenizer {tokenizer_file} not found; a LAION .pt checkpoint needs the "
                             + ROBERTA_TOKENIZER_HINT)
        model = ClapModel.from_laion_checkpoint(path, config, device=device)
        text_tokenizer = TextTokenizer.from_file(tokenizer_file, default_pad_token_id=model.config.text.pad_token_id)
        low, high = LAION_FREQUENCY_RANGE
        extractor = ClapFeatureExtractor(feature_size=model.config.audio.num_mel_bins, frequency_min=low,
                                         frequency_max=high, truncation=default_extractor(model).truncation)
        return cls(model, text_tokenizer, extractor)

    @classmethod
    def load(cls, path: str | Path, tokenizer: str | Path | None = None, config: ClapConfig | None = None,
             device: torch.device | str = "cpu") -> "ClapScorer":
        """A Hugging Face CLAP folder, or a LAION .pt file (which needs `tokenizer`; `config`
        defaults to the fused 630k checkpoints' architecture)."""
        path = Path(path)
        if path.is_dir():
            return cls.from_folder(path, device)
        if not path.is_file():
            raise InputError(f"CLAP weights {path} not found: pass a Hugging Face CLAP folder "
                             "(laion/clap-htsat-fused) or laion_clap's 630k-audioset-fusion-best.pt")
        if tokenizer is None:
            raise InputError(f"{path.name} is a LAION checkpoint file, which has no tokenizer: also pass the "
                             + ROBERTA_TOKENIZER_HINT)
        return cls.from_laion_checkpoint(path, tokenizer, config, device)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale_a.device

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """list[str] (N) -> Tensor[N, P], L2-normalised."""
        out = []
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer(list(texts[start:start + batch_size]), self.max_length)
            out.append(self.model.text_embedding(ids.to(self.device), mask.to(self.device)))
        return torch.cat(out)

    @torch.no_grad()
    def audio_embeddings(self, audio: AudioBatch, sample_rate: int, batch_size: int = 16, seed: int = 0) -> Tensor:
        """N clips at ``sample_rate`` -> Tensor[N, P], L2-normalised; crops of clip i from seed + i."""
        clips = mono_clips(audio)
        out = []
        for start in range(0, len(clips), batch_size):
            part = clips[start:start + batch_size]
            generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(part))]
            features = clap_audio_features(self.extractor, part, sample_rate, generators)
            out.append(self.model.audio_embedding(features.input_features.to(self.device),
                                                  features.is_longer.to(self.device)))
        return torch.cat(out)

    def scores(self, texts: Sequence[str], audio: AudioBatch, sample_rate: int, seed: int = 0) -> Tensor:
        """CLAP score of each (texts[i], audio[i]) pair: Tensor[N] cosine similarities."""
        if len(texts) != len(mono_clips(audio)):
            raise InputError("texts and audio must pair up one to one")
        text = self.text_embeddings(texts)
        sound = self.audio_embeddings(audio, sample_rate, seed=seed)
        return (text * sound).sum(dim=-1)


def _check_pairs(text_embeds: Tensor, audio_embeds: Tensor) -> None:
    if text_embeds.dim() != 2 or text_embeds.shape != audio_embeds.shape:
        raise InputError(
            f"text and audio embeddings must both be [N, P] with the same N, got "
            f"{tuple(text_embeds.shape)} and {tuple(audio_embeds.shape)}"
        )


def similarity_matrix(text_embeds: Tensor, audio_embeds: Tensor) -> Tensor:
    """Tensor[N, P] x Tensor[M, P] -> Tensor[N, M] cosine similarities."""
    text, audio = text_embeds.detach().float(), audio_embeds.detach().float()
    return F.normalize(text, dim=-1) @ F.normalize(audio, dim=-1).t()


def score_gap(text_embeds: Tensor, audio_embeds: Tensor) -> dict[str, float]:
    """Mean similarity of matched pairs (the diagonal), of mismatched pairs (off-diagonal) and
    their difference: how much more a clip resembles its own prompt than the others'."""
    _check_pairs(text_embeds, audio_embeds)
    sims = similarity_matrix(text_embeds, audio_embeds)
    n = sims.shape[0]
    matched = float(sims.diagonal().mean())
    mismatched = float((sims.sum() - sims.diagonal().sum()) / max(1, n * n - n))
    return {"matched": matched, "mismatched": mismatched, "gap": matched - mismatched}


def retrieval_accuracy(text_embeds: Tensor, audio_embeds: Tensor, k: int = 1) -> dict[str, float]:
    """Fraction of texts whose own clip is among the k most similar clips (text_to_audio), and
    of clips whose own text is among the k most similar texts (audio_to_text)."""
    _check_pairs(text_embeds, audio_embeds)
    sims = similarity_matrix(text_embeds, audio_embeds)
    n = sims.shape[0]
    k = min(int(k), n)
    own = torch.arange(n)
    text_hits = (sims.topk(k, dim=1).indices == own[:, None]).any(dim=1)
    audio_hits = (sims.t().topk(k, dim=1).indices == own[:, None]).any(dim=1)
    return {"text_to_audio": float(text_hits.float().mean()), "audio_to_text": float(audio_hits.float().mean())}


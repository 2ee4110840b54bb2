"""Training CLAP (Wu et al. 2023; paper sec. 4.3): a text tower and an audio tower pulled into one
embedding space by a symmetric contrastive loss with a learned temperature.

For a batch of N (caption, audio) pairs with normalised embeddings t_i, a_j:
  logits_per_text[i, j]  = exp(logit_scale_t) * t_i . a_j
  logits_per_audio[j, i] = exp(logit_scale_a) * a_j . t_i
  loss = (CE(logits_per_text, diag) + CE(logits_per_audio, diag)) / 2
so each caption must pick out its clip among the batch's clips and each clip its caption. The
logit scales (log of the inverse temperature, initialised to log(1 / 0.07)) are clamped to
[0, log 100] before every step, as laion-clap does after every step. Under torchrun the
embeddings of every process are gathered (with gradients), so the negatives are the whole global
batch, as with one process; with gradient accumulation each micro-batch is its own contrastive
problem.

Audio: each clip mixed to mono, resampled from the dataset's rate to 48 kHz, log-mel features from
``audio_features.ClapFeatureExtractor`` (random crops from the item's seed). Text: the caption
(``metadata["prompt"]``) tokenised by a ``tokenizers`` tokenizer.json; without one, a byte-level
BPE with RoBERTa's special tokens is trained on the dataset's captions (deterministic).
The export is a Hugging Face CLAP folder (``save_pretrained``) that our CLAP loader, the
``clap_text`` conditioner and transformers load.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import Tensor, nn

from ..audio.features import PREPROCESSOR_CONFIG_FILE, ClapFeatureExtractor
from ..errors import ConfigError, InputError
from ..evaluation.clap_score import clap_audio_features
from ..models.clap import ClapModel
from ..models.clap_config import ClapConfig
from ..models.hf_folder import read_json
from ..text.clap_encoder import CLAP_MAX_LENGTH
from ..text.tokenizer import TOKENIZER_FILE, TextTokenizer
from .export import clap_config_dict, clap_state_dict, clap_tokenizer_config, save_clap_folder, save_json
from .task import Batch, Phase, StepContext, item_generators

# RoBERTa's special tokens, in id order (pad = 1 is ClapTextConfig's default pad_token_id).
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
PAD_TOKEN = "<pad>"
# Salt of the per-item audio crop draws: distinct from the dataset's "crop" salt (5), so the CLAP
# crop inside a window is independent of where the window was cut from its file.
FEATURE_CROP_SALT = 101
# Statistics the mel BatchNorm of a fresh audio tower starts with: log-mel levels in dB lie
# between the -100 dB floor and about 0 dB.
FRESH_MEL_MEAN_DB = -50.0
FRESH_MEL_STD_DB = 25.0
PREPROCESSOR_KEYS = {"feature_size", "sampling_rate", "hop_length", "max_length_s", "fft_window_size",
                     "frequency_min", "frequency_max", "top_db", "truncation", "padding"}


# --- tokenizer ------------------------------------------------------------------------------------

def train_caption_tokenizer(captions: list[str], vocab_size: int, min_frequency: int = 1) -> Tokenizer:
    """A byte-level BPE tokenizer trained on ``captions`` (sorted first, so the result depends only
    on the multiset of captions), with RoBERTa's special tokens and ``<s> ... </s>`` framing."""
    texts = sorted(str(c) for c in captions if c is not None and str(c).strip())
    if not texts:
        raise InputError("cannot train a tokenizer: no captions (every metadata prompt is empty)")
    minimum = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ConfigError(f"tokenizer vocab_size {vocab_size} is below the {minimum} byte-level BPE needs")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    return tokenizer


def dataset_captions(dataset: Any, seed: int = 0) -> list[str]:
    """The captions of a training dataset: its ``prompts(seed)`` (no audio read) when it has one,
    else the prompt of every ``get(index, seed)`` item."""
    if hasattr(dataset, "prompts"):
        return [str(p) for p in dataset.prompts(seed)]
    return [str(dataset.get(i, seed + i)["metadata"]["prompt"]) for i in range(len(dataset))]


# --- options --------------------------------------------------------------------------------------

@dataclass
class ClapOptions:
    """What ``build_clap_task`` accepts in ``options`` (unknown keys raise ConfigError)."""

    sample_rate: int | None = None          # the dataset's audio rate (required)
    seed: int = 0                           # initialisation of fresh weights
    tokenizer: str | None = None            # tokenizer.json (or a folder holding one)
    captions: list[str] | None = None       # corpus for training a tokenizer
    dataset: Any = None                     # or the dataset whose captions train it
    tokenizer_vocab_size: int | None = None  # default: the text tower's vocab_size
    max_text_length: int = CLAP_MAX_LENGTH
    temperature: float = 0.07               # initial temperature of a fresh model
    max_logit_scale: float = 100.0          # exp(logit_scale) is clamped to [1, this]
    train_towers: tuple[str, ...] = ("text", "audio")
    preprocessor: dict = field(default_factory=dict)   # ClapFeatureExtractor settings (HF keys)
    demo_prompts: list[str] | None = None

    @classmethod
    def from_dict(cls, options: dict) -> "ClapOptions":
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigError(f"unknown CLAP training option(s) {unknown}; allowed: {sorted(allowed)}")
        parsed = cls(**options)
        if not isinstance(parsed.sample_rate, int) or parsed.sample_rate <= 0:
            raise ConfigError("CLAP training needs options['sample_rate']: the sample rate of the dataset's audio")
        towers = set(parsed.train_towers)
        if not towers or towers - {"text", "audio"}:
            raise ConfigError(f"train_towers must be a non-empty subset of ['text', 'audio'], got {parsed.train_towers!r}")
        if not (parsed.temperature > 0 and parsed.max_logit_scale > 1):
            raise ConfigError("temperature must be > 0 and max_logit_scale > 1")
        unknown = sorted(set(parsed.preprocessor) - PREPROCESSOR_KEYS)
        if unknown:
            raise ConfigError(f"unknown preprocessor key(s) {unknown}; allowed: {sorted(PREPROCESSOR_KEYS)}")
        return parsed


# --- the loss -------------------------------------------------------------------------------------

def contrastive_loss(model: ClapModel, text_embeds: Tensor, audio_embeds: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Symmetric cross-entropy over normalised Tensor[N, P] pairs (row i of each belongs together)."""
    logits_per_text, logits_per_audio = model.logits(text_embeds, audio_embeds)
    labels = torch.arange(text_embeds.shape[0], device=text_embeds.device)
    text_loss = F.cross_entropy(logits_per_text.float(), labels)
    audio_loss = F.cross_entropy(logits_per_audio.float(), labels)
    loss = (text_loss + audio_loss) / 2
    with torch.no_grad():
        accuracy = (logits_per_text.argmax(dim=1) == labels).float().mean()
    return loss, {"text_to_audio": float(text_loss.detach()), "audio_to_text": float(audio_loss.detach()),
                  "accuracy": float(accuracy), "logit_scale": float(model.logit_scale_t.detach().exp())}


def gather_across_processes(x: Tensor) -> Tensor:
    """Tensor[b, ...] of this process -> Tensor[world * b, ...] in rank order, gradients flowing
    back to each process's own rows (identity without torch.distributed)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    sizes = [None] * dist.get_world_size()
    dist.all_gather_object(sizes, int(x.shape[0]))
    if len(set(sizes)) != 1:
        raise InputError(f"CLAP training needs equal per-process batches to gather, got {sizes}")
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(x), dim=0)


# --- the task -------------------------------------------------------------------------------------

class ClapTask:
    """The training task of a CLAP model (see the module docstring)."""

    kind = "clap"

    def __init__(self, model: ClapModel, tokenizer_json: str, options: ClapOptions,
                 preprocessor: dict[str, Any]):
        self.model = model
        self.options = options
        self.tokenizer_json = tokenizer_json
        self.tokenizer = TextTokenizer(Tokenizer.from_str(tokenizer_json), pad_token=PAD_TOKEN)
        self._check_tokenizer()
        self.preprocessor = {"feature_extractor_type": "ClapFeatureExtractor", **preprocessor}
        self.extractor = ClapFeatureExtractor.from_dict(self.preprocessor)
        self.max_log_scale = math.log(options.max_logit_scale)
        model.requires_grad_(False)
        trainable: list[nn.Parameter] = []
        for tower in options.train_towers:
            trainable += list(getattr(model, tower).parameters())
        trainable += [model.logit_scale_a, model.logit_scale_t]
        for parameter in trainable:
            parameter.requires_grad_(True)
        self._trainable = trainable
        model.train()

    def _check_tokenizer(self) -> None:
        text = self.model.config.text
        size = self.tokenizer.backend.get_vocab_size(with_added_tokens=True)
        if size > text.vocab_size:
            raise ConfigError(
                f"the tokenizer has {size} tokens but the text tower's vocab_size is {text.vocab_size}; "
                "raise text_config.vocab_size or train a smaller tokenizer (tokenizer_vocab_size)"
            )
        if self.tokenizer.pad_token_id != text.pad_token_id:
            raise ConfigError(
                f"the tokenizer's {PAD_TOKEN} has id {self.tokenizer.pad_token_id} but the text tower's "
                f"pad_token_id is {text.pad_token_id}; they must agree"
            )
        if self.options.max_text_length > text.max_text_length:
            raise ConfigError(
                f"max_text_length {self.options.max_text_length} exceeds the text tower's "
                f"{text.max_text_length} positions"
            )

    # --- the TrainingTask protocol ------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"clap": self.model}

    def ema_modules(self) -> dict[str, nn.Module]:
        return {}

    def phases(self) -> list[Phase]:
        return [Phase("clap", list(self._trainable), self.loss)]

    def to(self, device: torch.device | str) -> "ClapTask":
        self.model.to(device)
        return self

    def export(self, ema: dict[str, nn.Module] | None = None) -> tuple[dict[str, Tensor], dict]:
        """transformers-layout weights and the config.json dict (write the whole Hugging Face
        folder, tokenizer included, with ``save_pretrained``)."""
        model = ema["clap"] if ema and "clap" in ema else self.model
        state = clap_state_dict(model)
        for key in ("logit_scale_a", "logit_scale_t"):  # the clamp the next step would apply
            state[key] = state[key].clamp(0.0, self.max_log_scale)
        return state, clap_config_dict(model.config)

    def export_files(self, ema: dict[str, nn.Module] | None = None) -> dict[str, bytes]:
        """The files besides model.safetensors that make a folder a Hugging Face CLAP folder:
        config.json, tokenizer.json, tokenizer_config.json, preprocessor_config.json (the
        trainer writes them into each checkpoint folder)."""
        def dumped(data: dict) -> bytes:
            return (json.dumps(data, indent=2) + "\n").encode("utf-8")
        return {"config.json": dumped(clap_config_dict(self.model.config)),
                "tokenizer.json": self.tokenizer_json.encode("utf-8"),
                "tokenizer_config.json": dumped(clap_tokenizer_config(PAD_TOKEN)),
                "preprocessor_config.json": dumped(self.preprocessor)}

    def save_pretrained(self, folder: str | Path, ema: dict[str, nn.Module] | None = None) -> Path:
        """Write a Hugging Face CLAP folder: config.json, model.safetensors, tokenizer.json,
        tokenizer_config.json, preprocessor_config.json."""
        self.clamp_logit_scales()
        model = ema["clap"] if ema and "clap" in ema else self.model
        return save_clap_folder(model, self.tokenizer_json, folder, self.preprocessor, PAD_TOKEN)

    def demo(self, out_dir: Path, step: int, ema: dict[str, nn.Module] | None = None) -> list[Path]:
        """The temperature and the cosine similarities between the demo prompts' text embeddings."""
        prompts = self.options.demo_prompts
        if not prompts:
            return []
        model = ema["clap"] if ema and "clap" in ema else self.model
        device = model.logit_scale_t.device
        with torch.no_grad():
            ids, mask = self.tokenizer(list(prompts), self.options.max_text_length)
            embeds = model.text_embedding(ids.to(device), mask.to(device))
            similarity = (embeds @ embeds.t()).cpu()
        report = {"step": step, "logit_scale": float(model.logit_scale_t.exp()), "prompts": list(prompts),
                  "text_similarity": [[round(float(v), 4) for v in row] for row in similarity]}
        return [save_json(report, Path(out_dir) / f"clap_{step:08d}.json")]

    # --- one loss evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def clamp_logit_scales(self) -> None:
        for scale in (self.model.logit_scale_a, self.model.logit_scale_t):
            scale.clamp_(0.0, self.max_log_scale)

    def embeddings(self, batch: Batch, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """The batch's normalised (text, audio) embeddings, each Tensor[B, P], this process only."""
        if "audio" not in batch:
            raise InputError(f"a CLAP batch needs 'audio' (pre-encoded latents cannot be used), got {sorted(batch)}")
        texts = [str(item.get("prompt") or "") for item in batch["metadata"]]
        ids, mask = self.tokenizer(texts, self.options.max_text_length)
        generators = item_generators(batch["seeds"], FEATURE_CROP_SALT)
        features = clap_audio_features(self.extractor, batch["audio"], self.options.sample_rate, generators)
        text = self.model.text(ids.to(device), mask.to(device)).text_embeds
        audio = self.model.audio(features.input_features.to(device), features.is_longer.to(device)).audio_embeds
        return F.normalize(text.float(), dim=-1), F.normalize(audio.float(), dim=-1)

    def loss(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        # laion-clap clamps after each optimizer step; clamping before each loss is the same.
        self.clamp_logit_scales()
        text, audio = self.embeddings(batch, ctx.device)
        return contrastive_loss(self.model, gather_across_processes(text), gather_across_processes(audio))


# --- building -------------------------------------------------------------------------------------

def _fresh_model(config: ClapConfig, seed: int, temperature: float) -> ClapModel:
    """Freshly initialised towers (PyTorch's default initialisation, drawn from ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config)
    with torch.no_grad():
        # RoBERTa's padding row is never a real token or position: zero, as transformers makes it.
        embeddings = model.text.text_model.embeddings
        embeddings.word_embeddings.weight[config.text.pad_token_id].zero_()
        embeddings.position_embeddings.weight[config.text.pad_token_id].zero_()
        # The mel BatchNorm keeps fixed statistics (batch statistics would make an item's
        # features depend on its batch); centre typical log-mel levels instead of none.
        norm = model.audio.audio_model.audio_encoder.batch_norm
        norm.running_mean.fill_(FRESH_MEL_MEAN_DB)
        norm.running_var.fill_(FRESH_MEL_STD_DB ** 2)
        model.logit_scale_a.fill_(math.log(1.0 / temperature))
        model.logit_scale_t.fill_(math.log(1.0 / temperature))
    return model


def _read_tokenizer_json(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise ConfigError(f"tokenizer file {path} not found; point at a tokenizer.json or its folder")
    text = path.read_text(encoding="utf-8")
    try:
        Tokenizer.from_str(text)
    except Exception as exc:  # the Rust backend raises plain Exceptions
        raise ConfigError(f"cannot load tokenizer {path}: {exc}") from exc
    return text


def build_clap_task(clap_config: dict | str | Path, options: dict | None = None) -> ClapTask:
    """A ClapTask from a CLAP config.json dict (fresh weights from options["seed"]) or from a
    Hugging Face CLAP folder (fine-tuning: its weights, tokenizer and preprocessor settings).

    Without a tokenizer (options["tokenizer"] or the folder's tokenizer.json) one is trained on
    options["captions"] or on the captions of options["dataset"]."""
    parsed = ClapOptions.from_dict(dict(options or {}))
    folder = None
    if isinstance(clap_config, (str, Path)):
        folder = Path(clap_config)
        model = ClapModel.from_pretrained(folder)
    elif isinstance(clap_config, dict):
        model = _fresh_model(ClapConfig.from_dict(clap_config), parsed.seed, parsed.temperature)
    else:
        raise ConfigError(f"clap_config must be a config.json dict or a CLAP folder path, got {type(clap_config).__name__}")

    if parsed.tokenizer is not None:
        tokenizer_json = _read_tokenizer_json(parsed.tokenizer)
    elif folder is not None and (folder / TOKENIZER_FILE).is_file():
        tokenizer_json = _read_tokenizer_json(folder)
    else:
        if parsed.captions is not None:
            captions = list(parsed.captions)
        elif parsed.dataset is not None:
            captions = dataset_captions(parsed.dataset, parsed.seed)
        else:
            raise ConfigError(
                "CLAP training needs a tokenizer: pass options['tokenizer'] (a tokenizer.json), or "
                "options['dataset'] / options['captions'] to train one on the captions"
            )
        vocab_size = parsed.tokenizer_vocab_size or model.config.text.vocab_size
        tokenizer_json = train_caption_tokenizer(captions, vocab_size).to_str()

    # Every setting written out, so the exported preprocessor_config.json is complete.
    preprocessor: dict[str, Any] = {name: parameter.default for name, parameter in
                                    inspect.signature(ClapFeatureExtractor).parameters.items()}
    if folder is not None and (folder / PREPROCESSOR_CONFIG_FILE).is_file():
        saved = read_json(folder / PREPROCESSOR_CONFIG_FILE, "CLAP preprocessor config")
        preprocessor.update({k: v for k, v in saved.items() if k in PREPROCESSOR_KEYS})
    else:
        audio = model.config.audio
        preprocessor.update(feature_size=audio.num_mel_bins,
                            truncation="fusion" if audio.enable_fusion else "rand_trunc")
    preprocessor.update(parsed.preprocessor)
    return ClapTask(model, tokenizer_json, parsed, preprocessor)

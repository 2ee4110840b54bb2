"""VAE training (paper section 4.2): the autoencoder against a multi-scale STFT discriminator.

Two phases alternate over optimizer steps as in stable-audio-tools' autoencoder training: the
generator (the autoencoder) on even steps, the discriminator on odd steps. The generator loss is

    stft * (sum/difference + left/right multi-resolution STFT, A-weighted)
    + adversarial * hinge generator loss + feature_matching * L1 feature distance + kl * KL
    + time_l1 * mean |decoded - real|   (the reference's optional "time" loss; 0 by default)

with the paper's weights 1.0, 0.1, 5.0 and 1e-4 as defaults; the adversarial and feature-matching
terms join once `warmup_steps` steps are done ("adv" warm-up: the discriminator trains from the
start; "full": it too waits). Phase 2 (the paper's second stage) freezes the encoder and fine-tunes
the decoder. Latent noise is drawn per item from the batch seeds (salt "latent").

Like the reference, the loss covers the whole window and ignores the padding mask: the silence
that pads a short file is audio the autoencoder must reproduce too.

`build_vae_task(model_config, options)` reads a stable-audio-tools autoencoder config
(model_type "autoencoder"), including the parts of its "training" section that concern the task
(loss_configs, optimizer_configs, warmup_steps, use_ema); `options` override them (see
`VAE_OPTION_KEYS`). The exported checkpoint is `AudioAutoencoder.state_dict()` (`encoder.*`,
`decoder.*`, weight-normed convs as `weight_g`/`weight_v`), which stable-audio-tools'
`create_model_from_config(model_config)` loads strictly.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..audio.io import write_audio
from ..checkpoint import autoencoder_state, load_state_dict_strict, read_state_dict
from ..config import check_keys, require
from ..errors import CheckpointError, ConfigError, InputError
from ..models.autoencoder import AUTOENCODER_KEYS, AudioAutoencoder, build_autoencoder
from .discriminator import DEFAULT_DISCRIMINATOR_FFT_SIZES, MultiScaleSTFTDiscriminator
from .losses import (
    DEFAULT_FFT_SIZES,
    MultiResolutionSTFTLoss,
    StereoSTFTLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from .task import Batch, Phase, StepContext, item_generators

# stable-audio-tools' GAN optimiser betas for both networks (its autoencoder training default).
GAN_BETAS = (0.8, 0.99)
WARMUP_MODES = ("adv", "full")

# The Stable Audio Open VAE's training config: discriminator and reconstruction-loss settings.
DEFAULT_DISCRIMINATOR = {"filters": 64, "n_ffts": list(DEFAULT_DISCRIMINATOR_FFT_SIZES)}
DEFAULT_SPECTRAL = {"fft_sizes": list(DEFAULT_FFT_SIZES), "perceptual_weighting": True}
SPECTRAL_KEYS = frozenset({"fft_sizes", "hop_sizes", "win_lengths", "perceptual_weighting", "w_sc",
                           "w_log_mag", "window"})  # fmt: skip

VAE_OPTION_KEYS = frozenset({
    "stft", "adversarial", "feature_matching", "kl", "time_l1",   # loss weights
    "phase",                                           # 1: train all; 2: freeze the encoder
    "checkpoint",                                      # start weights (file)
    "discriminator",                                   # network config, merged over the defaults
    "spectral",                                        # STFT-loss config, merged over the defaults
    "warmup_steps", "warmup_mode",                     # when the adversarial terms start
    "learning_rate", "discriminator_learning_rate",    # None: the trainer's learning rate
    "betas", "discriminator_betas", "weight_decay", "discriminator_weight_decay",
    "demo_items", "seed", "use_ema",
    "decode_frames",                                   # phase 2: decode only the middle latents
})  # fmt: skip

MODEL_CONFIG_KEYS = frozenset({"model_type", "sample_size", "sample_rate", "audio_channels", "model",
                               "training"})  # fmt: skip
# Reference "training" keys: the ones read here, the trainer's business, and features we lack
# (accepted only at their inactive value).
TRAINING_KEYS_READ = frozenset({"learning_rate", "warmup_steps", "optimizer_configs", "loss_configs",
                                "use_ema"})  # fmt: skip
TRAINING_KEYS_TRAINER = frozenset({"demo", "eval_loss_configs", "clip_grad_norm"})
TRAINING_KEYS_INACTIVE = {"encoder_freeze_on_warmup": (False, "train phase 2 as its own run: "
                                                       "options {'phase': 2, 'checkpoint': ...}"),
                          "force_input_mono": (False, "not supported"),
                          "latent_mask_ratio": (0.0, "not supported"),
                          "teacher_model": (None, "distillation is not supported"),
                          "teacher_model_ckpt": (None, "distillation is not supported")}  # fmt: skip
LOSS_CONFIG_KEYS = frozenset({"discriminator", "spectral", "time", "bottleneck"})

REFERENCE_DISCRIMINATOR_PREFIX = "discriminator.discriminators."


def _number(value: Tensor) -> float:
    return float(value.detach())


@dataclass
class VAELossWeights:
    stft: float = 1.0
    adversarial: float = 0.1
    feature_matching: float = 5.0
    kl: float = 1e-4
    time_l1: float = 0.0   # waveform L1 (stable-audio-tools' loss_configs.time, type "l1")

    @property
    def uses_discriminator(self) -> bool:
        return self.adversarial != 0 or self.feature_matching != 0


@dataclass
class VAESettings:
    """Everything `VAETask` needs beside the networks; `build_vae_task` fills it."""

    weights: VAELossWeights = field(default_factory=VAELossWeights)
    spectral: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_SPECTRAL))
    normalize_feature_matching: bool = False
    warmup_steps: int = 0
    warmup_mode: str = "adv"
    phase: int = 1
    learning_rate: float | None = None
    discriminator_learning_rate: float | None = None
    betas: tuple[float, float] | None = GAN_BETAS
    discriminator_betas: tuple[float, float] | None = GAN_BETAS
    weight_decay: float | None = None
    discriminator_weight_decay: float | None = None
    demo_items: int = 4
    use_ema: bool = True
    # Phase 2: encode the whole crop but decode (and score) only its middle `decode_frames`
    # latent frames, so the decoder learns on latents with the encoder's full context, like the
    # ones of whole clips it decodes at inference (0: decode the whole crop).
    decode_frames: int = 0


class VAETask:
    """The `TrainingTask` of the autoencoder (see `training.task`). Networks: "autoencoder"
    (an `AudioAutoencoder`) and, unless both adversarial weights are 0, "discriminator"."""

    kind = "vae"

    def __init__(self, autoencoder: AudioAutoencoder, model_config: dict,
                 discriminator: MultiScaleSTFTDiscriminator | None, settings: VAESettings):  # fmt: skip
        if settings.phase not in (1, 2):
            raise ConfigError(f"VAE option 'phase' must be 1 or 2, got {settings.phase!r}")
        if settings.warmup_mode not in WARMUP_MODES:
            raise ConfigError(f"VAE option 'warmup_mode' must be one of {WARMUP_MODES}, got "
                              f"{settings.warmup_mode!r}")  # fmt: skip
        if isinstance(settings.decode_frames, bool) or not isinstance(settings.decode_frames, int) \
                or settings.decode_frames < 0:
            raise ConfigError(f"VAE option 'decode_frames' must be a whole number >= 0, got "
                              f"{settings.decode_frames!r}")  # fmt: skip
        if settings.decode_frames and settings.phase != 2:
            raise ConfigError("VAE option 'decode_frames' needs phase 2 (a frozen encoder): in phase 1 "
                              "the encoder would learn only from the middle of each crop")  # fmt: skip
        if settings.weights.uses_discriminator and discriminator is None:
            raise ConfigError("adversarial or feature_matching weight is non-zero but there is no "
                              "discriminator")  # fmt: skip
        self.autoencoder = autoencoder
        self.discriminator = discriminator if settings.weights.uses_discriminator else None
        self.model_config = copy.deepcopy(model_config)
        self.settings = settings
        self.weights = settings.weights
        self.sample_rate = autoencoder.sample_rate
        spectral = {k: v for k, v in settings.spectral.items() if k != "window"}
        self.stft_loss = StereoSTFTLoss(MultiResolutionSTFTLoss(sample_rate=self.sample_rate, **spectral))
        self.demo_audio: Tensor | None = None
        self.device = torch.device("cpu")
        self.autoencoder.train().requires_grad_(True)
        if settings.phase == 2:
            self.autoencoder.encoder.requires_grad_(False)
        if self.discriminator is not None:
            self.discriminator.train().requires_grad_(True)

    # -- the TrainingTask protocol ----------------------------------------------------------------

    def modules(self) -> dict[str, nn.Module]:
        networks: dict[str, nn.Module] = {"autoencoder": self.autoencoder}
        if self.discriminator is not None:
            networks["discriminator"] = self.discriminator
        return networks

    def ema_modules(self) -> dict[str, nn.Module]:
        return {"autoencoder": self.autoencoder} if self.settings.use_ema else {}

    def to(self, device: torch.device | str) -> VAETask:
        self.device = torch.device(device)
        for module in (self.autoencoder, self.discriminator, self.stft_loss):
            if module is not None:
                module.to(self.device)
        return self

    def generator_parameters(self) -> list[nn.Parameter]:
        """What the generator phase trains: the whole autoencoder, or in phase 2 the decoder."""
        if self.settings.phase == 2:
            return [p for name, p in self.autoencoder.named_parameters() if not name.startswith("encoder.")]
        return list(self.autoencoder.parameters())

    def phases(self) -> list[Phase]:
        """Discriminator on odd steps, generator on even steps (every step without a discriminator)."""
        s = self.settings
        generator = Phase("generator", self.generator_parameters(), self.generator_loss,
                          start_step=0, every=2 if self.discriminator is not None else 1,
                          learning_rate=s.learning_rate, betas=s.betas, weight_decay=s.weight_decay)  # fmt: skip
        if self.discriminator is None:
            return [generator]
        start = 1
        if s.warmup_mode == "full":  # the first odd step once warmed up
            start = s.warmup_steps if s.warmup_steps % 2 == 1 else s.warmup_steps + 1
        discriminator = Phase("discriminator", list(self.discriminator.parameters()),
                              self.discriminator_loss, start_step=start, every=2,
                              learning_rate=s.discriminator_learning_rate,
                              betas=s.discriminator_betas,
                              weight_decay=s.discriminator_weight_decay, moves_ema=False)  # fmt: skip
        return [discriminator, generator]

    def export(self, ema: dict[str, nn.Module] | None) -> tuple[dict[str, Tensor], dict]:
        model = ema["autoencoder"] if ema and "autoencoder" in ema else self.autoencoder
        weights = {key: value.detach().to("cpu", torch.float32).contiguous().clone()
                   for key, value in model.state_dict().items()}  # fmt: skip
        return weights, copy.deepcopy(self.model_config)

    @torch.no_grad()
    def demo(self, out_dir: Path, step: int, ema: dict[str, nn.Module] | None) -> list[Path]:
        """`recon_<step>.wav`: the kept demo items, each followed by its reconstruction (the
        posterior mean decoded)."""
        if self.demo_audio is None:
            return []
        model = ema["autoencoder"] if ema and "autoencoder" in ema else self.autoencoder
        was_training = model.training
        model.eval()
        try:
            reals = self.demo_audio.to(self.device)
            fakes = model.decode(model.encode(reals))
            length = min(reals.shape[-1], fakes.shape[-1])
            pairs = [part[..., :length] for i in range(reals.shape[0]) for part in (reals[i], fakes[i])]
            path = Path(out_dir) / f"recon_{step:08d}.wav"
            write_audio(path, torch.cat(pairs, dim=-1), self.sample_rate)
        finally:
            model.train(was_training)
        return [path]

    def set_demo_audio(self, audio: Tensor) -> None:
        """Use these items (Tensor[N, C, T]) for demos instead of the first training batch's."""
        self.demo_audio = audio.detach()[: self.settings.demo_items].to("cpu", torch.float32).clone()

    # -- losses -----------------------------------------------------------------------------------

    def _reals(self, batch: Batch) -> Tensor:
        audio = batch.get("audio")
        if not isinstance(audio, Tensor) or audio.dim() != 3:
            raise InputError("VAE training needs batches with 'audio' Tensor[B, C, T] (an audio "
                             "dataset, not pre-encoded latents)")  # fmt: skip
        if audio.shape[1] != self.autoencoder.in_channels:
            raise InputError(f"the batch audio has {audio.shape[1]} channels but the autoencoder takes "
                             f"{self.autoencoder.in_channels}: set the dataset's audio_channels")  # fmt: skip
        return audio.to(self.device, torch.float32)

    def _encode(self, reals: Tensor, seeds: Tensor, with_grad: bool) -> tuple[Tensor, Tensor]:
        """A posterior draw Tensor[B, D, L] per item (noise from the item's seed) and the KL."""
        with nullcontext() if with_grad else torch.no_grad():
            encoded = self.autoencoder.encoder(reals).float()
            generators = item_generators(seeds, "latent", device=encoded.device)
            draws, kls = zip(*(self.autoencoder.bottleneck.encode_with_kl(encoded[i : i + 1], g)
                               for i, g in enumerate(generators)))  # fmt: skip
        return torch.cat(draws), torch.stack(kls).mean()

    def _reconstruct(self, batch: Batch, training_generator: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(reals, decoded, latents, kl), reals trimmed to the decoded length."""
        reals = self._reals(batch)
        encoder_grad = training_generator and self.settings.phase == 1
        latents, kl = self._encode(reals, batch["seeds"], encoder_grad)
        if self.settings.decode_frames:
            latents, reals = self._middle(latents, reals)
        with nullcontext() if training_generator else torch.no_grad():
            decoded = self.autoencoder.decoder(self.autoencoder.bottleneck.decode(latents))
            if self.autoencoder.soft_clip:
                decoded = torch.tanh(decoded)
        length = min(reals.shape[-1], decoded.shape[-1])
        return reals[..., :length], decoded[..., :length], latents, kl

    def _middle(self, latents: Tensor, reals: Tensor) -> tuple[Tensor, Tensor]:
        """The middle `decode_frames` latent frames and the audio they stand for."""
        frames, total = self.settings.decode_frames, latents.shape[-1]
        if frames > total:
            raise InputError(f"VAE option 'decode_frames' is {frames} but a training crop encodes to "
                             f"{total} latent frames: lower it or raise the config's sample_size")  # fmt: skip
        start = (total - frames) // 2
        ratio = self.autoencoder.downsampling_ratio
        return latents[..., start : start + frames], reals[..., start * ratio : (start + frames) * ratio]

    @contextmanager
    def _frozen_discriminator(self):
        """Gradients reach the decoded audio through the discriminator but not its weights."""
        flags = [p.requires_grad for p in self.discriminator.parameters()]
        self.discriminator.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(self.discriminator.parameters(), flags):
                p.requires_grad_(flag)

    def generator_loss(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if self.demo_audio is None and ctx.micro_batch == 0:
            self.set_demo_audio(self._reals(batch))
        reals, decoded, latents, kl = self._reconstruct(batch, training_generator=True)
        w = self.weights
        # stable-audio-tools passes (reals, decoded): spectral convergence is normalised by the
        # reconstruction's magnitude. Kept for parity.
        stft, parts = self.stft_loss(reals, decoded)
        loss = w.stft * stft + w.kl * kl
        logged = {"stft": _number(stft), "kl": _number(kl), "latent_std": _number(latents.std()),
                  **{name: _number(value) for name, value in parts.items()}}  # fmt: skip
        if w.time_l1:
            time_l1 = (decoded.float() - reals.float()).abs().mean()
            loss = loss + w.time_l1 * time_l1
            logged["time_l1"] = _number(time_l1)
        if self.discriminator is not None and ctx.step >= self.settings.warmup_steps:
            with torch.no_grad():
                _, real_features = self.discriminator(reals)
            with self._frozen_discriminator():
                fake_logits, fake_features = self.discriminator(decoded)
            adversarial = hinge_generator_loss(fake_logits)
            matching = feature_matching_loss(real_features, fake_features,
                                             self.settings.normalize_feature_matching)  # fmt: skip
            loss = loss + w.adversarial * adversarial + w.feature_matching * matching
            logged.update(adversarial=_number(adversarial), feature_matching=_number(matching))
        return loss, logged

    def discriminator_loss(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        reals, decoded, _, _ = self._reconstruct(batch, training_generator=False)
        real_logits, _ = self.discriminator(reals)
        fake_logits, _ = self.discriminator(decoded.detach())
        loss = hinge_discriminator_loss(real_logits, fake_logits)
        return loss, {"hinge": _number(loss)}

    # -- start weights ----------------------------------------------------------------------------

    def load_start_weights(self, path: str | Path) -> None:
        """Load autoencoder weights (and a stable-audio-tools training checkpoint's discriminator,
        when present) from a checkpoint file: a bare autoencoder, a diffusion model's
        `pretransform.model.*`, or a training wrapper's `autoencoder.*`."""
        state = read_state_dict(path)
        load_state_dict_strict(self.autoencoder, autoencoder_state(state), f"{path} (autoencoder)")
        prefix = REFERENCE_DISCRIMINATOR_PREFIX
        discriminator_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if discriminator_state and self.discriminator is not None:
            try:
                load_state_dict_strict(self.discriminator, discriminator_state, f"{path} (discriminator)")
            except CheckpointError as exc:
                raise CheckpointError(f"{exc}\nthe discriminator options must match the checkpoint's "
                                      "discriminator, or start from the autoencoder alone") from exc


# ------------------------------------------------------------------------------------------------
# Building from a stable-audio-tools autoencoder config
# ------------------------------------------------------------------------------------------------


def _betas(value: Any, where: str) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ConfigError(f"{where} must be two numbers [beta1, beta2], got {value!r}")
    return float(value[0]), float(value[1])


def _read_optimizer(section: dict, which: str) -> dict[str, Any]:
    where = f"training.optimizer_configs.{which}"
    check_keys(section, {"optimizer", "scheduler"}, where)  # the schedule is the trainer's setting
    optimizer = section.get("optimizer", {})
    check_keys(optimizer, {"type", "config"}, f"{where}.optimizer")
    if optimizer.get("type", "AdamW") != "AdamW":
        raise ConfigError(f"{where}.optimizer.type is {optimizer['type']!r}; the trainer uses AdamW")
    config = optimizer.get("config", {})
    check_keys(config, {"lr", "betas", "weight_decay"}, f"{where}.optimizer.config")
    prefix = "" if which == "autoencoder" else "discriminator_"
    read = {}
    if "lr" in config:
        read[prefix + "learning_rate"] = float(config["lr"])
    if "betas" in config:
        read[prefix + "betas"] = _betas(config["betas"], f"{where}.optimizer.config.betas")
    if "weight_decay" in config:
        read[prefix + "weight_decay"] = float(config["weight_decay"])
    return read


def _read_loss_configs(losses: dict) -> dict[str, Any]:
    check_keys(losses, LOSS_CONFIG_KEYS, "training.loss_configs")
    read: dict[str, Any] = {}
    if "discriminator" in losses:
        section = losses["discriminator"]
        where = "training.loss_configs.discriminator"
        check_keys(section, {"type", "config", "weights"}, where)
        if section.get("type", "encodec") != "encodec":
            raise ConfigError(f"{where}.type is {section['type']!r}; only 'encodec' (the multi-scale "
                              "STFT discriminator) is supported")  # fmt: skip
        read["discriminator"] = dict(section.get("config", {}))
        weights = section.get("weights", {})
        check_keys(weights, {"adversarial", "feature_matching"}, f"{where}.weights")
        read.update({k: float(v) for k, v in weights.items()})
    if "spectral" in losses:
        section = losses["spectral"]
        where = "training.loss_configs.spectral"
        check_keys(section, {"type", "config", "weights", "decay"}, where)
        if section.get("type", "mrstft") != "mrstft" or section.get("decay", 1.0) != 1.0:
            raise ConfigError(f"{where}: only type 'mrstft' without weight decay is supported")
        read["spectral"] = dict(section.get("config", {}))
        weights = section.get("weights", {})
        check_keys(weights, {"mrstft"}, f"{where}.weights")
        if "mrstft" in weights:
            read["stft"] = float(weights["mrstft"])
    if "time" in losses:
        section = losses["time"]
        where = "training.loss_configs.time"
        check_keys(section, {"type", "weights", "decay"}, where)
        if section.get("type", "l1") != "l1" or section.get("decay", 1.0) != 1.0:
            raise ConfigError(f"{where}: only type 'l1' without weight decay is supported")
        weights = section.get("weights", {})
        check_keys(weights, {"l1"}, f"{where}.weights")
        if "l1" in weights:
            read["time_l1"] = float(weights["l1"])
    if "bottleneck" in losses:
        section = losses["bottleneck"]
        check_keys(section, {"type", "weights"}, "training.loss_configs.bottleneck")
        weights = section.get("weights", {})
        check_keys(weights, {"kl"}, "training.loss_configs.bottleneck.weights")
        if "kl" in weights:
            read["kl"] = float(weights["kl"])
    return read


def _read_training_section(training: dict) -> dict[str, Any]:
    """The task's settings from a stable-audio-tools "training" section, in option form."""
    allowed = TRAINING_KEYS_READ | TRAINING_KEYS_TRAINER | set(TRAINING_KEYS_INACTIVE)
    check_keys(training, allowed, "model config 'training'")
    for key, (inactive, advice) in TRAINING_KEYS_INACTIVE.items():
        if key in training and training[key] != inactive:
            raise ConfigError(f"model config training.{key} = {training[key]!r}: {advice}")
    read: dict[str, Any] = {}
    if training.get("learning_rate") is not None and "optimizer_configs" not in training:
        # Without optimizer configs the reference gives both networks this rate.
        read["learning_rate"] = read["discriminator_learning_rate"] = float(training["learning_rate"])
    if "warmup_steps" in training:
        read["warmup_steps"] = int(training["warmup_steps"])
    if "use_ema" in training:
        read["use_ema"] = bool(training["use_ema"])
    optimizers = training.get("optimizer_configs", {})
    check_keys(optimizers, {"autoencoder", "discriminator"}, "training.optimizer_configs")
    for which, section in optimizers.items():
        read.update(_read_optimizer(section, which))
    read.update(_read_loss_configs(training.get("loss_configs", {})))
    return read


def _merge_settings(values: dict[str, Any], spectral_base: dict,
                    discriminator_base: dict) -> tuple[VAESettings, dict, int]:
    """Settings from option-form `values`; its "spectral" / "discriminator" dicts update the bases."""
    settings = VAESettings()
    weights = settings.weights
    for weight in fields(VAELossWeights):
        if weight.name in values:
            setattr(weights, weight.name, float(values[weight.name]))
    spectral = dict(spectral_base)
    spectral.update(values.get("spectral", {}))
    check_keys(spectral, SPECTRAL_KEYS, "VAE 'spectral' options")
    if spectral.get("window", "hann_window") != "hann_window":
        raise ConfigError(f"VAE 'spectral' window {spectral['window']!r}: only 'hann_window' is supported")
    settings.spectral = spectral
    discriminator = dict(discriminator_base)
    discriminator.update(values.get("discriminator", {}))
    settings.normalize_feature_matching = bool(discriminator.pop("normalize_losses", False))
    if discriminator.pop("loss_type", "hinge") != "hinge":
        raise ConfigError("VAE discriminator 'loss_type': only 'hinge' is supported")
    simple = {f.name for f in fields(VAESettings)} - {"weights", "spectral", "normalize_feature_matching"}
    for name in simple & set(values):
        value = values[name]
        if name.endswith("betas") and value is not None:
            value = _betas(value, f"VAE option '{name}'")
        setattr(settings, name, value)
    return settings, discriminator, int(values.get("seed", 0))


def build_vae_task(model_config: dict, options: dict | None = None) -> VAETask:
    """A `VAETask` from a stable-audio-tools autoencoder config and `options` (`VAE_OPTION_KEYS`).

    options: "stft", "adversarial", "feature_matching", "kl", "time_l1" (loss weights; defaults 1.0,
    0.1, 5.0, 1e-4, 0; adversarial = feature_matching = 0 trains without a discriminator); "phase" 1 | 2 (2
    freezes the encoder); "checkpoint" (start weights); "discriminator" / "spectral" (dicts
    merged over the config's, e.g. {"filters": 32}); "warmup_steps", "warmup_mode" ("adv" |
    "full"); "learning_rate", "discriminator_learning_rate", "betas", "discriminator_betas",
    "weight_decay", "discriminator_weight_decay" (None: the trainer's); "demo_items" (4);
    "seed" (weight initialisation, 0); "use_ema" (True); "decode_frames" (phase 2: decode and
    score only the middle N latent frames of each encoded crop; 0, the default, decodes all).
    """
    options = dict(options or {})
    check_keys(options, VAE_OPTION_KEYS, "VAE training options")
    check_keys(model_config, MODEL_CONFIG_KEYS, "autoencoder model config")
    model_type = require(model_config, "model_type", "autoencoder model config")
    if model_type != "autoencoder":
        raise ConfigError(f"VAE training needs a model config with model_type 'autoencoder', got "
                          f"{model_type!r} (a diffusion model's VAE is its model.pretransform.config)")  # fmt: skip
    sample_rate = int(require(model_config, "sample_rate", "autoencoder model config"))
    model_section = require(model_config, "model", "autoencoder model config")
    check_keys(model_section, AUTOENCODER_KEYS, "autoencoder model config 'model'")

    values = _read_training_section(model_config.get("training", {}))
    # A config's own loss sections replace the defaults whole, as in the reference (whose classes
    # then supply what they leave out); options update them key by key.
    spectral_base = values.pop("spectral", DEFAULT_SPECTRAL)
    discriminator_base = values.pop("discriminator", DEFAULT_DISCRIMINATOR)
    values.update(options)
    settings, discriminator_config, seed = _merge_settings(values, spectral_base, discriminator_base)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        autoencoder = build_autoencoder({"type": "autoencoder", "config": model_section}, sample_rate)
        discriminator = None
        if settings.weights.uses_discriminator:
            discriminator_config.setdefault("in_channels", autoencoder.out_channels)
            discriminator = MultiScaleSTFTDiscriminator.from_config(discriminator_config)
    task = VAETask(autoencoder, model_config, discriminator, settings)
    if options.get("checkpoint"):
        task.load_start_weights(options["checkpoint"])
    return task

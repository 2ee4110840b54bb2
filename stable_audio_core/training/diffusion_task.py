"""Training the latent diffusion model (paper sec. 4.4), with stable-audio-tools' semantics.

One step, per item i of a batch (every random draw from the item's own seed, ``training.task``):
1. x0: the VAE latents of the audio (a draw from the posterior, salt "latent"), or the batch's
   pre-encoded ``"latents"``;
2. t in [0, 1) from the timestep sampler (salt "timestep"; "uniform" by default);
3. noise ~ N(0, I) (salt "noise"); for the v-objective (Salimans & Ho 2022) with the cosine
   schedule alpha = cos(pi t / 2), sigma = sin(pi t / 2):
   x_t = alpha x0 + sigma noise, target v = alpha noise - sigma x0;
   for rectified flow (``rectified_flow`` / ``rf_denoiser``, SAO Small): alpha = 1 - t, sigma = t,
   target = noise - x0;
4. condition dropout for classifier-free guidance (salt "dropout"): with probability
   ``cond_dropout`` (0.1) an item's conditioning becomes the backbone's unconditional input, the
   side guidance uses at sampling: the DiT zeroes the cross-attention tokens and, by a separate
   draw, the prepend tokens (the global embedding stays); the U-Net swaps every cross-attention
   token (and the time token) for its learned ``fixed_embedding``;
5. loss = mean squared error between the backbone's output and the target, averaged per item
   (over the frames the padding mask keeps, when ``mask_padding``) and then over items.

The text encoders are frozen (not parameters of the model; run without gradients); the VAE is
frozen; the backbone and the conditioners' own layers (proj_out, timing embedders) train, or with
LoRA only the adapters. The EMA covers the backbone, as in stable-audio-tools.

Differences from stable-audio-tools, for per-item reproducibility: uniform timesteps are
independent per item (the reference draws the batch from a scrambled Sobol sequence; same
distribution), and the padding-masked loss is a mean of per-item means (the reference pools the
kept elements of the whole batch), so the loss of a global batch does not depend on how it is
split into micro-batches or processes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import read_state_dict
from ..config import ModelConfig, load_model_config
from ..errors import ConfigError, InputError
from ..factory import attach_text_encoder, build_model, load_autoencoder_weights, load_weights
from ..models.stable_audio import BACKBONES, ModelInputs, StableAudioModel, assemble_inputs, backbone_type
from ..text.conditioners import TextConditioner
from .export import diffusion_model_config, diffusion_state_dict
from .lora import apply_lora, lora_parameters, target_patterns
from .task import (Batch, Phase, StepContext, item_generators, latent_padding_mask, per_item_rand,
                   per_item_randn)

TIMESTEP_SAMPLERS = ("uniform", "logit_normal", "trunc_logit_normal", "log_snr")
# Keys of a model config's "training" section that set this task's defaults (the reference's names).
TRAINING_SECTION_KEYS = {
    "cfg_dropout_prob": "cond_dropout", "timestep_sampler": "timestep_sampler",
    "timestep_sampler_options": "timestep_sampler_options", "mask_padding": "mask_padding",
    "mask_padding_dropout": "mask_padding_dropout", "pre_encoded": "latents",
}
PADDING_DROPOUT_DRAW = 2   # index of the draw deciding whether an item's padding mask is used
TRUNC_LOGIT_NORMAL_LEFT = 0.075   # the reference's truncation of the logit-normal's lower tail


# --- the formulas -------------------------------------------------------------------------------

def alpha_sigma(t: Tensor, objective: str) -> tuple[Tensor, Tensor]:
    """Tensor[B] -> (alpha, sigma), each Tensor[B]: cos/sin(pi t / 2) for "v", (1 - t, t) for
    rectified flow."""
    if objective == "v":
        return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)
    if objective in ("rectified_flow", "rf_denoiser"):
        return 1 - t, t
    raise ConfigError(f"unknown diffusion objective {objective!r}")


def noised_and_target(x0: Tensor, noise: Tensor, t: Tensor, objective: str) -> tuple[Tensor, Tensor]:
    """x0, noise: Tensor[B, C, L]; t: Tensor[B] -> (x_t, regression target), each Tensor[B, C, L]."""
    alpha, sigma = (s[:, None, None] for s in alpha_sigma(t, objective))
    noised = x0 * alpha + noise * sigma
    target = noise * alpha - x0 * sigma if objective == "v" else noise - x0
    return noised, target


def _normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _normal_icdf(p: Tensor) -> Tensor:
    return math.sqrt(2) * torch.erfinv(2 * p - 1)


def sample_timesteps(seeds: Tensor, sampler: str = "uniform", options: dict | None = None) -> Tensor:
    """One diffusion time per item, Tensor[B] float32, from the item's "timestep" generator.

    uniform: U[0, 1). logit_normal: sigmoid(N(0, 1)). trunc_logit_normal: the reference's
    logit-normal truncated below 0.075, rescaled to [0, 1) and flipped (t -> 1 - t). log_snr:
    logSNR ~ N(mean_logsnr, std_logsnr), t = sigmoid(-logSNR) clamped to [1e-4, 1 - 1e-4].
    """
    options = options or {}
    if sampler == "uniform":
        return per_item_rand(seeds, "timestep")
    normal = per_item_randn(seeds, "timestep", ())
    if sampler == "logit_normal":
        return torch.sigmoid(normal)
    if sampler == "trunc_logit_normal":
        lower = _normal_cdf(torch.logit(torch.tensor(TRUNC_LOGIT_NORMAL_LEFT)))
        cdf = lower + (1 - lower) * _normal_cdf(normal)
        t = (torch.sigmoid(_normal_icdf(cdf)) - TRUNC_LOGIT_NORMAL_LEFT) / (1 - TRUNC_LOGIT_NORMAL_LEFT)
        return 1 - t
    if sampler == "log_snr":
        logsnr = normal * float(options.get("std_logsnr", 2.0)) + float(options.get("mean_logsnr", -1.2))
        return torch.sigmoid(-logsnr).clamp(1e-4, 1 - 1e-4)
    raise ConfigError(f"timestep_sampler {sampler!r} is not one of {list(TIMESTEP_SAMPLERS)}")


def dropout_draws(seeds: Tensor, draws: int = 3) -> Tensor:
    """Tensor[B, draws] of uniforms from each item's "dropout" generator: draw k decides the k-th
    conditioning input to drop (DiT: 0 cross-attention, 1 prepend) and PADDING_DROPOUT_DRAW the
    padding mask."""
    return per_item_rand(seeds, "dropout", (draws,))


def drop_conditioning(inputs: dict[str, Tensor | None], unconditional: dict[str, Tensor],
                      drop: Tensor) -> dict[str, Tensor | None]:
    """Swap in the unconditional side for the items ``drop`` marks.

    inputs: the backbone's conditioning keyword arguments; unconditional: its unconditional
    values (``BACKBONES[type][2]``), one entry per input to drop, in order; drop: BoolTensor[B, K]
    with K >= len(unconditional), column k for the k-th entry. An input only the unconditional side
    names (a flag like the U-Net's ``fixed_embedding_mask``) is zero/False for kept items.
    """
    out = dict(inputs)
    for column, (name, null) in enumerate(unconditional.items()):
        kept = inputs.get(name)
        if kept is None:
            kept = torch.zeros_like(null)
        where = drop[:, column].to(null.device).view(-1, *([1] * (null.dim() - 1)))
        out[name] = torch.where(where, null, kept)
    return out


def per_item_mse(output: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Tensor[B, C, L] pairs (+ BoolTensor[B, L] frames to keep) -> Tensor[B] mean squared errors."""
    error = (output.float() - target.float()) ** 2
    if mask is None:
        return error.mean(dim=(1, 2))
    keep = mask.to(error.dtype)[:, None, :]
    counted = (keep.sum(dim=(1, 2)) * error.shape[1]).clamp(min=1)
    return (error * keep).sum(dim=(1, 2)) / counted


# --- a per-text cache over a frozen text encoder --------------------------------------------------

class CachedTextEncoder:
    """Wraps a frozen T5/CLAP text encoder: each text is encoded alone (so its features do not
    depend on what else is in the batch) and kept in an LRU cache of ``capacity`` texts."""

    def __init__(self, encoder: Any, capacity: int):
        self.inner = encoder
        self.capacity = int(capacity)
        self._cache: OrderedDict[tuple, tuple[Tensor, ...]] = OrderedDict()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _lookup(self, method: str, texts: list[str], kwargs: dict) -> list[tuple[Tensor, ...]]:
        rows = []
        for text in texts:
            key = (method, tuple(sorted(kwargs.items())), text)
            if key in self._cache:
                self._cache.move_to_end(key)
            else:
                result = getattr(self.inner, method)([text], **kwargs)
                parts = result if isinstance(result, tuple) else (result,)
                self._cache[key] = tuple(p[0] for p in parts)
                if len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
            rows.append(self._cache[key])
        return rows

    def encode(self, texts: list[str], **kwargs) -> tuple[Tensor, Tensor]:
        rows = self._lookup("encode", texts, kwargs)
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    def embed(self, texts: list[str]) -> Tensor:
        return torch.stack([r[0] for r in self._lookup("embed", texts, {})])


def _text_conditioners(model: StableAudioModel) -> list[TextConditioner]:
    return [c for c in model.conditioner.conditioners.values() if isinstance(c, TextConditioner)]


# --- options ------------------------------------------------------------------------------------

@dataclass
class DiffusionOptions:
    """What ``build_diffusion_task`` accepts in ``options`` (unknown keys raise ConfigError).

    A model config's ``"training"`` section (stable-audio-tools' names: cfg_dropout_prob,
    timestep_sampler, timestep_sampler_options, mask_padding, mask_padding_dropout, pre_encoded)
    sets the defaults; options override it.
    """

    seed: int = 0                               # initialisation of fresh weights and adapters
    cond_dropout: float = 0.1                   # classifier-free guidance dropout per item
    timestep_sampler: str = "uniform"
    timestep_sampler_options: dict = field(default_factory=dict)
    mask_padding: bool = False                  # restrict the loss to real (unpadded) frames
    mask_padding_dropout: float = 0.0           # chance an item ignores its padding mask
    latents: bool = False                       # batches carry pre-encoded "latents"
    checkpoint: str | None = None               # start weights: a full diffusion_cond checkpoint
    pretransform_checkpoint: str | None = None  # VAE weights (autoencoder layout or full layout)
    text_encoder: str | None = None             # local T5 / CLAP folder for the text conditioner
    lora: dict | None = None                    # {"rank": 16, "alpha": 16, "targets": [...]}
    train_conditioner: bool | None = None       # default: True, False with LoRA
    cache_text_embeddings: int = 0              # cache capacity in texts; 0 = off
    demo_prompts: list | None = None            # str prompts or full metadata dicts
    demo_seconds: float | None = None           # seconds_total of str demo prompts (default: window)
    demo_steps: int = 50
    demo_cfg_scale: float | None = None
    demo_sampler: str | None = None
    demo_seed: int = 0

    @classmethod
    def from_dicts(cls, training_section: dict | None, options: dict) -> "DiffusionOptions":
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigError(f"unknown diffusion training option(s) {unknown}; allowed: {sorted(allowed)}")
        values = {ours: training_section[theirs] for theirs, ours in TRAINING_SECTION_KEYS.items()
                  if training_section and theirs in training_section}
        values.update(options)
        result = cls(**values)
        result.validate()
        return result

    def validate(self) -> None:
        for name in ("cond_dropout", "mask_padding_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"diffusion option {name} must be a probability in [0, 1], got {value!r}")
        if self.timestep_sampler not in TIMESTEP_SAMPLERS:
            raise ConfigError(
                f"timestep_sampler {self.timestep_sampler!r} is not one of {list(TIMESTEP_SAMPLERS)}"
            )
        if self.lora is not None:
            if not isinstance(self.lora, dict):
                raise ConfigError(f"lora must be a dict like {{'rank': 16, 'alpha': 16}}, got {self.lora!r}")
            unknown = sorted(set(self.lora) - {"rank", "alpha", "targets"})
            if unknown:
                raise ConfigError(f"unknown lora key(s) {unknown}; allowed: ['alpha', 'rank', 'targets']")
        if self.demo_steps < 1:
            raise ConfigError(f"demo_steps must be at least 1, got {self.demo_steps}")
        if self.cache_text_embeddings < 0:
            raise ConfigError(f"cache_text_embeddings must be >= 0, got {self.cache_text_embeddings}")


# --- the task -----------------------------------------------------------------------------------

@dataclass
class DiffusionStep:
    """Everything one loss evaluation uses, exposed for inspection and tests."""

    x0: Tensor                   # [B, C, L] clean latents
    t: Tensor                    # [B]
    noise: Tensor                # [B, C, L]
    noised: Tensor               # [B, C, L] the backbone's input
    target: Tensor               # [B, C, L]
    dropped: Tensor              # [B, K] bool, which conditioning inputs were dropped per item
    inputs: dict                 # the backbone's conditioning keyword arguments, after dropout
    loss_mask: Tensor | None     # [B, L] bool frames the loss keeps (None: all)


def check_trainable(config: ModelConfig) -> str:
    """The config's BACKBONES key, or ConfigError for a model this task cannot train yet."""
    kind = backbone_type(config)
    if kind == "sa3_dit":
        raise ConfigError(
            "training Stable Audio 3 models is not supported yet: this task has no SA3 LoRA target "
            "names, does not build the SAME latents with their padding masks, and has no objective "
            "for the distilled rf_denoiser models (the reference distils them); train with "
            "stable-audio-3's own trainer and load its LoRA files here (generate --lora FILE)"
        )
    return kind


class DiffusionTask:
    """The training task of a ``diffusion_cond`` model (see the module docstring)."""

    kind = "diffusion"

    def __init__(self, model: StableAudioModel, options: DiffusionOptions):
        self.backbone_type = check_trainable(model.config)
        self.model = model
        self.options = options
        self.objective = model.objective
        self.lora_paths: list[str] = []
        model.requires_grad_(False)
        if model.autoencoder is not None:
            model.autoencoder.eval()
        if options.lora is not None:
            lora = options.lora
            generator = item_generators(torch.tensor([options.seed]), "lora")[0]
            self.lora_paths = apply_lora(
                model.backbone, rank=int(lora.get("rank", 16)), alpha=float(lora.get("alpha", lora.get("rank", 16))),
                patterns=target_patterns(self.backbone_type, lora.get("targets")), generator=generator,
            )
            trainable = lora_parameters(model.backbone)
        else:
            trainable = list(model.backbone.parameters())
        train_conditioner = options.train_conditioner
        if train_conditioner is None:
            train_conditioner = options.lora is None
        if train_conditioner:
            trainable += list(model.conditioner.parameters())
        for parameter in trainable:
            parameter.requires_grad_(True)
        self._trainable = trainable
        self._unconditional = BACKBONES[self.backbone_type][2]
        if options.cache_text_embeddings:
            for conditioner in _text_conditioners(model):
                if conditioner.text_encoder is not None:
                    conditioner.__dict__["text_encoder"] = CachedTextEncoder(
                        conditioner.text_encoder, options.cache_text_embeddings)
        model.backbone.train()
        model.conditioner.train()

    # --- the TrainingTask protocol ------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        # The VAE is frozen and rebuilt from the options, so it is not checkpointed.
        return {"backbone": self.model.backbone, "conditioner": self.model.conditioner}

    def ema_modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.model.backbone}

    def phases(self) -> list[Phase]:
        return [Phase("diffusion", [p for p in self._trainable if p.requires_grad], self.loss)]

    def to(self, device: torch.device | str) -> "DiffusionTask":
        self.model.to(device)
        for conditioner in _text_conditioners(self.model):
            if conditioner.text_encoder is not None:
                conditioner.text_encoder.to(device)
        return self

    def export(self, ema: dict[str, nn.Module] | None = None) -> tuple[dict[str, Tensor], dict]:
        backbone = None if not ema else ema.get("backbone")
        return diffusion_state_dict(self.model, backbone), diffusion_model_config(self.model)

    # --- one loss evaluation --------------------------------------------------------------------
    @property
    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self._trainable)

    def clean_latents(self, batch: Batch, device: torch.device) -> tuple[Tensor, Tensor | None]:
        """The batch's x0 Tensor[B, C, L] and its padding mask BoolTensor[B, L] (or None)."""
        mask = batch.get("padding_mask")
        if "latents" in batch:
            latents = batch["latents"].to(device=device, dtype=torch.float32)
            return latents, None if mask is None else mask.to(device).bool()
        if self.options.latents:
            raise InputError("this task trains from pre-encoded latents (option latents=True) but the "
                             "batch has no 'latents'; use a LatentDataset or set latents=False")
        if "audio" not in batch:
            raise InputError(f"a diffusion batch needs 'audio' or 'latents', got keys {sorted(batch)}")
        audio = batch["audio"].to(device)
        autoencoder = self.model.autoencoder
        if autoencoder is None:
            latents = audio.float()
        else:
            generators = item_generators(batch["seeds"], "latent", device=audio.device)
            dtype = next(autoencoder.parameters()).dtype
            with torch.no_grad():
                latents = torch.cat([
                    autoencoder.encode(audio[i:i + 1].to(dtype), sample=True, generator=g, chunked=False)
                    for i, g in enumerate(generators)
                ]).float()
        if mask is not None:
            mask = latent_padding_mask(mask.to(device), latents.shape[-1])
        return latents, mask

    def prepare(self, batch: Batch, device: torch.device | str = "cpu") -> DiffusionStep:
        """Latents, time, noise, target and (dropped) conditioning for ``batch``."""
        device = torch.device(device)
        seeds = batch["seeds"]
        x0, padding = self.clean_latents(batch, device)
        t = sample_timesteps(seeds, self.options.timestep_sampler, self.options.timestep_sampler_options).to(device)
        noise = per_item_randn(seeds, "noise", tuple(x0.shape[1:]), device=device)
        noised, target = noised_and_target(x0, noise, t, self.objective)

        conditioning = self.model.conditioner(batch["metadata"], device)
        inputs = dict(assemble_inputs(conditioning, self.model.config).__dict__)
        draws = dropout_draws(seeds)
        unconditional = self._unconditional(ModelInputs(**inputs), None)
        dropped = draws[:, :max(1, len(unconditional))] < self.options.cond_dropout
        if self.options.cond_dropout > 0 and unconditional:
            inputs = drop_conditioning(inputs, unconditional, dropped)

        loss_mask = None
        if self.options.mask_padding and padding is not None:
            use = draws[:, PADDING_DROPOUT_DRAW] >= self.options.mask_padding_dropout
            loss_mask = padding | ~use.to(padding.device)[:, None]
        return DiffusionStep(x0, t, noise, noised, target, dropped, inputs, loss_mask)

    def predict(self, step: DiffusionStep, backbone: nn.Module | None = None) -> Tensor:
        """The backbone's output Tensor[B, C, L] for ``step`` (``backbone`` defaults to the model's)."""
        backbone = self.model.backbone if backbone is None else backbone
        call = BACKBONES[self.backbone_type][1](backbone)
        dtype = next(backbone.parameters()).dtype
        inputs = {k: (v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v)
                  for k, v in step.inputs.items()}
        return call(step.noised.to(dtype), step.t.to(dtype), **inputs)

    def loss(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        step = self.prepare(batch, ctx.device)
        per_item = per_item_mse(self.predict(step), step.target, step.loss_mask)
        loss = per_item.mean()
        return loss, {"mse": float(loss.detach()), "std_data": float(step.x0.std())}

    # --- demos ------------------------------------------------------------------------------------
    def demo(self, out_dir: Path, step: int, ema: dict[str, nn.Module] | None = None) -> list[Path]:
        """One short clip per demo prompt, generated with the EMA backbone (when given)."""
        from ..audio.io import write_audio
        from ..pipeline import generate

        prompts = self.options.demo_prompts
        if not prompts or self.model.autoencoder is None:
            return []
        out_dir = Path(out_dir)
        holder = self.model.model
        trained = holder.model
        backbone = ema.get("backbone") if ema else None
        was_training = trained.training
        holder.model = trained if backbone is None else backbone
        paths = []
        try:
            holder.model.eval()
            for index, prompt in enumerate(prompts):
                kwargs: dict[str, Any] = {}
                if isinstance(prompt, dict):
                    kwargs["conditioning"] = prompt
                    seconds = prompt.get("seconds_total")
                else:
                    kwargs["prompt"] = str(prompt)
                    seconds = self.options.demo_seconds
                    if seconds is not None:
                        kwargs["seconds_total"] = float(seconds)
                result = generate(self.model, steps=self.options.demo_steps, cfg_scale=self.options.demo_cfg_scale,
                                  sampler=self.options.demo_sampler, seed=self.options.demo_seed + index,
                                  trim=seconds is not None, **kwargs)
                path = out_dir / f"demo_{step:08d}_{index:02d}.wav"
                paths.append(write_audio(path, result.audio[0], result.sample_rate))
        finally:
            holder.model = trained
            trained.train(was_training)
        return paths


# --- building -----------------------------------------------------------------------------------

def build_diffusion_task(model_config: dict | str | Path | ModelConfig, options: dict | None = None) -> DiffusionTask:
    """A DiffusionTask for a stable-audio-tools ``diffusion_cond`` config (DiT or adp_cfg_1d, v or
    rectified flow); ``options`` as in DiffusionOptions. Fresh weights are drawn from
    ``options["seed"]`` (the global RNG is left as it was), then the checkpoints named in the
    options are loaded strictly and the text encoder folder attached."""
    config = model_config if isinstance(model_config, ModelConfig) else load_model_config(model_config)
    check_trainable(config)
    parsed = DiffusionOptions.from_dicts(config.raw.get("training"), dict(options or {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(parsed.seed)
        model = build_model(config)
    embedded = None
    if parsed.checkpoint is not None:
        embedded = load_weights(model, read_state_dict(parsed.checkpoint), str(parsed.checkpoint))
    if parsed.pretransform_checkpoint is not None:
        if model.autoencoder is None:
            raise ConfigError("pretransform_checkpoint was given but the model config has no pretransform")
        load_autoencoder_weights(model.autoencoder, parsed.pretransform_checkpoint)
    attach_text_encoder(model, parsed.text_encoder, embedded=embedded)
    missing = [name for name, c in model.conditioner.conditioners.items()
               if isinstance(c, TextConditioner) and c.text_encoder is None]
    if missing:
        raise ConfigError(
            f"the text conditioner(s) {missing} need a frozen text encoder: pass the local T5 or CLAP "
            "folder as options['text_encoder']"
        )
    return DiffusionTask(model, parsed)

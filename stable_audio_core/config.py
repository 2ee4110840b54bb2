"""stable-audio-tools `model_config.json` as our config format: read it, check it, explain errors.

The config stays a plain dict in stable-audio-tools' layout (so our files remain valid for the
reference); this module only validates its structure and gives typed access to the parts the
pipeline needs. Each model part validates its own inner `config` dict in its `from_config`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

SUPPORTED_MODEL_TYPES = ("diffusion_cond", "diffusion_cond_inpaint")
DIFFUSION_OBJECTIVES = ("v", "rectified_flow", "rf_denoiser")

_TOP_LEVEL_KEYS = {"model_type", "sample_size", "sample_rate", "audio_channels", "model", "training",
                   "reconstructed_from",  # our note on configs rebuilt from public sources
                   "sampling_defaults"}   # sampling_defaults: our extension (pipeline.defaults_for)
_MODEL_KEYS = {"pretransform", "conditioning", "diffusion", "io_channels"}
_DIFFUSION_KEYS = {
    "type", "config", "diffusion_objective", "cross_attention_cond_ids", "global_cond_ids",
    "input_concat_ids", "prepend_cond_ids", "distribution_shift_options",
    *("local_add_cond_ids", "mask_padding_attention", "use_effective_length_for_schedule",
      "sampling_distribution_shift_options", "modular_local_cond_configs"),   # Stable Audio 3
}
# Keys only stable-audio-3 configs carry: any of them makes a config a Stable Audio 3 model.
SA3_DIFFUSION_KEYS = ("local_add_cond_ids", "mask_padding_attention", "use_effective_length_for_schedule",
                      "sampling_distribution_shift_options")


def is_sa3_config(raw: dict) -> bool:
    """Whether a model_config.json describes a Stable Audio 3 model: its diffusion section has a
    stable-audio-3-only key, or its pretransform is a SAME autoencoder."""
    model = raw.get("model") or {}
    diffusion = model.get("diffusion") or {}
    pretransform = (model.get("pretransform") or {}).get("config") or {}
    encoder = pretransform.get("encoder") if isinstance(pretransform, dict) else None
    same = pretransform.get("type") == "same" or (isinstance(encoder, dict) and encoder.get("type") == "same")
    return same or any(key in diffusion for key in SA3_DIFFUSION_KEYS)
_CONDITIONING_KEYS = {"configs", "cond_dim", "default_keys", "pre_encoded_keys"}
_CONDITIONER_KEYS = {"id", "type", "config"}


def check_keys(section: dict, allowed: set[str], where: str) -> None:
    """Raise ConfigError naming every key of `section` that is not in `allowed`."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {where}; allowed keys are {sorted(allowed)}"
        )


def require(section: dict, key: str, where: str) -> Any:
    if key not in section:
        raise ConfigError(f"{where} is missing the required key '{key}'")
    return section[key]


def integer(value: Any, where: str, minimum: int = 1) -> int:
    """`value` as an int of at least `minimum`, else ConfigError naming `where` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        raise ConfigError(f"{where} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


_SAMPLING_DEFAULT_TYPES = {"steps": "int", "cfg_scale": "number", "sampler": "text",
                           "sigma_min": "number", "sigma_max": "number"}


def check_sampling_defaults(section: Any) -> None:
    """The optional top-level `sampling_defaults`: known keys with values of the right type."""
    if section is None:
        return
    check_keys(section, set(_SAMPLING_DEFAULT_TYPES), "sampling_defaults")
    for key, value in section.items():
        kind, where = _SAMPLING_DEFAULT_TYPES[key], f"sampling_defaults.{key}"
        if kind == "int":
            integer(value, where)
        elif kind == "text" and not isinstance(value, str):
            raise ConfigError(f"{where} must be a sampler name (text), got {value!r}")
        elif kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                   or not value > 0):
            raise ConfigError(f"{where} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class ConditionerSpec:
    id: str
    type: str
    config: dict


@dataclass(frozen=True)
class ModelConfig:
    """A validated `model_config.json`, with typed views of the parts the pipeline reads."""

    raw: dict
    model_type: str
    sample_rate: int
    sample_size: int
    audio_channels: int
    io_channels: int
    diffusion_type: str
    diffusion_config: dict
    objective: str
    cross_attention_cond_ids: tuple[str, ...]
    global_cond_ids: tuple[str, ...]
    input_concat_ids: tuple[str, ...]
    prepend_cond_ids: tuple[str, ...]
    cond_dim: int
    conditioners: tuple[ConditionerSpec, ...]
    default_keys: dict = field(default_factory=dict)
    pretransform: dict | None = None
    family: str = "stable_audio_tools"   # or "sa3" (is_sa3_config)
    local_add_cond_ids: tuple[str, ...] = ()
    base_dir: Path | None = None          # the folder of the model_config.json, for relative paths

    @property
    def conditioner_ids(self) -> tuple[str, ...]:
        return tuple(spec.id for spec in self.conditioners)


def parse_model_config(raw: dict) -> ModelConfig:
    """Validate a stable-audio-tools model config dict and return its typed view."""
    check_keys(raw, _TOP_LEVEL_KEYS, "the model config")
    model_type = require(raw, "model_type", "the model config")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"model_type '{model_type}' is not supported; supported: {list(SUPPORTED_MODEL_TYPES)}"
        )
    sample_rate = integer(require(raw, "sample_rate", "the model config"), "sample_rate")
    sample_size = integer(require(raw, "sample_size", "the model config"), "sample_size")
    audio_channels = integer(raw.get("audio_channels", 2), "audio_channels")
    check_sampling_defaults(raw.get("sampling_defaults"))

    model = require(raw, "model", "the model config")
    check_keys(model, _MODEL_KEYS, "model")
    io_channels = integer(require(model, "io_channels", "model"), "model.io_channels")

    diffusion = require(model, "diffusion", "model")
    check_keys(diffusion, _DIFFUSION_KEYS, "model.diffusion")
    objective = diffusion.get("diffusion_objective", "v")
    if objective not in DIFFUSION_OBJECTIVES:
        raise ConfigError(
            f"model.diffusion.diffusion_objective '{objective}' is not one of {list(DIFFUSION_OBJECTIVES)}"
        )
    family = "sa3" if is_sa3_config(raw) else "stable_audio_tools"
    # Stable Audio 3 configs keep their training-time shift here; sampling reads its own key.
    if diffusion.get("distribution_shift_options") is not None and family != "sa3":
        raise ConfigError(
            "model.diffusion.distribution_shift_options is not supported yet; remove it or set it to null"
        )

    conditioning = model.get("conditioning") or {"configs": [], "cond_dim": 0}
    check_keys(conditioning, _CONDITIONING_KEYS, "model.conditioning")
    if conditioning.get("pre_encoded_keys"):
        raise ConfigError("model.conditioning.pre_encoded_keys is not supported yet")
    specs = []
    configs = require(conditioning, "configs", "model.conditioning")
    if not isinstance(configs, list):
        raise ConfigError(f"model.conditioning.configs must be a list, got {type(configs).__name__}")
    for i, entry in enumerate(configs):
        where = f"model.conditioning.configs[{i}]"
        check_keys(entry, _CONDITIONER_KEYS, where)
        specs.append(ConditionerSpec(
            id=require(entry, "id", where), type=require(entry, "type", where),
            config=dict(entry.get("config", {})),
        ))
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"model.conditioning.configs has duplicate ids: {ids}")

    def id_list(key: str) -> tuple[str, ...]:
        listed = tuple(diffusion.get(key, []))
        missing = [i for i in listed if i not in ids]
        if missing:
            raise ConfigError(
                f"model.diffusion.{key} names {missing}, which no conditioner in "
                f"model.conditioning.configs defines (defined: {ids})"
            )
        return listed

    return ModelConfig(
        raw=raw,
        model_type=model_type,
        sample_rate=sample_rate,
        sample_size=sample_size,
        audio_channels=audio_channels,
        io_channels=io_channels,
        diffusion_type=require(diffusion, "type", "model.diffusion"),
        diffusion_config=dict(require(diffusion, "config", "model.diffusion")),
        objective=objective,
        cross_attention_cond_ids=id_list("cross_attention_cond_ids"),
        global_cond_ids=id_list("global_cond_ids"),
        input_concat_ids=id_list("input_concat_ids"),
        prepend_cond_ids=id_list("prepend_cond_ids"),
        cond_dim=integer(conditioning.get("cond_dim", 0), "model.conditioning.cond_dim", minimum=0),
        conditioners=tuple(specs),
        default_keys=dict(conditioning.get("default_keys", {})),
        pretransform=model.get("pretransform"),
        family=family,
        local_add_cond_ids=tuple(diffusion.get("local_add_cond_ids", [])),
    )


def load_model_config(source: str | Path | dict) -> ModelConfig:
    """Read a `model_config.json` (path) or take a dict, and validate it."""
    if isinstance(source, dict):
        return parse_model_config(source)
    from .models.hf_folder import read_json
    path = Path(source)
    raw = read_json(path, "model config file")
    try:
        config = parse_model_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return replace(config, base_dir=path.resolve().parent)

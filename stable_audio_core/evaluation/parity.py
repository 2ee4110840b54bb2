"""Recompute a reference parity fixture with our code and report the error of every tensor.

A fixture NAME (written by tools/make_parity_fixtures.py with stable-audio-tools, or with
"kind": "sa3" by tools/make_sa3_parity_fixtures.py with stable-audio-3) is NAME.json +
NAME.weights.safetensors + NAME.io.safetensors (+ NAME.t5gemma/ for SA3); see those tools for the
format. Every tensor an SA3 fixture must hold is checked: a missing one fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError

RELATIVE_TOLERANCE = 1e-4  # error allowed per unit of max(1, max|reference|)


@dataclass
class TensorReport:
    name: str
    max_abs_error: float
    reference_max: float

    @property
    def limit(self) -> float:
        return RELATIVE_TOLERANCE * max(1.0, self.reference_max)

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.limit

    def line(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        return (f"{status} {self.name:<34} max|err| {self.max_abs_error:.3e}  "
                f"limit {self.limit:.1e}  max|ref| {self.reference_max:.3e}")


def fixture_paths(base: str | Path) -> tuple[Path, Path, Path]:
    base = Path(base)
    stem = base.name
    for suffix in (".json", ".io.safetensors", ".weights.safetensors"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    folder = base.parent
    paths = (folder / f"{stem}.json", folder / f"{stem}.weights.safetensors", folder / f"{stem}.io.safetensors")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"parity fixture incomplete, missing: {missing}")
    return paths


@torch.inference_mode()
def run_parity(base: str | Path) -> list[TensorReport]:
    """Load the fixture's weights into our model, recompute every stored tensor, compare."""
    from safetensors.torch import load_file

    from ..factory import load_model
    from ..models.stable_audio import assemble_inputs
    from ..pipeline import generate

    meta_path, weights_path, io_path = fixture_paths(base)
    meta = json.loads(meta_path.read_text())
    ref = load_file(str(io_path))
    if meta.get("kind") == "sa3":
        return compare(_sa3_outputs(meta, meta_path.parent, weights_path, ref), ref, SA3_EXPECTED,
                       skip=SA3_INPUTS)
    model = load_model(meta["model_config"], weights_path)
    ours: dict[str, torch.Tensor] = {}

    ae = model.autoencoder
    if "enc_mean" in ref:
        ours["enc_mean"] = ae.encode(ref["audio"])
    if "dec_of_mean" in ref:
        ours["dec_of_mean"] = ae.decode(ref["enc_mean"])

    conditioning = meta["conditioning"]
    cond = model.conditioner(conditioning, "cpu")
    for key, (tokens, mask) in cond.items():
        ours[f"cond.{key}"] = tokens
        ours[f"cond.{key}.mask"] = mask.float()
    inputs = assemble_inputs(cond, model.config)
    names = {"global_cond": "global_embed"}  # the reference's name -> ours
    for ref_name in [k[len("inputs."):] for k in ref if k.startswith("inputs.")]:
        value = getattr(inputs, names.get(ref_name, ref_name))
        if value is not None:
            ours[f"inputs.{ref_name}"] = value.float()

    negative = None
    if meta.get("negative_conditioning"):
        negative = assemble_inputs(model.conditioner(meta["negative_conditioning"], "cpu"), model.config)
    x, t = ref["x"], ref["t"]
    ours["model_out_cfg1"] = model.model_fn(inputs, 1.0)(x, t)
    scale = meta.get("model_out_cfg7_scale", 7.0)
    # The reference's call sets rescale_cfg=True: each backbone's default rescale (DiT 0, U-Net 0.4).
    ours["model_out_cfg7"] = model.model_fn(inputs, scale, negative)(x, t)

    sampler = meta["sampler"]
    result = generate(
        model, conditioning=conditioning, negative_conditioning=meta.get("negative_conditioning"),
        steps=sampler["steps"], cfg_scale=sampler["cfg_scale"], sampler=sampler["sampler_type"],
        sigma_min=sampler.get("sigma_min"), sigma_max=sampler.get("sigma_max"),
        seed=meta["seed"], batch_size=len(conditioning), decode=True, trim=False,
    )
    ours["gen_initial_noise"] = result.initial_noise
    ours["gen_latents"] = result.latents
    ours["gen_audio"] = result.audio

    return compare(ours, ref, (), skip=("audio", "x", "t"))


def compare(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], expected: tuple[str, ...],
            skip: tuple[str, ...] = ()) -> list[TensorReport]:
    """One report per reference tensor (inputs in `skip` and `negative_inputs.*` aside), plus a
    failing one for every `expected` name the fixture lacks."""
    reports = [TensorReport(f"{name} (missing from the fixture)", float("inf"), 0.0)
               for name in expected if name not in ref]
    for name, reference in ref.items():
        if name in skip or name.startswith("negative_inputs."):
            continue  # inputs, not outputs
        if name not in ours:
            reports.append(TensorReport(name, float("inf"), float(reference.abs().max())))
            continue
        mine = ours[name].float()
        if mine.shape != reference.shape:
            reports.append(TensorReport(f"{name} (shape {tuple(mine.shape)} vs {tuple(reference.shape)})",
                                        float("inf"), float(reference.abs().max())))
            continue
        reports.append(TensorReport(name, float((mine - reference).abs().max()), float(reference.abs().max())))
    return reports


# --- Stable Audio 3 fixtures ---------------------------------------------------------------------

SA3_INPUTS = ("dit.in.x", "dit.in.t", "dit.in.local_add_cond", "dit.in.padding_mask", "ae.in.audio",
              "gen.init_audio")
SA3_EXPECTED = (
    "cond.input_ids", "cond.prompt_embeds", "cond.seconds_total", *SA3_INPUTS[:4],
    "dit.in.cross_attn_cond", "dit.in.global_cond", "dit.out.plain", "dit.out.padding_mask",
    "dit.out.guided", "ae.in.audio", "ae.out.latents", "ae.out.decode_nonoise", "sched",
    "gen.latents", "gen.audio",
)


def _sa3_outputs(meta: dict, folder: Path, weights_path: Path, ref: dict[str, torch.Tensor]) -> dict:
    """Our value of every tensor an SA3 fixture stores, from the fixture's inputs."""
    from ..factory import load_model
    from ..models.stable_audio import assemble_inputs
    from ..sampling import sa3

    model = load_model(meta["model_config"], weights_path, text_encoder=folder / meta["text_encoder"])
    prompt = model.conditioner.conditioners["prompt"]
    texts = [item["prompt"] for item in meta["conditioning"]]
    ours = {"cond.input_ids": prompt.text_encoder.tokenizer(texts, prompt.max_length)[0]}
    cond = model.conditioner(meta["conditioning"], "cpu")
    ours["cond.prompt_embeds"], ours["cond.seconds_total"] = cond["prompt"][0], cond["seconds_total"][0]
    inputs = assemble_inputs(cond, model.config)
    ours["dit.in.cross_attn_cond"], ours["dit.in.global_cond"] = inputs.cross_attn_cond, inputs.global_embed
    if "dit.in.x" in ref:
        ours.update(_sa3_dit_outputs(model, meta, ref))
    if "ae.in.audio" in ref:
        ours["ae.out.latents"] = model.autoencoder.encode(ref["ae.in.audio"])
    if "ae.out.latents" in ref:
        ours["ae.out.decode_nonoise"] = model.autoencoder.decode(ref["ae.out.latents"], noise=False)
    ours.update(_sa3_generation(model, meta["generation"], ref.get("gen.init_audio")))
    return ours


def _sa3_dit_outputs(model, meta: dict, ref: dict[str, torch.Tensor]) -> dict:
    """One DiT call without guidance, with the padding mask, and guided (negative or null)."""
    from ..models.stable_audio import assemble_inputs
    from ..sampling import sa3

    x, t = ref["dit.in.x"], ref["dit.in.t"]
    inputs = dict(cross_attn_cond=ref["dit.in.cross_attn_cond"], global_embed=ref["dit.in.global_cond"],
                  local_add_cond=ref["dit.in.local_add_cond"])
    out = {"dit.out.plain": model.backbone(x, t, **inputs),
           "dit.out.padding_mask": model.backbone(x, t, padding_mask=ref["dit.in.padding_mask"].bool(), **inputs)}
    negative = None
    if meta.get("negative_conditioning"):
        negative = assemble_inputs(model.conditioner(meta["negative_conditioning"], "cpu"), model.config)
    guidance = meta["guidance"]
    guided = sa3.guided_velocity(
        model.backbone, **inputs, negative_cross_attn_cond=None if negative is None else negative.cross_attn_cond,
        negative_cross_attn_mask=None if negative is None else negative.cross_attn_mask,
        cfg_scale=guidance["cfg_scale"], apg_scale=guidance["apg_scale"])
    out["dit.out.guided"] = guided(x, t)
    return out


def _sa3_generation(model, generation: dict, init_audio: torch.Tensor | None) -> dict:
    """The generation's schedule, latents and audio through `pipeline.generate`."""
    from ..pipeline import generate, resolve_sampling, sa3_schedule, sa3_window

    inpaint = generation.get("inpaint")
    init = None if init_audio is None else (model.sample_rate, init_audio)
    kwargs = dict(negative_prompt=generation.get("negative_prompt"), duration=generation["duration"],
                  steps=generation["steps"], sampler=generation["sampler_type"],
                  cfg_scale=generation["cfg_scale"], apg_scale=generation.get("apg_scale", 1.0),
                  seed=generation["seed"], init_audio=init, init_noise_level=generation.get("init_noise_level"),
                  inpaint=None if inpaint is None else (inpaint["start"], inpaint["end"]))
    result = generate(model, generation["prompt"], **kwargs)
    seconds = [float(generation["duration"])]
    frames = sa3_window(model, seconds) // model.downsampling_ratio
    level = 1.0 if init is None or generation.get("init_noise_level") is None else generation["init_noise_level"]
    steps = resolve_sampling(model, steps=generation["steps"]).steps
    return {"gen.latents": result.latents, "gen.audio": result.audio,
            "sched": sa3_schedule(model, steps, seconds, frames, sigma_max=level)}

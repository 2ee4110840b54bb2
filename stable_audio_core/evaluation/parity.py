"""Recompute a reference parity fixture with our code and report the error of every tensor.

A fixture NAME (written by tools/make_parity_fixtures.py with stable-audio-tools) is
NAME.json + NAME.weights.safetensors + NAME.io.safetensors; see that tool for the format.
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

    reports = []
    for name, reference in ref.items():
        if name in ("audio", "x", "t") or name.startswith("negative_inputs."):
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

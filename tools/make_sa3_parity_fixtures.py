"""Write Stable Audio 3 parity fixtures with the reference (run in the SA3 reference env).

    /tmp/sa3-ref/bin/python tools/make_sa3_parity_fixtures.py OUT_DIR [--seed N] [--only NAME ...]
        [--latents L] [--embed-dim E]

For each case NAME (see CASES) it writes, as `stable-audio-toolkit parity OUT_DIR/NAME` reads them:
- NAME.json: {"kind": "sa3", "model_config", "text_encoder": "NAME.t5gemma", "conditioning"
  (batch B), "negative_conditioning" or null, "guidance": {"cfg_scale", "apg_scale"},
  "generation": {"prompt", "negative_prompt", "duration", "steps", "sampler_type", "cfg_scale",
  "apg_scale", "seed", "init_noise_level", "inpaint": {"start", "end"} or null}}; the prompt
  conditioner's model_path is the relative "NAME.t5gemma".
- NAME.weights.safetensors: the reference model's whole state dict (model.model.*,
  pretransform.model.*, conditioner.conditioners.*), every parameter drawn from a seeded generator
  (the reference zero-initialises many output layers, which would make parity vacuous).
- NAME.t5gemma/: a narrow random T5Gemma (1 layer, hidden 768 as the conditioner requires, a
  160-token BPE vocabulary) with tokenizer.json and tokenizer_config.json.
- NAME.io.safetensors: cond.input_ids, cond.prompt_embeds, cond.seconds_total; dit.in.x, dit.in.t,
  dit.in.cross_attn_cond, dit.in.global_cond, dit.in.local_add_cond, dit.in.padding_mask (uint8);
  dit.out.plain, dit.out.padding_mask, dit.out.guided; ae.in.audio, ae.out.latents,
  ae.out.decode_nonoise; sched; gen.latents, gen.audio; gen.init_audio when the generation has
  init_noise_level or inpaint.
CPU, float32, one thread. The project never imports this file or the reference.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_t5gemma_fixtures import build_t5gemma_test_tokenizer, save_tokenizer  # noqa: E402

SAMPLE_RATE = 44100

# Each case: the SAME style, attention, conditioning batch, guidance and generation it covers.
CASES = {
    "small_pingpong_apg": dict(
        same="S", differential=False, depth=2, prompts=["warm lo-fi beat", "bright synth arp"],
        seconds=[0.3, 0.2], negative=["noise", "hum"], guidance=(4.0, 1.0),
        generation=dict(prompt="warm lo-fi beat", negative_prompt="noise", duration=0.3, steps=8,
                        sampler_type="pingpong", cfg_scale=3.0, apg_scale=1.0)),
    "medium_euler_cfg_inpaint": dict(
        same="L", differential=True, depth=1, prompts=["deep drone"], seconds=[0.4], negative=None,
        guidance=(3.0, 0.0),
        generation=dict(prompt="deep drone", negative_prompt="hiss", duration=0.4, steps=4,
                        sampler_type="euler", cfg_scale=2.5, apg_scale=0.0,
                        inpaint={"start": 0.1, "end": 0.25}, source_seconds=0.4)),
    "small_a2a_extend": dict(
        same="S", differential=True, depth=1, prompts=["rain ambience", "street noise"],
        seconds=[0.3, 0.3], negative=["music", "speech"], guidance=(1.5, 0.5),
        generation=dict(prompt="rain ambience", negative_prompt=None, duration=0.3, steps=4,
                        sampler_type="pingpong", cfg_scale=1.0, apg_scale=1.0, init_noise_level=0.7,
                        inpaint={"start": 0.2, "end": 0.3}, source_seconds=0.2)),
}


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter from a seeded generator: norm gains near 1, matrices ~ 1/sqrt(fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(module.named_parameters(), key=lambda item: item[0]):
            leaf = name.split(".")[-1]
            if leaf in ("gamma", "scaling_factor", "weight_g", "running_std", "alpha"):
                parameter.copy_(1.0 + 0.1 * torch.randn(parameter.shape, generator=generator))
            elif parameter.dim() >= 2:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
            else:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def same_config(style: str) -> dict:
    """A tiny SAME keeping the released structure: patch 256 x stride 16, chunk 32 (S, midpoint
    shift, conv mapping, sin block 0) or a [1, 1] sliding window (L, linear mapping, sin block)."""
    stage = dict(channels=16, c_mults=[2], strides=[16], latent_dim=16, transformer_depths=[1],
                 checkpointing=False, differential=True, dyt=True, dim_heads=16, variable_stride=True)
    if style == "S":
        stage.update(chunk_size=32, chunk_midpoint_shift=True)
        decoder_extra = dict(sinusoidal_blocks=[0], conv_mapping=True)
    else:
        stage.update(sliding_window=[1, 1], chunk_midpoint_shift=False)
        decoder_extra = dict(sinusoidal_blocks=[1], conv_mapping=False)
    return {
        "type": "same",
        "pretransform": {"type": "patched", "config": {"patch_size": 256, "channels": 2}},
        "encoder": {"type": "same", "config": dict(stage, in_channels=512, mask_noise=0.0)},
        "decoder": {"type": "same", "config": dict(stage, out_channels=512, mask_noise=0.01, **decoder_extra)},
        "bottleneck": {"type": "softnorm", "config": {"dim": 16, "noise_augment_dim": 0,
                                                    "noise_regularize": True, "auto_scale": True}},
        "latent_dim": 16, "downsampling_ratio": 4096, "io_channels": 2,
    }


def model_config(case: dict, t5gemma_path: str, embed_dim: int) -> dict:
    cond_dim = 32  # narrower than T5Gemma's 768: the prompt conditioner gets its proj_out
    return {
        "model_type": "diffusion_cond_inpaint", "sample_size": 1048576, "sample_rate": SAMPLE_RATE,
        "audio_channels": 2,
        "model": {
            "io_channels": 16,
            "pretransform": {"type": "autoencoder", "iterate_batch": False, "chunked": False,
                             "config": same_config(case["same"])},
            "conditioning": {"cond_dim": cond_dim, "configs": [
                {"id": "prompt", "type": "t5gemma",
                 "config": {"max_length": 16, "padding_mode": "learned", "model_path": t5gemma_path}},
                {"id": "seconds_total", "type": "number",
                 "config": {"min_val": 0, "max_val": 384, "fourier_features_type": "expo"}}]},
            "diffusion": {
                "type": "dit", "diffusion_objective": "rf_denoiser",
                "cross_attention_cond_ids": ["prompt", "seconds_total"], "global_cond_ids": ["seconds_total"],
                "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
                "mask_padding_attention": True, "use_effective_length_for_schedule": True,
                "sampling_distribution_shift_options": None,
                "config": {
                    "io_channels": 16, "patch_size": 1, "embed_dim": embed_dim, "depth": case["depth"],
                    "num_heads": embed_dim // 64, "cond_token_dim": cond_dim, "global_cond_dim": cond_dim,
                    "local_add_cond_dim": 17, "project_cond_tokens": True, "project_global_cond": True,
                    "transformer_type": "continuous_transformer", "global_cond_type": "adaLN",
                    "timestep_features_type": "expo", "timestep_features_dim": 64,
                    "attn_kwargs": {"qk_norm": "rms", "differential": case["differential"]},
                    "norm_type": "rms_norm", "norm_kwargs": {"force_fp32": True},
                    "ff_kwargs": {"mult": 1.0}, "num_memory_tokens": 4}}}}


def write_t5gemma(folder: Path, seed: int, **shape) -> None:
    """A random T5Gemma encoder folder; `shape` overrides the narrow encoder's config values."""
    from transformers import T5GemmaConfig, T5GemmaForConditionalGeneration
    vocab = build_t5gemma_test_tokenizer().get_vocab_size()
    part = dict(vocab_size=vocab, hidden_size=768, intermediate_size=8, num_hidden_layers=1,
                num_attention_heads=1, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                layer_types=["full_attention"], sliding_window=8, pad_token_id=0, eos_token_id=1,
                bos_token_id=2)
    part.update(shape)
    config = T5GemmaConfig(encoder=part, decoder=dict(part, num_hidden_layers=0, layer_types=[]),
                           vocab_size=vocab, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = T5GemmaForConditionalGeneration(config)
    randomize_(model, seed)
    # Stored in bfloat16 as the released t5gemma-b-b-ul2 is, and only the encoder (what is read).
    model.to(torch.bfloat16).save_pretrained(folder)
    weights = folder / "model.safetensors"
    encoder = {k: v for k, v in load_file(str(weights)).items() if k.startswith("model.encoder.")}
    save_file(encoder, str(weights), metadata={"format": "pt"})
    save_tokenizer(folder, "right")
    (folder / "generation_config.json").unlink(missing_ok=True)


def reference_model(config: dict):
    from stable_audio_3.factory import create_diffusion_cond_from_config
    from stable_audio_3.model import StableAudioModel
    model = create_diffusion_cond_from_config(config).eval().requires_grad_(False)
    model.use_lora, model.lora_names = False, []
    return model, StableAudioModel(model, config, "cpu", False)


def conditioning_tensors(model, conditioning: list[dict], length: int, local: torch.Tensor, negative=False):
    cond = model.conditioner(conditioning, "cpu")
    cond["inpaint_mask"] = [local[:, :1]]
    cond["inpaint_masked_input"] = [local[:, 1:]]
    return cond, model.get_conditioning_inputs(cond, negative=negative)


def deterministic_decode(autoencoder, latents: torch.Tensor) -> torch.Tensor:
    """Decode with the bottleneck and learned-token noise off, then switch them back on."""
    saved = [(m, m.mask_noise) for m in autoencoder.modules() if hasattr(m, "mask_noise")]
    autoencoder.bottleneck.noise_regularize = False
    for module, _ in saved:
        module.mask_noise = 0.0
    try:
        return autoencoder.decode_audio(latents) if hasattr(autoencoder, "decode_audio") else autoencoder.decode(latents)
    finally:
        autoencoder.bottleneck.noise_regularize = True
        for module, value in saved:
            module.mask_noise = value


def source_audio(seconds: float, seed: int) -> torch.Tensor:
    """[2, N] at 44.1 kHz: two detuned tones plus a little noise."""
    n = int(seconds * SAMPLE_RATE)
    time = torch.arange(n) / SAMPLE_RATE
    noise = 0.05 * torch.randn(2, n, generator=torch.Generator().manual_seed(seed))
    return torch.stack([0.4 * torch.sin(2 * math.pi * 220 * time), 0.3 * torch.sin(2 * math.pi * 331 * time)]) + noise


def generate_reference(wrapper, generation: dict, init: torch.Tensor | None, schedules: list) -> tuple:
    kwargs = dict(prompt=generation["prompt"], negative_prompt=generation["negative_prompt"],
                  duration=generation["duration"], steps=generation["steps"], cfg_scale=generation["cfg_scale"],
                  apg_scale=generation["apg_scale"], seed=generation["seed"],
                  sampler_type=generation["sampler_type"])
    if generation.get("init_noise_level") is not None:
        kwargs.update(init_audio=(SAMPLE_RATE, init), init_noise_level=generation["init_noise_level"])
    if generation.get("inpaint") is not None:
        kwargs.update(inpaint_audio=(SAMPLE_RATE, init), inpaint_mask_start_seconds=generation["inpaint"]["start"],
                      inpaint_mask_end_seconds=generation["inpaint"]["end"])
    latents = wrapper.generate(return_latents=True, **kwargs)
    schedules.clear()
    audio = wrapper.generate(**kwargs)
    return latents, audio


def write_case(out: Path, name: str, case: dict, seed: int, latents: int, embed_dim: int) -> None:
    from stable_audio_3.inference import sampling as reference_sampling
    torch.manual_seed(seed)
    text_folder = out / f"{name}.t5gemma"
    shutil.rmtree(text_folder, ignore_errors=True)
    write_t5gemma(text_folder, seed + 1)
    config = model_config(case, str(text_folder), embed_dim)
    model, wrapper = reference_model(config)
    randomize_(model, seed + 2)
    io: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed + 3)
    batch = len(case["prompts"])
    conditioning = [{"prompt": p, "seconds_total": s} for p, s in zip(case["prompts"], case["seconds"])]
    prompt_conditioner = model.conditioner.conditioners["prompt"]
    tokens = prompt_conditioner.tokenizer(case["prompts"], truncation=True, max_length=prompt_conditioner.max_length,
                                          padding="max_length", return_tensors="pt")
    io["cond.input_ids"] = tokens["input_ids"]
    mask = (torch.rand(batch, 1, latents, generator=generator) > 0.5).float()
    local = torch.cat([mask, torch.randn(batch, 16, latents, generator=generator) * mask], dim=1)
    cond, inputs = conditioning_tensors(model, conditioning, latents, local)
    io["cond.prompt_embeds"], io["cond.seconds_total"] = cond["prompt"][0], cond["seconds_total"][0]
    x = torch.randn(batch, 16, latents, generator=generator)
    t = torch.rand(batch, generator=generator) * 0.9 + 0.05
    padding = torch.arange(latents)[None, :] < torch.tensor([latents - 3 * i - 2 for i in range(batch)])[:, None]
    io.update({"dit.in.x": x, "dit.in.t": t, "dit.in.cross_attn_cond": inputs["cross_attn_cond"],
               "dit.in.global_cond": inputs["global_cond"], "dit.in.local_add_cond": inputs["local_add_cond"],
               "dit.in.padding_mask": padding.to(torch.uint8)})
    call = dict(cross_attn_cond=inputs["cross_attn_cond"], global_cond=inputs["global_cond"],
                local_add_cond=inputs["local_add_cond"])
    with torch.no_grad():
        io["dit.out.plain"] = model.model(x, t, **call)
        io["dit.out.padding_mask"] = model.model(x, t, padding_mask=padding, **call)
        negative = {}
        if case["negative"] is not None:
            negative_conditioning = [{"prompt": p, "seconds_total": s} for p, s in zip(case["negative"], case["seconds"])]
            _, negative = conditioning_tensors(model, negative_conditioning, latents, local, negative=True)
            negative = {k: v for k, v in negative.items() if k.startswith("negative_cross_attn")}
        cfg_scale, apg_scale = case["guidance"]
        io["dit.out.guided"] = model.model(x, t, cfg_scale=cfg_scale, apg_scale=apg_scale, **call, **negative)
        audio = 0.3 * torch.randn(1, 2, 2 * 4096, generator=generator)
        io["ae.in.audio"] = audio
        io["ae.out.latents"] = model.pretransform.encode(audio)
        io["ae.out.decode_nonoise"] = deterministic_decode(model.pretransform.model, io["ae.out.latents"])

    generation = dict(case["generation"], seed=seed + 4)
    source_seconds = generation.pop("source_seconds", None)
    generation.setdefault("init_noise_level", None)
    generation.setdefault("inpaint", None)
    init = None
    if generation["init_noise_level"] is not None or generation["inpaint"] is not None:
        init = source_audio(source_seconds or generation["duration"], seed + 5)
        io["gen.init_audio"] = init
    schedules: list[torch.Tensor] = []
    original = reference_sampling.build_schedule
    reference_sampling.build_schedule = lambda *a, **k: schedules.append(original(*a, **k)) or schedules[-1]
    try:
        io["gen.latents"], io["gen.audio"] = generate_reference(wrapper, generation, init, schedules)
    finally:
        reference_sampling.build_schedule = original
    io["sched"] = schedules[0]

    stored = copy.deepcopy(config)
    stored["model"]["conditioning"]["configs"][0]["config"]["model_path"] = f"{name}.t5gemma"
    meta = {"kind": "sa3", "model_config": stored, "text_encoder": f"{name}.t5gemma",
            "conditioning": conditioning,
            "negative_conditioning": None if case["negative"] is None else
            [{"prompt": p, "seconds_total": s} for p, s in zip(case["negative"], case["seconds"])],
            "guidance": {"cfg_scale": case["guidance"][0], "apg_scale": case["guidance"][1]},
            "generation": generation}
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"{name}.weights.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in io.items()}, str(out / f"{name}.io.safetensors"))
    size = sum(p.stat().st_size for p in out.glob(f"{name}*") if p.is_file())
    size += sum(p.stat().st_size for p in text_folder.rglob("*") if p.is_file())
    print(f"{name}: {size / 1024:.0f} KiB, gen.audio {tuple(io['gen.audio'].shape)}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(CASES))
    parser.add_argument("--latents", type=int, default=12, help="latent frames of the DiT call")
    parser.add_argument("--embed-dim", type=int, default=64, help="DiT width (a multiple of 64)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(args.only or CASES):
        write_case(args.out, name, CASES[name], args.seed * 1000 + index * 10, args.latents, args.embed_dim)


if __name__ == "__main__":
    main()

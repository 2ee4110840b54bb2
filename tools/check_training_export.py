"""Check that checkpoints our training writes load and generate in the reference tools (dev tool).

Diffusion (issue 5, must-show 4), run in the stable-audio-tools environment:
    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/check_training_export.py --out /tmp/training-export
For each case a subprocess in the project's environment (--python, default .venv/bin/python)
trains a tiny model (weights perturbed off their initialisation first, as for the parity
fixtures) with our trainer on generated tones for a few steps (EMA on), takes the
checkpoint the trainer wrote (model.safetensors + model_config.json), loads it with our
factory.load_model and generates with a fixed seed; then this process builds the config with
stable-audio-tools' create_model_from_config, loads the checkpoint with load_state_dict(strict=True),
generates with generate_diffusion_cond (same seed and sampler) and compares latents and audio.
Cases: SAO 1.0-shaped DiT (v, dpmpp-2m), SAO Small-shaped DiT (rf_denoiser, euler), the paper's
U-Net (adp_cfg_1d on the DAC VAE, v, dpmpp-2m), and LoRA fine-tuning of the first case's checkpoint,
merged back into a plain checkpoint. The prompt is a `number` conditioner (T5 cannot be built
offline in the reference), as in tools/make_parity_fixtures.py, whose tiny configs this reuses.

CLAP, run in the transformers environment:
    /tmp/tf-ref/bin/python tools/check_training_export.py --clap --out /tmp/training-export-clap
trains a tiny CLAP with our trainer, whose checkpoint folder is a Hugging Face CLAP folder
(ClapTask.export + export_files), and checks that transformers' ClapModel, AutoTokenizer and
ClapFeatureExtractor load it and give our token ids, features and embeddings.

Exit status 0 when every tensor is within tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent
RELATIVE_TOLERANCE = 1e-4   # per unit of max(1, max|reference|), as stable_audio_core.evaluation.parity
EMBEDDING_TOLERANCE = 1e-5  # float32 CLAP towers: summation order only (tests/test_clap.py measures 1.2e-6)

# name -> (shape for make_parity_fixtures.model_config, vae, latent frames, sampler, steps, cfg, lora)
CASES = {
    "sao1_dit_v": ("sao-1.0", "oobleck", 32, "dpmpp-2m", 8, 6.0, False),
    "saosmall_dit_rf": ("sao-small", "oobleck", 32, "euler", 8, 1.0, False),
    "paper_unet_v": ("paper-unet", "dac", 8, "dpmpp-2m", 8, 6.0, False),
    "sao1_dit_v_lora": ("sao-1.0", "oobleck", 32, "dpmpp-2m", 8, 6.0, True),
}
TRAIN_STEPS = 6
BATCH = 2


def case_config(name: str) -> dict:
    sys.path.insert(0, str(TOOLS))
    from make_parity_fixtures import model_config
    shape, vae, frames, *_ = CASES[name]
    embed, depth, heads = (16, 1, 2) if shape == "paper-unet" else (64, 2, 2)
    vae_channels = 2 if vae == "dac" else 8
    return model_config(shape, embed, depth, heads, 32, 16, vae_channels, frames, vae)


def conditioning(name: str) -> list[dict]:
    sys.path.insert(0, str(TOOLS))
    from make_parity_fixtures import conditioning_for
    return conditioning_for(CASES[name][0], BATCH)


def sampler_kwargs(name: str) -> dict:
    _, _, _, sampler, steps, cfg, _ = CASES[name]
    rf = CASES[name][0] == "sao-small"
    return {"steps": steps, "cfg_scale": cfg, "sampler": sampler,
            "sigma_min": None if rf else 0.3, "sigma_max": 1.0 if rf else 80.0}


# --- ours (project environment) -------------------------------------------------------------------

class Tones:
    """Stereo tones; the `number` prompt names the pitch; timing like conditioning_for's."""

    def __init__(self, sample_size: int, sample_rate: int, int_timing: bool):
        self.sample_size, self.sample_rate, self.int_timing = sample_size, sample_rate, int_timing

    def __len__(self) -> int:
        return 8

    def get(self, index: int, seed: int) -> dict:
        t = torch.arange(self.sample_size) / self.sample_rate
        phase = float(torch.rand((), generator=torch.Generator().manual_seed(seed))) * 6.28
        wave = 0.5 * torch.sin(2 * math.pi * 400.0 * (1 + index % 4) * t + phase)
        start, total = (3 * (index % 3), 20 + index) if self.int_timing else (1.5 * (index % 3), 20.0 + index)
        return {"audio": torch.stack([wave, -wave]), "padding_mask": torch.ones(self.sample_size, dtype=torch.bool),
                "metadata": {"prompt": 1.0 + 2.0 * (index % 4), "seconds_start": start, "seconds_total": total}}

    def collate(self, items, seeds):
        from stable_audio_core.training.data import collate_items
        return collate_items(items, seeds)


def perturbed(task):
    """The task with every weight moved off its (often zero) initialisation, as the parity fixtures
    do, so a few training steps leave no path (attention outputs, post-convs) near zero."""
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for parameter in task.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return task


def run_ours(name: str, out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from safetensors.torch import save_file

    from stable_audio_core.checkpoint import RUN_CONFIG_FILE, RUN_MODEL_FILE
    from stable_audio_core.factory import load_model
    from stable_audio_core.pipeline import generate
    from stable_audio_core.training.diffusion_task import build_diffusion_task
    from stable_audio_core.training.trainer import TrainerConfig, train

    torch.set_num_threads(1)
    config = case_config(name)
    data = Tones(config["sample_size"], config["sample_rate"], CASES[name][0] == "paper-unet")
    trainer = dict(max_steps=TRAIN_STEPS, batch_size=4, learning_rate=1e-3, ema_decay=0.9,
                   checkpoint_every=TRAIN_STEPS, log_every=1, device="cpu")
    options = {"seed": 1}
    if CASES[name][6]:  # LoRA: fine-tune the full model's checkpoint, then merge
        base = train(perturbed(build_diffusion_task(config, {"seed": 1})), data,
                     TrainerConfig(out_dir=out / "base", **trainer), progress=False)
        options = {"seed": 2, "checkpoint": str(base.checkpoint / RUN_MODEL_FILE),
                   "lora": {"rank": 4, "alpha": 8}}
    task = build_diffusion_task(config, options)
    if not CASES[name][6]:
        perturbed(task)
    summary = train(task, data, TrainerConfig(out_dir=out / "run", **trainer), progress=False)
    checkpoint = summary.checkpoint
    model = load_model(checkpoint / RUN_CONFIG_FILE, checkpoint / RUN_MODEL_FILE)
    kwargs = sampler_kwargs(name)
    result = generate(model, conditioning=conditioning(name), seed=7, batch_size=BATCH, decode=True, trim=False,
                      **kwargs)
    save_file({"latents": result.latents.contiguous(), "audio": result.audio.contiguous()},
              str(out / "ours.safetensors"))
    (out / "checkpoint.txt").write_text(str(checkpoint))
    print(f"{name}: trained {summary.step} steps, losses {summary.metrics}")


# --- the reference (stable-audio-tools environment) ---------------------------------------------

def report(name: str, mine: torch.Tensor, reference: torch.Tensor) -> bool:
    error = float((mine.float() - reference.float()).abs().max())
    scale = float(reference.abs().max())
    limit = RELATIVE_TOLERANCE * max(1.0, scale)
    ok = error <= limit and mine.shape == reference.shape
    print(f"  {'ok  ' if ok else 'FAIL'} {name:<10} max|err| {error:.3e}  limit {limit:.1e}  max|ref| {scale:.3e}")
    return ok


def check_reference(name: str, out: Path) -> bool:
    from safetensors.torch import load_file
    from stable_audio_tools.inference.generation import generate_diffusion_cond
    from stable_audio_tools.models.factory import create_model_from_config

    checkpoint = Path((out / "checkpoint.txt").read_text())
    config = json.loads((checkpoint / "model_config.json").read_text())
    model = create_model_from_config(config).eval()
    state = load_file(str(checkpoint / "model.safetensors"))
    model.load_state_dict(state, strict=True)   # raises on any missing or unexpected key
    print(f"{name}: stable-audio-tools loaded {len(state)} tensors strictly from {checkpoint}")
    kwargs = sampler_kwargs(name)
    reference_kwargs = {"sampler_type": kwargs["sampler"], "sigma_max": kwargs["sigma_max"]}
    if kwargs["sigma_min"] is not None:
        reference_kwargs["sigma_min"] = kwargs["sigma_min"]
    with torch.no_grad():
        latents = generate_diffusion_cond(model, steps=kwargs["steps"], cfg_scale=kwargs["cfg_scale"],
                                          conditioning=conditioning(name), batch_size=BATCH,
                                          sample_size=config["sample_size"], seed=7, device="cpu",
                                          return_latents=True, **reference_kwargs)
        audio = model.pretransform.decode(latents)
    ours = load_file(str(out / "ours.safetensors"))
    return report("latents", ours["latents"], latents) & report("audio", ours["audio"], audio)


# --- CLAP (transformers environment) ----------------------------------------------------------------

CLAP_RATE = 16_000
CLAP_CAPTIONS = ["low hum", "high whistle", "buzzing noise", "mid tone"]
CLAP_CONFIG = {
    "model_type": "clap", "projection_dim": 16,
    "text_config": {"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "intermediate_size": 64, "max_position_embeddings": 80},
    "audio_config": {"depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 2, 2], "patch_embeds_hidden_size": 8,
                     "spec_size": 64, "window_size": 2, "mlp_ratio": 2.0, "enable_fusion": False},
}


class Sounds:
    """Half-second tones (or noise) named by CLAP_CAPTIONS, at CLAP_RATE."""

    def __len__(self) -> int:
        return 8

    def get(self, index: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(CLAP_RATE // 2) / CLAP_RATE
        pitch = [110.0, 2200.0, 0.0, 660.0][index % 4]
        wave = (0.3 * torch.randn(len(t), generator=g) if pitch == 0.0
                else 0.5 * torch.sin(2 * math.pi * pitch * t + float(torch.rand((), generator=g)) * 6))
        return {"audio": torch.stack([wave, wave]), "padding_mask": torch.ones(len(t), dtype=torch.bool),
                "metadata": {"prompt": CLAP_CAPTIONS[index % 4], "seconds_start": 0, "seconds_total": 1}}

    def collate(self, items, seeds):
        from stable_audio_core.training.data import collate_items
        return collate_items(items, seeds)

    def prompts(self, seed: int = 0) -> list[str]:
        return [CLAP_CAPTIONS[i % 4] for i in range(len(self))]


def run_ours_clap(out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from safetensors.torch import save_file

    from stable_audio_core.audio.io import resample
    from stable_audio_core.evaluation.clap_score import ClapScorer, clap_audio_features
    from stable_audio_core.training.clap_task import build_clap_task
    from stable_audio_core.training.trainer import TrainerConfig, train

    torch.set_num_threads(1)
    data = Sounds()
    task = build_clap_task(CLAP_CONFIG, {"sample_rate": CLAP_RATE, "dataset": data,
                                         "preprocessor": {"max_length_s": 0.5}})
    summary = train(task, data, TrainerConfig(out_dir=out / "run", max_steps=20, batch_size=4, learning_rate=1e-3,
                                              ema_decay=None, checkpoint_every=20, log_every=5, device="cpu"),
                    progress=False)
    folder = summary.checkpoint   # the trainer's checkpoint folder is a Hugging Face CLAP folder
    (out / "checkpoint.txt").write_text(str(folder))
    scorer = ClapScorer.from_folder(folder)
    batch = data.collate([data.get(i, 1000 + i) for i in range(4)], list(range(1000, 1004)))
    ids, mask = scorer.tokenizer(CLAP_CAPTIONS, 77)
    clips_48k = torch.stack([resample(clip.mean(0), CLAP_RATE, 48_000) for clip in batch["audio"]])
    features = clap_audio_features(scorer.extractor, clips_48k, 48_000)
    with torch.no_grad():
        text = scorer.model.text_embedding(ids, mask)
        audio = scorer.model.audio_embedding(features.input_features)
    save_file({"ids": ids, "mask": mask.long(), "clips_48k": clips_48k.contiguous(),
               "features": features.input_features.contiguous(), "text": text, "audio": audio},
              str(out / "ours.safetensors"))
    print(f"clap: trained {summary.step} steps, losses {summary.metrics}; folder {folder}")


def check_transformers_clap(out: Path) -> bool:
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    folder = Path((out / "checkpoint.txt").read_text())
    model, info = ClapModel.from_pretrained(folder, output_loading_info=True)
    model.eval()
    learned = [k for k in info["missing_keys"] if not k.endswith("relative_position_index")]
    print(f"clap: transformers loaded {folder}; missing (besides derived relative_position_index): "
          f"{learned}; unexpected: {info['unexpected_keys']}")
    ours = load_file(str(out / "ours.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer(CLAP_CAPTIONS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    same_ids = torch.equal(encoded["input_ids"], ours["ids"]) and torch.equal(encoded["attention_mask"], ours["mask"])
    print(f"  {'ok  ' if same_ids else 'FAIL'} token ids and mask equal transformers' tokenizer")
    extractor = ClapFeatureExtractor.from_pretrained(folder)
    features = extractor([c.numpy() for c in ours["clips_48k"]], sampling_rate=48_000, return_tensors="pt")
    feature_error = float((features["input_features"] - ours["features"]).abs().max())
    # float64 spectrogram on both sides, returned in float32: dB values to ~1e-4 relative.
    feature_ok = feature_error <= 1e-3
    print(f"  {'ok  ' if feature_ok else 'FAIL'} features  max|err| {feature_error:.3e} (dB)")
    with torch.no_grad():
        text_out = model.text_model(input_ids=ours["ids"], attention_mask=ours["mask"])
        text = F.normalize(model.text_projection(text_out.pooler_output), dim=-1)
        audio_out = model.audio_model(input_features=ours["features"])
        audio = F.normalize(model.audio_projection(audio_out.pooler_output), dim=-1)
    ok = not learned and not info["unexpected_keys"] and same_ids and feature_ok
    for name, mine, theirs in (("text", ours["text"], text), ("audio", ours["audio"], audio)):
        error = float((mine - theirs).abs().max())
        good = error <= EMBEDDING_TOLERANCE
        ok &= good
        print(f"  {'ok  ' if good else 'FAIL'} {name:<9} embeddings max|err| {error:.3e}  limit {EMBEDDING_TOLERANCE:.0e}")
    return ok


# --- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clap", action="store_true", help="check the CLAP export against transformers")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                    help="the project's Python, which trains and generates with stable_audio_core")
    ap.add_argument("--stage", choices=["ours", "ours-clap"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.stage == "ours":
        run_ours(args.cases[0], args.out)
        return 0
    if args.stage == "ours-clap":
        run_ours_clap(args.out)
        return 0

    names = ["clap"] if args.clap else args.cases
    ok = True
    for name in names:
        out = args.out / name
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out} is not empty: pass a fresh --out folder")
        out.mkdir(parents=True, exist_ok=True)
        stage = ["--stage", "ours-clap"] if args.clap else ["--stage", "ours", "--cases", name]
        subprocess.run([args.python, __file__, "--out", str(out), *stage], check=True, cwd=ROOT)
        ok &= check_transformers_clap(out) if args.clap else check_reference(name, out)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
